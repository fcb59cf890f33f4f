"""Ingesting many plates at once: one coarse Prefect task per plate on a Dask cluster.

Sequential ingestion (``workers=1``) runs :func:`flows.ingest.ingest_plate_flow` per plate, whose
segmentation stage fans fields out over a local process pool. With ``workers > 1`` (a local Dask
cluster of ``workers`` single-threaded worker processes) or ``dask_address`` (an existing cluster),
plates are spread over Dask workers instead, one task per plate calling
:func:`pipeline.ingest.run.ingest_plate` with ``processes=1``: Dask worker processes are daemonic and
cannot start a pool of their own. Plates write only their own files and tables; the shared ledger
is rewritten under a store-wide ``flock`` (:func:`pipeline.store.ledger.update_ledger`), and each plate
holds its own lock while it is ingested, so the outputs are identical to a sequential run.

The module is not called ``dask`` so that it never shadows the ``dask`` package.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

from flows.ingest import ingest_plate_flow, plate_artifact
from pipeline.ingest.plan import PlatePlan, preflight
from pipeline.ingest.publish import PlateResult
from pipeline.ingest.run import ingest_plate
from pipeline.ingest.settings import IngestSettings
from pipeline.store.paths import Store

__all__ = ["ingest_plates", "ingest_flow", "dask_task_runner", "ingest_plates_dask_flow"]


def dask_task_runner(*, workers: int = 2, dask_address: str | None = None):
    """A ``prefect_dask.DaskTaskRunner`` on a new local cluster or an existing one.

    Parameters
    ----------
    workers : int, default 2
        Worker processes of the local cluster (one thread each); ignored with ``dask_address``.
    dask_address : str, optional
        Scheduler address of a running Dask cluster, e.g. ``tcp://127.0.0.1:8786``.

    Returns
    -------
    prefect_dask.DaskTaskRunner
        The local cluster listens on 127.0.0.1 only and has no dashboard.

    Raises
    ------
    ValueError
        If ``workers`` is below 1.
    """
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers!r}")
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "host": "127.0.0.1", "dashboard_address": None})


@task(name="ingest-plate", cache_policy=NO_CACHE, task_run_name="ingest-{plate_dir}")
def ingest_plate_task(plate_dir: str, store: str, *, settings: dict[str, Any] | None, force: bool,
                      replace: bool = False, plate_id: str | None = None, plan: Any = None) -> dict[str, Any]:
    """Ingest one plate in a single process (runs on a Dask worker); ``plan``: its preflight, if run."""
    result = ingest_plate(plate_dir, Store(Path(store)), IngestSettings(**(settings or {})),
                          force=force, processes=1, replace=replace, plate_id=plate_id, plan=plan)
    return asdict(result)


@flow(name="ingest-plates-dask", flow_run_name="ingest-plates", log_prints=True)
def ingest_plates_dask_flow(plate_dirs: list[str], store: str, *, settings: dict[str, Any] | None = None,
                            force: bool = False, on_error: str = "raise", replace: bool = False,
                            plate_id: str | None = None, plans: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Ingest ``plate_dirs`` concurrently, one task per plate, on the flow's task runner.

    Every plate is attempted even if another fails; failures are then raised together.
    Give the flow its runner with ``ingest_plates_dask_flow.with_options(task_runner=...)``
    (see :func:`dask_task_runner`); results come back in the order of ``plate_dirs``.
    ``plans``: plate folder -> its :class:`~pipeline.ingest.plan.PlatePlan`, for folders whose
    preflight already ran.
    """
    logger = get_run_logger()
    plans = plans or {}
    futures = [ingest_plate_task.submit(d, store, settings=settings, force=force, replace=replace, plate_id=plate_id,
                                        plan=plans.get(d)) for d in plate_dirs]
    wait(futures)
    results, failed = [], []
    for d, fut in zip(plate_dirs, futures):
        state = fut.state
        if state.is_completed():
            results.append(fut.result())
        else:
            failed.append(f"{Path(d).name}: {state.message or state.name}")
            results.append(_failed(d, fut.result(raise_on_failure=False)))
    if failed and on_error == "report":
        return results
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(plate_dirs)} plates failed: " + "; ".join(failed))
    for r in results:
        if r["status"] == "complete":
            plate_artifact(PlateResult(**r))
    logger.info("plates: %d ingested, %d unchanged", sum(r["status"] == "complete" for r in results),
                sum(r["status"] == "skipped" for r in results))
    return results


def _failed(plate_dir: str, exc: Any) -> dict[str, Any]:
    """The result of a plate folder whose ingestion raised ``exc``."""
    msg = " ".join(str(exc).split()) if isinstance(exc, BaseException) else str(exc)
    name = type(exc).__name__ if isinstance(exc, BaseException) else "Error"
    return asdict(PlateResult(plate=Path(plate_dir).name, source=str(plate_dir), status="failed",
                                     error=f"{name}: {msg}"))


def ingest_plates(plate_dirs: list[str | Path], store: str | Path, *, settings: dict[str, Any] | None = None,
                  force: bool = False, workers: int = 1, dask_address: str | None = None,
                  on_error: str = "raise", replace: bool = False, plate_id: str | None = None,
                  plans: dict[str, PlatePlan] | None = None) -> list[dict[str, Any]]:
    """Ingest plate folders one after another or, with ``workers > 1`` or ``dask_address``, on Dask.

    Call it from inside a flow (the plates become sub-flow or task runs of that flow).

    Parameters
    ----------
    plate_dirs : list of str or Path
        Plate folders, e.g. from :func:`flows.ingest.find_plate_folders`.
    store : str or Path
        The cmcl store.
    settings : dict, optional
        Fields of :class:`pipeline.ingest.settings.IngestSettings`.
    force : bool, default False
        Ingest plates even if unchanged since their last ingest.
    workers : int, default 1
        1: sequential, each plate using a local process pool; more: a local Dask cluster of that
        many single-threaded worker processes, one plate per worker at a time.
    dask_address : str, optional
        Scheduler address of a running Dask cluster (overrides ``workers``). Its workers must
        import cmcl, see the plate folders and the store under the same paths, and reach the
        Prefect API: set ``PREFECT_API_URL`` to a server they can reach (an ephemeral API
        listens on this machine's loopback only).

    on_error : {'raise', 'report'}, default 'raise'
        'report': a plate folder that fails becomes a result with status 'failed' and its
        ``error``, and every other folder is still ingested (a served inbox).
    plans : dict, optional
        Plate folder (as ``str``) -> its :class:`~pipeline.ingest.plan.PlatePlan`, for folders
        whose preflight the caller ran already (with these settings and ``plate_id``; the
        ``cmcl ingest`` command does, before Prefect starts): it is not run again. The others'
        preflight runs here, once each.

    Returns
    -------
    list of dict
        One :class:`pipeline.ingest.publish.PlateResult` (as a dict) per plate folder, in input order.

    Raises
    ------
    ValueError
        If ``workers`` is below 1, a setting is invalid, or a plate fails its preflight (plate
        map, layout, channel map: :func:`pipeline.ingest.plan.preflight`); all plates are checked
        before any pixel of any plate is read.
    PermissionError, NotADirectoryError
        If the store is not a writable directory.
    RuntimeError
        If plates failed on Dask (all others are still ingested).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers!r}")
    dirs = [str(d) for d in plate_dirs]
    if on_error not in ("raise", "report"):
        raise ValueError(f"on_error must be 'raise' or 'report', got {on_error!r}")
    plans, refused = _preflight_all(dirs, Store(Path(store)), IngestSettings(**(settings or {})), plate_id=plate_id,
                                    plans=plans, on_error=on_error)
    todo = [d for d in dirs if d not in refused]
    if workers == 1 and not dask_address:
        if on_error == "raise":
            return [ingest_plate_flow(d, str(store), settings=settings, force=force, replace=replace, plate_id=plate_id,
                                      plan=plans[d]) for d in dirs]
        done = {}
        for d in todo:
            state = ingest_plate_flow(d, str(store), settings=settings, force=force, replace=replace, plate_id=plate_id,
                                      plan=plans[d], return_state=True)
            result = state.result(raise_on_failure=False)
            done[d] = result if state.is_completed() else _failed(d, result)
        return [refused.get(d) or done[d] for d in dirs]
    if not dirs:
        return []
    runner = dask_task_runner(workers=min(workers, len(dirs)), dask_address=dask_address)
    with _shared_api_url():
        done = dict(zip(todo, ingest_plates_dask_flow.with_options(task_runner=runner)(
            todo, str(store), settings=settings, force=force, on_error=on_error, replace=replace,
            plate_id=plate_id, plans={d: plans[d] for d in todo}))) if todo else {}
    return [refused.get(d) or done[d] for d in dirs]


def _preflight_all(dirs: list[str], store: Store, settings: IngestSettings, *, plate_id: str | None,
                   plans: dict[str, PlatePlan] | None, on_error: str
                   ) -> tuple[dict[str, PlatePlan], dict[str, dict[str, Any]]]:
    """The preflight of every folder not in ``plans`` (every path — sequential, Dask, served —
    checks every plate before any pixel of any plate is read): (plans, failed results of the
    folders refused, with ``on_error='report'``; with ``'raise'`` the first refusal is raised)."""
    plans = dict(plans or {})
    refused: dict[str, dict[str, Any]] = {}
    for d in dirs:
        if d in plans:
            continue
        try:
            plans[d] = preflight(d, store, settings, plate_id=plate_id)
        except Exception as exc:  # noqa: BLE001 - reported per plate, or raised as it is
            if on_error == "raise":
                raise
            refused[d] = _failed(d, exc)
    return plans, refused


@flow(name="ingest", flow_run_name="ingest", log_prints=True)
def ingest_flow(plate_dirs: list[str], store: str, *, settings: dict[str, Any] | None = None, force: bool = False,
                workers: int = 1, dask_address: str | None = None, replace: bool = False,
                plate_id: str | None = None, plans: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Ingest plate folders (``cmcl ingest``): :func:`ingest_plates` inside a flow (``plans``: the
    folders' preflights, run by the command before Prefect started)."""
    return ingest_plates(plate_dirs, store, settings=settings, force=force, workers=workers, dask_address=dask_address,
                         replace=replace, plate_id=plate_id, plans=plans)


@contextmanager
def _shared_api_url() -> Iterator[None]:
    """Make Dask workers report to this process's Prefect API, even an ephemeral one.

    Task runs carry the caller's settings to the workers. Without ``PREFECT_API_URL`` every worker
    would start an ephemeral API of its own (tens of seconds each); this names the ephemeral
    server the caller already uses, for the duration of the block.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the process-wide instance get_client() started
    server.start()
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield
