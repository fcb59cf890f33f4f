"""Nuclei and cell segmentation: the classical default, the optional cellpose backend, and scores.

Modules
-------
cellpose   Optional cellpose backend (cellpose 3.1.x, ``pip install 'cmcl[cellpose]'``), local weights only.
classical  Classical nuclei and cell segmentation (CellProfiler-style, no GPU, no weights).
scoring    Scores of a segmentation against ground truth: object matching at an IoU threshold.

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['cellpose', 'classical', 'scoring'],
    submod_attrs={
        'cellpose': ['load_cellpose_model', 'segment_nuclei_cellpose', 'segment_cells_cellpose'],
        'classical': ['SEGMENTERS', 'segment_nuclei', 'segment_cells', 'segment_field'],
        'scoring': ['iou_matrix', 'match_objects', 'f1_at_iou', 'labels_from_outlines'],
    },
)
