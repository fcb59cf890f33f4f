"""Ingest one plate folder into a store, and the worker pools that do it.

Modules
-------
pool           Process pools whose workers never outlive the process that started them.
run            Ingest one plate folder into a store: validate, write OME-Zarr, correct illumination,
warm           Imported by the fork server of the ingestion worker pools (:func:`pipeline.ingest.pool.pool_context`).
warm_features  Imported by the ingestion workers' fork server when a plate is ingested with CellProfiler

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['pool', 'run', 'warm', 'warm_features'],
    submod_attrs={
        'pool': ['exit_with_parent', 'pool_context', 'process_pool', 'start_pool_server'],
        'run': ['IngestSettings', 'start_workers', 'PlateResult', 'plan_plate', 'preflight', 'write_images', 'compute_illumination', 'default_processes', 'segment_and_tile', 'is_current', 'PlateConflictError', 'check_plate_source', 'folder_platemap', 'publish', 'skipped_result', 'plate_summary', 'nothing_stored', 'ingest_plate'],
    },
)
