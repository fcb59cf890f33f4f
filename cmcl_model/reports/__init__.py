"""Reports: the evaluation report of a run and the fine-tuning results document.

Modules
-------
evaluation  The evaluation report of a run: ``reports/<run>/report.html``, one self-contained file.
finetune    The ``finetune`` results document (``schemas/reports/finetune.json``), its terminal table

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['evaluation', 'finetune'],
    submod_attrs={
        'evaluation': ['metrics_schema', 'validate_json', 'crop_rgb', 'crop_grid_png', 'phenotype_classes', 'write_report'],
        'finetune': ['STANDARDIZATION', 'AS_GIVEN', 'finetune_schema', 'finetune_result', 'format_table', 'finetune_html', 'report_finetune_results', 'finetune_section', 'update_report', 'check_protocol_init', 'run_finetune'],
    },
)
