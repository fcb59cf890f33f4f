"""Well profiles (pycytominer), negative controls, activity (copairs), and imported public profiles.

Modules
-------
choices   The profile stage's choice lists and defaults, declared once.
controls  Negative controls: which wells a plate is normalized and scored against.
imports   Import the field's public profile tables: find the columns, the features and each row's compound.
index     Which files ``cmcl import-profiles`` has imported into a store (``tables/profiles/imports.json``).
io        Read the files of ``cmcl import-profiles``: profile tables, compound, column and name maps.
wells     Well profiles the field's way (pycytominer) and their phenotypic activity (copairs mAP).

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['choices', 'controls', 'imports', 'index', 'io', 'wells'],
    submod_attrs={
        'choices': ['DEFAULT_NEGCON', 'AggregateOperation', 'AGGREGATE_OPERATIONS'],
        'controls': ['NegconError', 'parse_negcon', 'negcon_mask', 'mark_negcon', 'plates_without_negcon', 'normalized_to', 'plates_normalized_to_all', 'store_negcon', 'record_negcon', 'negcon_key'],
        'imports': ['ROLES', 'ALIASES', 'IMPORTED_METADATA', 'DMSO_INCHIKEY', 'ProfileImportError', 'ImportedProfiles', 'resolve_columns', 'profile_features', 'rename_numbered', 'join_compound_map', 'import_profiles', 'as_well_profiles', 'compound_records'],
        'index': ['load_index', 'save_index', 'import_id', 'find_import', 'superseded'],
        'io': ['read_profile_table', 'read_compound_map', 'read_column_map', 'read_name_table', 'file_digest'],
        'wells': ['PROFILE_METADATA', 'SELECT_OPERATIONS', 'aggregate_wells', 'annotate_wells', 'normalize_plate', 'select_features', 'consensus_profiles', 'phenotypic_activity', 'moa_consistency'],
    },
)
