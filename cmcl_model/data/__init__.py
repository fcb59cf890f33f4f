"""Training data: (molecular graph, single-cell crops) and (molecular graph, well profiles) pairs.

Modules
-------
choices   The choice lists of the training data, declared once (torch-free).
split     The scaffold split of a store's compounds: created once, extended, never reshuffled.
crops     Reading and normalising crops for training: a chunk-cached crop reader, per-plate statistics.
pairs     Training data from a cmcl store: (molecular graph, K single-cell crops) pairs.
profiles  Profile-mode training data: (molecular graph, K CellProfiler well profiles) pairs.

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['choices', 'crops', 'pairs', 'profiles', 'split'],
    submod_attrs={
        'choices': ['ImageSource', 'IMAGE_SOURCES', 'ProfileSource', 'PROFILE_SOURCES', 'Negatives', 'NEGATIVES'],
        'crops': ['ChunkedCropReader', 'PlateNorm', 'compute_normalization'],
        'pairs': ['graphs_from_arrow', 'treatment_crops', 'require_channels', 'current_well_compounds', 'PairDataset',
                  'PairBatch', 'collate_pairs', 'UniqueCompoundBatchSampler'],
        'profiles': ['ProfileDataError', 'ProfileDataset', 'ProfileNorm'],
        'split': ['scaffold_split', 'load_or_create_split'],
    },
)
