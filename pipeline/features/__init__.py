"""CellProfiler features per cell: cp_measure's measurements and cmcl's all-objects-at-once kernels.

Modules
-------
choices      The feature sets measure_objects accepts, declared once (light: read by the CLI).
correlation  Per-object Pearson correlation and slope between two channels, every object at once.
groups       Object pixels grouped by label, the labels present and bounding boxes (shared by the kernels).
intensity    CellProfiler's MeasureObjectIntensity (no edge features) for every object at once.
measure      CellProfiler features per cell, measured with cp_measure (the stage: plan, names, table).
ordering     Each object's pixel values in order, for the quantiles of intensity.
sizeshape    CellProfiler 4's MeasureObjectSizeShape in 2-D without Zernike/Feret, every object at once.
texture      Haralick texture (MeasureTexture, 256 grey levels) of every object at once.

The kernels (correlation, intensity, sizeshape, texture) return cp_measure's own keys and values
(tested on CellProfiler's objects of a real field); ``measure`` decides which run on which
compartment and names the columns as CellProfiler does.

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['choices', 'correlation', 'groups', 'intensity', 'measure', 'ordering', 'sizeshape', 'texture'],
    submod_attrs={
        'choices': ['FeatureSet', 'FEATURE_SETS'],
        'correlation': ['pearson'],
        'intensity': ['intensity'],
        'measure': ['COMPARTMENTS', 'DEFAULT_PAIRS', 'FEATURE_PATTERN', 'measure_objects', 'feature_columns',
                    'labels_from_outlines'],
        'sizeshape': ['sizeshape'],
        'texture': ['texture'],
    },
)
