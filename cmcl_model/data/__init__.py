"""Training data: (molecular graph, single-cell crops) and (molecular graph, well profiles) pairs.

Modules
-------
pairs     Training data from a cmcl store: (molecular graph, K single-cell crops) pairs.
profiles  Profile-mode training data: (molecular graph, K CellProfiler well profiles) pairs.

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['pairs', 'profiles'],
    submod_attrs={
        'pairs': ['graphs_from_arrow', 'scaffold_split', 'load_or_create_split', 'extend_split', 'treatment_crops', 'REQUIRED_CHANNELS', 'require_channels', 'current_well_compounds', 'ChunkedCropReader', 'PlateNorm', 'compute_normalization', 'PairDataset', 'PairBatch', 'collate_pairs', 'UniqueCompoundBatchSampler'],
        'profiles': ['MIN_REFERENCE_WELLS', 'CLIP', 'ProfileSource', 'Negatives', 'ProfileDataError', 'ProfileNorm', 'ProfileTable', 'read_profile_tables', 'store_profile_table', 'parent_keys', 'standardize_batches', 'ProfileDataset', 'StratifiedBatchSampler'],
    },
)
