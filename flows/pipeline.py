"""The end-to-end flow: ingest every new or changed plate of an inbox, then compounds, profiles, train, evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.compounds import compounds_flow
from flows.ingest import find_plate_folders
from flows.model import evaluate_flow, train_flow
from pipeline.profiles.controls import record_negcon
from pipeline.store.paths import Store
from flows.parallel import ingest_plates
from flows.profiles import profile_flow

__all__ = ["run_flow"]


@flow(name="cmcl-run", flow_run_name="run", log_prints=True)
def run_flow(inbox: str, store: str, *, ingest_settings: dict[str, Any] | None = None,
             compound_files: list[str] | None = None, preset: str = "default",
             train_overrides: dict[str, Any] | None = None, train: bool = True, workers: int = 1,
             dask_address: str | None = None, ground_truth: list[str] | None = None,
             negcon: list[str] | None = None) -> dict[str, Any]:
    """Everything from raw plate folders to a trained, evaluated model.

    Unchanged plates, compounds and training data are recognised by their fingerprints and
    not processed again, so rerunning on an unchanged inbox does almost no work. With
    ``workers > 1`` (a local Dask cluster) or ``dask_address`` (a running one) plates are
    ingested in parallel, one plate per Dask worker (see :func:`flows.parallel.ingest_plates`);
    the store ends up identical to a sequential run. ``ground_truth``: folders of generated
    plates whose ground truth the report shows (see :func:`flows.model.evaluate_flow`).
    ``negcon``: negative-control labels of the profiles and the training (kept by the store for its
    later runs; None: the store's, :func:`pipeline.profiles.controls.store_negcon`); a plate without
    any is flagged, never stops the run.
    """
    logger = get_run_logger()
    plates = find_plate_folders(inbox)
    if not plates:
        raise ValueError(f"inbox {inbox} holds no plate folder (sub-folders with TIFFs or a LoadData CSV)")
    if negcon is not None:  # kept by the store first, so training reads them even without profiles
        record_negcon(Store(Path(store)), negcon)
    results = ingest_plates(plates, store, settings=ingest_settings, workers=workers, dask_address=dask_address)
    logger.info("plates: %d ingested, %d unchanged", sum(r["status"] == "complete" for r in results),
                sum(r["status"] == "skipped" for r in results))
    compounds = compounds_flow(store, files=compound_files)
    out: dict[str, Any] = {"plates": results, "compounds": compounds}
    if Store(Path(store)).table_files("features"):  # plates ingested with CellProfiler features
        out["profiles"] = profile_flow(store, negcon=negcon)
    if train:
        run = train_flow(store, preset=preset, overrides=train_overrides)
        out["run"] = run
        out["metrics"] = evaluate_flow(store, run, ground_truth=ground_truth)
        out["report"] = str(Path(store) / "reports" / run / "report.html")
    return out
