"""Prefect flow ingesting one plate: coarse tasks, one per stage of the plate (never per image)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.progress import stage_callback
from pipeline.ingest.plan import PlatePlan
from pipeline.ingest.publish import PlateResult
from pipeline.ingest.run import ingest_plate
from pipeline.ingest.settings import IngestSettings
from pipeline.store.paths import Store

__all__ = ["ingest_plate_flow", "find_plate_folders", "plate_artifact"]


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


def _call_stage(fn, *args, **kwargs):
    return fn(*args, **kwargs)


#: One Prefect task per stage of :func:`pipeline.ingest.run.ingest_plate` (never per image); stages
#: that only read or move files retry transient I/O errors.
_STAGE_TASKS = {
    name: task(_call_stage, name=name, cache_policy=NO_CACHE, **(_IO_RETRIES if io else {}))
    for name, io in (("preflight", True), ("write-images", True), ("illumination", False),
                     ("segment-and-tile", False), ("publish", True))
}


def _run_stage(name: str, fn, *args, **kwargs):
    """Run one ingestion stage as its Prefect task (the control flow stays in pipeline.ingest.run)."""
    if kwargs.get("progress", False) is None:
        kwargs["progress"] = stage_callback(f"{args[0].plate}: {name}")
    return _STAGE_TASKS[name](fn, *args, **kwargs)


@flow(name="ingest-plate", flow_run_name=_run_name, log_prints=True)
def ingest_plate_flow(plate_dir: str, store: str, *, settings: dict[str, Any] | None = None,
                      force: bool = False, replace: bool = False, plate_id: str | None = None,
                      plan: Any = None) -> dict[str, Any]:
    """Ingest one plate folder into ``store`` (skipped when unchanged since its last ingest).

    Runs :func:`pipeline.ingest.run.ingest_plate`, each of its stages as a Prefect task. A folder
    whose plate ID the store holds from another folder is refused unless ``replace``;
    ``plate_id`` ingests it under another ID (see :func:`pipeline.ingest.plan.check_plate_source`).
    ``plan``: the folder's :class:`~pipeline.ingest.plan.PlatePlan` when the caller ran its
    preflight already (with the same settings and ``plate_id``); else the flow runs it.
    """
    logger = get_run_logger()
    if plan is not None and not isinstance(plan, PlatePlan):
        raise TypeError(f"plan must be a PlatePlan or None; got {type(plan).__name__}")
    cfg = IngestSettings(**(settings or {}))
    result = ingest_plate(plate_dir, Store(Path(store)), cfg, force=force, replace=replace, plate_id=plate_id,
                          run_stage=_run_stage, plan=plan)
    logger.info("%s", result.summary)
    if result.status == "complete":
        plate_artifact(result)
    return asdict(result)


def plate_artifact(result: PlateResult) -> None:
    """A Prefect markdown artifact summarizing an ingested plate (fields, cells, quarantined, layout)."""
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
