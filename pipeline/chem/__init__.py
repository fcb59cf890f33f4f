"""Compounds: reading files, standardization to parents, OGB molecular graphs, shipped libraries.

Modules
-------
data         
graphs       OGB-compatible molecular graphs, their Parquet table, and fingerprints for baselines.
io           Read compound files as streams of input-record chunks.
library      The compound libraries shipped with cmcl (``pipeline/data``).
standardize  Compound standardization: input records -> standardized parent structures.

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['data', 'graphs', 'io', 'library', 'standardize'],
    submod_attrs={
        'graphs': ['GraphError', 'ATOM_FEATURE_DIMS', 'BOND_FEATURE_DIMS', 'ATOM_VOCABULARY', 'BOND_VOCABULARY', 'smiles_to_graph', 'graphs_table', 'graphs_to_data', 'morgan_fingerprints', 'HU2020_ATOM_VOCABULARY', 'HU2020_BOND_VOCABULARY', 'HU2020_ATOM_FEATURE_DIMS', 'HU2020_BOND_FEATURE_DIMS', 'HU2020_SELF_LOOP_BOND', 'smiles_to_graph_hu2020'],
        'io': ['READER_COLUMNS', 'SUFFIXES', 'ID_COLUMNS', 'find_id_column', 'read_compounds', 'check_compound_file'],
        'library': ['LIBRARY_COLUMNS', 'load_compound_library'],
        'standardize': ['StandardizationError', 'StandardizedCompound', 'FragmentMode', 'RECORD_COLUMNS', 'quiet_rdkit', 'standardize_mol', 'standardize_smiles', 'standardize_table', 'standardize_stream', 'merge_parents', 'well_compounds', 'wells_without_compounds', 'CompoundsOutOfDate'],
    },
)
