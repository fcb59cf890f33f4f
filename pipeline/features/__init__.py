"""CellProfiler features per cell: cp_measure's measurements and cmcl's all-objects-at-once kernels.

Modules
-------
fastmeasure  CellProfiler's per-object size/shape, intensity and Pearson measurements, all objects at once.
measure      CellProfiler features per cell, measured with cp_measure.

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['fastmeasure', 'measure'],
    submod_attrs={
        'fastmeasure': ['sizeshape', 'intensity', 'sort_keys', 'sorted_values', 'union_parts', 'pearson', 'texture', 'gray_levels', 'neighbours', 'segments', 'bounding_boxes', 'present_labels'],
        'measure': ['FEATURE_SETS', 'COMPARTMENTS', 'DEFAULT_PAIRS', 'FEATURE_PATTERN', 'measure_objects', 'feature_columns', 'labels_from_outlines'],
    },
)
