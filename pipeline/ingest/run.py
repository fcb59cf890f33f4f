"""Ingest one plate folder into a store: validate, write OME-Zarr, correct illumination,
segment, tile.

:func:`ingest_plate` is the one control flow of ingestion; each step is a module of its own and a
separate function, so an orchestrator can run them as separate tasks:

0. :func:`pipeline.ingest.plan.preflight` — every check that can fail before a pixel is
   written; its :class:`~pipeline.ingest.plan.PlatePlan` is passed to every later step (a caller
   that ran it already passes ``plan=``: it runs once per plate);
1. :func:`pipeline.ingest.images.write_images` — read and validate every field, quarantine bad
   ones, write good ones losslessly into a staging OME-Zarr plate (resumable field by field);
2. :func:`pipeline.ingest.illumination.compute_illumination` — per-channel illumination
   functions from all written fields (streaming statistics, bounded memory), stored as a Zarr
   array plus QC PNGs;
3. :func:`pipeline.ingest.fields.segment_and_tile` — per field: correct, segment nuclei and
   cells, write labels, append single-cell crops, and collect the cell and field tables;
4. :func:`pipeline.ingest.publish.publish` — move the staged plate into place, write its tables,
   mark the ledger.

Plates whose fingerprint the ledger already holds as complete are skipped. A plate is only ever
visible as complete once everything is in place.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from pipeline.ingest.batches import Progress, default_processes, executor
from pipeline.ingest.fields import segment_and_tile, warm_kernels
from pipeline.ingest.illumination import compute_illumination, illumination_qc
from pipeline.ingest.images import write_images
from pipeline.ingest.plan import PlatePlan, check_plate_source, is_current, preflight
from pipeline.ingest.pool import INGEST_PRELOAD, start_pool_server
from pipeline.ingest.publish import PlateResult, publish, skipped_result
from pipeline.ingest.settings import IngestSettings
from pipeline.store.ledger import file_lock
from pipeline.store.paths import Store

__all__ = ["ingest_plate", "start_workers", "StageRunner"]

#: ``run_stage(name, fn, *args, **kwargs)`` runs one stage of :func:`ingest_plate` (an orchestrator
#: wraps each in a task); it must return ``fn(*args, **kwargs)``.
StageRunner = Callable[..., Any]


def _call(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def start_workers(settings: IngestSettings | None = None) -> None:
    """Start the workers' fork server now, preloading :data:`pipeline.ingest.pool.INGEST_PRELOAD`
    (:func:`pipeline.ingest.pool.start_pool_server`; no-op once it runs): a caller with its own start-up
    to do overlaps it with the server's imports. ``settings`` is accepted for scripts written when
    the preload depended on the feature set; it no longer does."""
    start_pool_server(INGEST_PRELOAD)


def ingest_plate(
    plate_dir: str | Path,
    store: Store,
    settings: IngestSettings = IngestSettings(),
    *,
    force: bool = False,
    lock_timeout: float | None = None,
    processes: int | None = None,
    progress: Progress | None = None,
    replace: bool = False,
    plate_id: str | None = None,
    run_stage: StageRunner = _call,
    plan: PlatePlan | None = None,
) -> PlateResult:
    """Ingest one plate folder end to end (all four stages), incrementally.

    This is the one control flow of ingestion: :func:`~pipeline.ingest.plan.preflight` (no
    pixel written), then, under the plate's lock, :func:`~pipeline.ingest.plan.check_plate_source`,
    :func:`~pipeline.ingest.images.write_images`,
    :func:`~pipeline.ingest.illumination.compute_illumination` (skipped when no field is good),
    :func:`~pipeline.ingest.fields.segment_and_tile` and :func:`~pipeline.ingest.publish.publish`.
    Unchanged plates (same fingerprint, complete in the ledger) are skipped unless ``force``
    (:func:`~pipeline.ingest.publish.skipped_result`). A folder whose plate ID the store holds
    from another folder is refused unless ``replace``; ``plate_id`` ingests it under another ID.
    A per-plate lock makes a concurrent ingest of the same plate wait (or fail after
    ``lock_timeout`` seconds) and then find the plate already done. A plate whose every image
    is refused completes with 0 fields and its quarantine table.

    ``plan``: the plate's preflight, when the caller ran it already (with the same
    ``plate_dir``, ``store``, ``settings`` and ``plate_id``): it is not run again, so every folder
    is listed and every plate map read once.

    ``run_stage(name, fn, *args, **kwargs)`` runs each stage (names: ``preflight``,
    ``write-images``, ``illumination``, ``segment-and-tile``, ``publish``); an orchestrator
    passes one that wraps them in its tasks (:mod:`flows.ingest`).

    Raises
    ------
    PermissionError
        If the store is not writable (checked before any work; the message names the store).
    NotADirectoryError
        If the store path is a file.
    ValueError
        If the plate folder's ``platemap.csv`` is empty or malformed (checked before any work;
        the message names the file).
    PlateConflictError
        If another folder owns the plate ID (checked before any work; names both folders).
    """
    if processes is None or processes > 1:  # its imports overlap the planning below
        start_workers()
    if plan is None:
        plan = run_stage("preflight", preflight, plate_dir, store, settings, plate_id=plate_id)
    with file_lock(store.lock_path(plan.plate), timeout=lock_timeout):
        check_plate_source(plan, store, replace=replace)
        if not force and is_current(plan, store):
            return skipped_result(plan, store)
        return _ingest_locked(plan, store, settings, processes=processes, progress=progress, run_stage=run_stage)


def _ingest_locked(plan: PlatePlan, store: Store, settings: IngestSettings, *, processes: int | None,
                   progress: Progress | None, run_stage: StageRunner) -> PlateResult:
    """The four stages of :func:`ingest_plate` on a planned plate whose lock is held; the
    result records the stages' wall-clock seconds and the workers' seconds per step."""
    t: dict[str, float] = {}
    work: dict[str, float] = {}
    n_proc = processes or default_processes(len(plan.listing.images.groupby(["Metadata_Well", "Metadata_Site"])))
    with executor(n_proc) as pool:  # one set of workers for both passes over the plate
        t0 = time.perf_counter()
        fields, quarantine, stats = run_stage("write-images", write_images, plan, settings, progress=progress,
                                              processes=n_proc, pool=pool, timings=work)
        t["write"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        qc = None
        if pool is not None and len(fields):  # idle workers load pass 2's compiled kernels meanwhile
            for _ in range(n_proc):
                pool.submit(warm_kernels, settings.features)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmcl-illumination-qc") as drawer:
            if len(fields):
                funcs = run_stage("illumination", compute_illumination, plan, fields, settings, stats, qc=False)
                # the QC PNGs are drawn while the workers segment (the main thread mostly waits then)
                qc = drawer.submit(illumination_qc, plan, funcs)
            t["illumination"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            cells, field_table = run_stage("segment-and-tile", segment_and_tile, plan, fields, settings,
                                           processes=n_proc, progress=progress, pool=pool, timings=work)
        if qc is not None:
            qc.result()  # the drawing's error, if any, is the plate's
        t["segment_tile"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = run_stage("publish", publish, plan, store, fields=field_table, cells=cells, quarantine=quarantine,
                       layout=plan.listing.layout)
    t["publish"] = time.perf_counter() - t0
    result.seconds = t
    result.worker_seconds = work
    return result
