"""Prefect flow ingesting one plate: coarse tasks, one per stage of the plate (never per image)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.progress import stage_callback
from pipeline import ingest as stages
from pipeline.ledger import file_lock, ledger_entry
from pipeline.store import Store

__all__ = ["ingest_plate_flow", "find_plate_folders"]


def retry_transient_io(task, task_run, state) -> bool:
    """Retry only I/O errors that may pass (a busy network share), never bad input.

    A missing or unreadable-by-permission path, or a ``ValueError`` about the data, fails at once.
    """
    exc = getattr(state, "data", None)
    permanent = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)
    return isinstance(exc, OSError) and not isinstance(exc, permanent)


_IO_RETRIES = dict(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=retry_transient_io)


def _run_name() -> str:
    return f"ingest-{Path(flow_run.parameters['plate_dir']).name}"


@task(name="discover", cache_policy=NO_CACHE, **_IO_RETRIES)
def discover_task(plate_dir: str, store: Store, settings: stages.IngestSettings,
                  plate_id: str | None = None) -> stages.PlatePlan:
    return stages.plan_plate(plate_dir, store, settings, plate_id=plate_id)


@task(name="write-images", cache_policy=NO_CACHE, **_IO_RETRIES)
def write_images_task(plan: stages.PlatePlan):
    return stages.write_images(plan, progress=stage_callback(f"{plan.plate}: write"))


@task(name="illumination", cache_policy=NO_CACHE)
def illumination_task(plan: stages.PlatePlan, fields, settings: stages.IngestSettings) -> None:
    stages.compute_illumination(plan, fields, settings)


@task(name="segment-and-tile", cache_policy=NO_CACHE)
def segment_task(plan: stages.PlatePlan, fields, settings: stages.IngestSettings):
    return stages.segment_and_tile(plan, fields, settings, progress=stage_callback(f"{plan.plate}: segment"))


@task(name="publish", cache_policy=NO_CACHE, **_IO_RETRIES)
def publish_task(plan: stages.PlatePlan, store: Store, fields, cells, quarantine) -> stages.PlateResult:
    return stages.publish(plan, store, fields=fields, cells=cells, quarantine=quarantine, layout=plan.listing.layout)


@flow(name="ingest-plate", flow_run_name=_run_name, log_prints=True)
def ingest_plate_flow(plate_dir: str, store: str, settings: dict[str, Any] | None = None,
                      force: bool = False, *, replace: bool = False, plate_id: str | None = None) -> dict[str, Any]:
    """Ingest one plate folder into ``store`` (skipped when unchanged since its last ingest).

    A folder whose plate ID the store holds from another folder is refused unless ``replace``;
    ``plate_id`` ingests it under another ID (see :func:`pipeline.ingest.check_plate_source`).
    """
    logger = get_run_logger()
    st = Store(Path(store))
    cfg = stages.IngestSettings(**(settings or {}))
    plan = discover_task(plate_dir, st, cfg, plate_id)
    with file_lock(st.root / "locks" / f"{plan.plate}.lock"):
        stages.check_plate_source(plan, st, replace=replace)
        if not force and stages.is_current(plan, st):
            logger.info("plate %s unchanged since its last ingest: nothing to do", plan.plate)
            done = ledger_entry(st, plan.plate) or {}
            return asdict(stages.PlateResult(plate=plan.plate, source=plate_dir, status="skipped",
                                             layout=plan.listing.layout, n_fields=int(done.get("N_Fields", 0)),
                                             n_quarantined=int(done.get("N_Quarantined", 0)),
                                             n_cells=int(done.get("N_Cells", 0))))
        t0 = time.perf_counter()
        fields, quarantine = write_images_task(plan)
        t1 = time.perf_counter()
        illumination_task(plan, fields, cfg)
        t2 = time.perf_counter()
        cells, field_table = segment_task(plan, fields, cfg)
        t3 = time.perf_counter()
        result = publish_task(plan, st, field_table, cells, quarantine)
        result.seconds = {"write": t1 - t0, "illumination": t2 - t1, "segment_tile": t3 - t2,
                          "publish": time.perf_counter() - t3}
    logger.info("plate %s: %d fields, %d cells, %d quarantined", result.plate, result.n_fields, result.n_cells,
                result.n_quarantined)
    _plate_artifact(result)
    return asdict(result)


def _plate_artifact(result: stages.PlateResult) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        key=f"plate-{result.plate.lower().replace('_', '-')}"[:60],
        markdown=(f"### Plate {result.plate}\n\n| fields | cells | quarantined | layout |\n|---|---|---|---|\n"
                  f"| {result.n_fields} | {result.n_cells} | {result.n_quarantined} | {result.layout} |\n"),
        description=f"ingestion summary of {result.plate}")


def find_plate_folders(inbox: str | Path) -> list[Path]:
    """Plate folders in an inbox: sub-folders holding TIFFs or a LoadData CSV (sorted by name)."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        raise FileNotFoundError(f"inbox {inbox} does not exist")
    out = []
    for d in sorted(p for p in inbox.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if any(p.suffix.lower() in (".tif", ".tiff") for p in d.rglob("*")) or any(d.glob("*.csv")):
            out.append(d)
    return out
