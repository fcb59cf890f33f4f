"""Reports: the evaluation report of a run and the fine-tuning results document.

Modules
-------
evaluation  The evaluation report of a run: ``reports/<run>/report.html``, one self-contained file.
figures     The pictures of the reports, as PNG bytes: crop composites and grids, curves, maps, QC heatmaps.
finetune    The ``finetune`` results document (``schemas/reports/finetune.json``), its terminal table and report section.
sections    The HTML sections of a run's evaluation report, one function each.
validation  What the reports share: their declarations (``schemas/reports/*.json``) and the validator.

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['evaluation', 'figures', 'finetune', 'sections', 'validation'],
    submod_attrs={
        'evaluation': ['write_report'],
        'figures': ['crop_rgb', 'crop_grid_png', 'phenotype_classes'],
        'finetune': ['finetune_schema', 'finetune_result', 'format_table', 'update_report', 'check_protocol_init', 'run_finetune'],
        'validation': ['report_schema', 'metrics_schema', 'validate_json', 'validate_metrics'],
    },
)
