"""Ingest plate folders into a store: one module per step of :func:`~pipeline.ingest.run.ingest_plate`.

Modules
-------
settings       What decides what ingestion writes: ``IngestSettings``, each field checked once.
plan           Before any pixel is written: discover, fingerprint and check a plate (the preflight, once per plate).
images         Pass 1: read and check every field, quarantine bad ones, write good ones to the staging OME-Zarr.
illumination   The plate's illumination functions from streaming statistics, and their QC.
fields         Pass 2, per field: correct, segment, write labels, crops, tiles and features; the cells and fields tables.
publish        Move a staged plate into the store, write its tables, mark the ledger; one-line summaries.
run            ``ingest_plate``: the one control flow of ingestion, under the plate's lock.
repair         Re-derive a plate's damaged crops, labels and illumination functions from its images.
batches        How a plate's fields are spread over worker processes: fixed batches, results in order.
pool           Process pools whose workers never outlive the process that started them.
warm           Imported by the fork server of the ingestion worker pools (:func:`pipeline.ingest.pool.pool_context`).

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['batches', 'fields', 'illumination', 'images', 'plan', 'pool', 'publish', 'repair', 'run', 'settings',
                'warm'],
    submod_attrs={
        'settings': ['IngestSettings'],
        'plan': ['PlatePlan', 'preflight', 'plan_plate', 'check_plate_source', 'PlateConflictError', 'is_current'],
        'images': ['write_images'],
        'illumination': ['compute_illumination'],
        'fields': ['segment_and_tile'],
        'publish': ['PlateResult', 'publish', 'skipped_result', 'plate_summary', 'nothing_stored'],
        'run': ['ingest_plate', 'start_workers'],
        'repair': ['repair_plate'],
    },
)
