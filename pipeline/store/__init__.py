"""The store: paths, schema-checked tables, ledger, OME-Zarr, crop arrays, verification, provenance, atomic writes.

Modules
-------
atomic      Atomic file writes: a temporary file in the target's folder, then one rename.
crops       Crop and tile arrays: their codec (declared once), writer and fast reader.
ledger      The store's ingestion ledger: which plate was ingested from what, and whether it completed.
omezarr     Write and read OME-Zarr v0.5 HCS plates (zarr v3).
paths       Paths inside a cmcl store, as declared in ``schemas/store.json``.
provenance  Fingerprints of the code that produced a result, for cache keys ("inputs + task source").
schema      Load the declarations in ``schemas/`` and enforce them on tables.
verify      Check a whole store against ``schemas/`` and against itself; optionally clear half-written leftovers.

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['atomic', 'crops', 'ledger', 'omezarr', 'paths', 'provenance', 'schema', 'verify'],
    submod_attrs={
        'atomic': ['atomic_path', 'write_text_atomic'],
        'crops': ['CROPS_CHUNK', 'CROPS_SHARD', 'CROP_CODEC', 'CropCodecError', 'CropArrayWriter', 'CropArrayReader'],
        'ledger': ['read_ledger', 'ledger_entry', 'update_ledger', 'file_lock', 'LockTimeout'],
        'omezarr': ['CHANNEL_COLORS', 'PlateWriter', 'field_path', 'preload_metadata_writer', 'read_field', 'read_labels', 'open_plate'],
        'paths': ['Store', 'default_store_path', 'CHANNELS'],
        'provenance': ['code_fingerprint', 'module_closure', 'normalized_source'],
        'schema': ['SchemaError', 'table_schema', 'array_schema', 'store_layout', 'table_names', 'arrow_schema', 'validate_table', 'validate_array', 'conform', 'write_table', 'read_table'],
        'verify': ['Problem', 'verify_store', 'format_problems', 'deep_check'],
    },
)
