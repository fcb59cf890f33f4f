"""Nuclei and cell segmentation: one dispatch point, the classical default, the optional cellpose backend, and scores.

Modules
-------
cellpose   Optional cellpose backend (cellpose 3.1.x, ``pip install 'cmcl[cellpose]'``), local weights only.
classical  Classical nuclei and cell segmentation (CellProfiler-style, no GPU, no weights).
dispatch   The one dispatch point: ``segment_field`` runs the method named by ``segmenter``.
scoring    Scores of a segmentation against ground truth: object matching at an IoU threshold.

To segment cells differently, add a module here beside ``classical`` and ``cellpose``, its name
to ``Segmenter`` in :mod:`pipeline.images.choices`, and one entry to
``dispatch.SEGMENTATION_METHODS`` (steps in :mod:`pipeline.images.segmentation.dispatch`).

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['cellpose', 'classical', 'dispatch', 'scoring'],
    submod_attrs={
        'cellpose': ['load_cellpose_model', 'segment_nuclei_cellpose', 'segment_cells_cellpose'],
        'classical': ['segment_nuclei', 'segment_cells'],
        'dispatch': ['SEGMENTATION_METHODS', 'segment_field'],
        'scoring': ['iou_matrix', 'match_objects', 'f1_at_iou', 'labels_from_outlines'],
    },
)
