"""Compounds: reading files, standardization to parents, OGB molecular graphs, shipped libraries.

Modules
-------
batch         Worker processes for the chemistry stage: one pool recipe and one way to cut work into parts.
choices       The chemistry stage's choice lists, declared once.
data          The compound library files shipped with cmcl (CSV; source and licence in README.md).
fingerprints  Molecular fingerprints as model inputs: what the Morgan baselines of every evaluation use.
graphs        OGB-compatible molecular graphs, their Parquet table, and fingerprints for baselines.
io            Read compound files as streams of input-record chunks.
library       The compound libraries shipped with cmcl (``pipeline/chem/data``).
parents       Parents: standardized inputs merged into parent compounds, and the parent each plate-map well holds.
rdkit_log     RDKit's log: silence it while a block runs and turn what it reported into a reason.
rules         Standardization rules: the steps that turn a parsed input into its normalized, neutral form.
salts         Salts and solvents: the counter-ion and solvent dictionary and the ChEMBL parent rules.
scaffolds     Bemis-Murcko scaffolds: the one function every scaffold in cmcl comes from.
standardize   Compound standardization: input records -> standardized parent structures.

Where to start: "add a standardization rule" is :mod:`~pipeline.chem.rules` (``RULES``), "add a
counter-ion or solvent" is :mod:`~pipeline.chem.salts`, "read another file format" is
:mod:`~pipeline.chem.io`.

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['batch', 'choices', 'data', 'fingerprints', 'graphs', 'io', 'library', 'parents', 'rdkit_log', 'rules', 'salts', 'scaffolds', 'standardize'],
    submod_attrs={
        'choices': ['FragmentMode', 'FRAGMENT_MODES', 'ID_COLUMNS'],
        'fingerprints': ['morgan_features'],
        'graphs': ['GraphError', 'ATOM_FEATURE_DIMS', 'BOND_FEATURE_DIMS', 'ATOM_VOCABULARY', 'BOND_VOCABULARY', 'smiles_to_graph', 'graphs_table', 'graphs_to_data', 'morgan_fingerprints', 'HU2020_ATOM_VOCABULARY', 'HU2020_BOND_VOCABULARY', 'HU2020_ATOM_FEATURE_DIMS', 'HU2020_BOND_FEATURE_DIMS', 'HU2020_SELF_LOOP_BOND', 'smiles_to_graph_hu2020'],
        'io': ['READER_COLUMNS', 'SUFFIXES', 'find_id_column', 'read_compounds', 'check_compound_file'],
        'library': ['LIBRARY_COLUMNS', 'load_compound_library'],
        'parents': ['CompoundsOutOfDate', 'PLATEMAP_SOURCE', 'platemap_records', 'merge_parents', 'well_compounds', 'wells_without_compounds'],
        'rdkit_log': ['quiet_rdkit'],
        'rules': ['StandardizationError', 'RULES'],
        'scaffolds': ['ScaffoldError', 'scaffold'],
        'standardize': ['StandardizedCompound', 'RECORD_COLUMNS', 'standardize_mol', 'standardize_smiles', 'standardize_table', 'standardize_stream'],
    },
)
