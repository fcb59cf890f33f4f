"""Scheduled, incremental ingestion: a Prefect server plus a served deployment watching an inbox.

Every tick of the schedule runs :func:`ingest_inbox_flow`: plate folders that are new or changed
since their last ingest are ingested (the ledger skips unchanged ones), compounds are updated when
anything landed, and with ``retrain_after=N`` a model is trained and evaluated once N plates have
landed since the last training run started by this flow.

Schedules need a real Prefect server (the ephemeral API has no scheduler):
:func:`start_server` starts ``prefect server start`` on 127.0.0.1, :func:`wait_healthy` waits for
it, and :func:`serve_ingest` registers the deployment and runs it until interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.compounds import collect_records, compounds_flow
from flows.ingest import find_plate_folders
from flows.model import PRESETS, evaluate_flow, train_flow
from flows.parallel import ingest_plates
from pipeline.store.atomic import write_text_atomic
from pipeline.store.paths import Store

__all__ = [
    "ingest_inbox_flow",
    "serve_ingest",
    "plates_since_training",
    "settled_plate_folders",
    "PrefectServer",
    "start_server",
    "wait_healthy",
    "stop_process",
    "free_port",
]

#: File written into ``runs/<run>/`` by :func:`ingest_inbox_flow` when it trains: the
#: ``{plate: fingerprint}`` of every complete plate the run learned from.
TRAINED_PLATES = "trained_plates.json"


def _complete_plates(st: Store) -> dict[str, str]:
    led = st.read("ledger")
    led = led[led["Status"] == "complete"]
    return dict(zip(led["Metadata_Plate"], led["Fingerprint"]))


def plates_since_training(st: Store) -> int:
    """Complete plates that are new or changed since the last run trained by :func:`ingest_inbox_flow`.

    A plate counts when its ``(plate, fingerprint)`` is missing from the newest run's
    ``trained_plates.json``; with no such run every complete plate counts.
    """
    seen: dict[str, str] = {}
    for run in reversed(st.runs()):
        manifest = st.run_dir(run) / TRAINED_PLATES
        if manifest.is_file():
            seen = json.loads(manifest.read_text())
            break
    return sum(seen.get(plate) != fp for plate, fp in _complete_plates(st).items())


def settled_plate_folders(inbox: str | Path, *, settle_seconds: float = 0.0) -> tuple[list[Path], list[Path]]:
    """Plate folders of ``inbox`` split into (settled, still being written).

    A folder is still being written when any file in it changed less than ``settle_seconds`` ago;
    it is left for a later tick so a half-copied plate is never ingested.
    """
    now = time.time()
    settled, busy = [], []
    for d in find_plate_folders(inbox):
        newest = max((p.stat().st_mtime for p in d.rglob("*") if p.is_file()), default=0.0)
        (busy if now - newest < settle_seconds else settled).append(d)
    return settled, busy


@flow(name="ingest-inbox", flow_run_name="ingest-inbox", log_prints=True)
def ingest_inbox_flow(inbox: str, store: str, *, settings: dict[str, Any] | None = None,
                      retrain_after: int | None = None, preset: str = "default",
                      train_overrides: dict[str, Any] | None = None, settle_seconds: float = 30.0,
                      workers: int = 1, dask_address: str | None = None) -> dict[str, Any]:
    """One tick: ingest new or changed plates, update compounds, retrain after enough new plates.

    Parameters
    ----------
    inbox, store : str
        The folder watched for plate folders, and the cmcl store.
    settings : dict, optional
        Fields of :class:`pipeline.ingest.settings.IngestSettings`.
    retrain_after : int, optional
        Train (``preset``, ``train_overrides``) and evaluate once this many plates have landed
        since the last training of this flow; None never trains.
    settle_seconds : float, default 30
        Plate folders with a file changed more recently are left for a later tick.
    workers, dask_address
        Parallel ingestion, as in :func:`flows.parallel.ingest_plates`.

    Returns
    -------
    dict
        ``plates`` (one result per plate folder attempted, status 'failed' with its ``error``
        for a folder that could not be ingested), ``refused`` (folder -> error, for this tick's
        failures and earlier ones whose folder is unchanged: those are not attempted again, so
        a bad folder or a plate ID claimed by two folders is reported once and never loops),
        ``waiting`` (folders still being written), ``empty`` (plate -> one line, for plates that
        stored no field: every field refused; not counted as landed), ``compounds`` (summary or None),
        ``plates_since_training``, and ``run`` and ``metrics`` when a model was trained. A
        failed folder never stops the others, nor the compound and training stages.
    """
    logger = get_run_logger()
    st = Store(Path(store))
    plates, waiting = settled_plate_folders(inbox, settle_seconds=settle_seconds)
    for d in waiting:
        logger.info("plate folder %s is still being written: left for a later tick", d.name)
    refused = _read_refused(st)
    prints = {str(d): _folder_fingerprint(d) for d in plates}
    known = [d for d in plates if refused.get(str(d), {}).get("fingerprint") == prints[str(d)]]
    todo = [d for d in plates if d not in known]
    results = ingest_plates(todo, store, settings=settings, workers=workers, dask_address=dask_address, on_error="report")
    for d, r in zip(todo, results):
        if r["status"] == "failed":  # reported once; retried when the folder changes
            refused[str(d)] = {"fingerprint": prints[str(d)], "error": r["error"]}
            logger.warning("plate folder %s refused: %s", d.name, r["error"])
        else:
            refused.pop(str(d), None)
    _write_refused(st, {k: v for k, v in refused.items() if Path(k).is_dir()})
    # a plate that stored no field is no success: reported, never counted as landed
    empty = {r["plate"]: r["nothing_stored"] for r in results if r.get("nothing_stored")}
    for line in empty.values():
        logger.warning("%s", line)
    landed = [r["plate"] for r in results if r["status"] == "complete" and r["plate"] not in empty]
    failed = [r["source"] for r in results if r["status"] == "failed"]
    logger.info("inbox %s: %d plates ingested (%s), %d stored nothing (%s), %d unchanged, %d refused (%s), "
                "%d refused before and unchanged", inbox, len(landed), ", ".join(landed) or "-", len(empty),
                ", ".join(empty) or "-", sum(r["status"] == "skipped" for r in results), len(failed),
                ", ".join(Path(f).name for f in failed) or "-", len(known))
    out: dict[str, Any] = {"plates": results, "waiting": [str(d) for d in waiting], "compounds": None,
                           "refused": {k: refused[k]["error"] for k in [*map(str, known), *failed]},
                           "empty": empty}
    if landed:
        if collect_records(st, []).empty:
            logger.info("no plate map lists a compound yet: compounds not updated")
        else:
            out["compounds"] = compounds_flow(store)
    pending = plates_since_training(st)
    out["plates_since_training"] = pending
    if retrain_after is not None and pending >= retrain_after and st.table_path("graphs").is_file():
        logger.info("%d plates landed since the last training (threshold %d): training", pending, retrain_after)
        trained_on = _complete_plates(st)
        run = train_flow(store, preset=preset, overrides=train_overrides)
        write_text_atomic(json.dumps(trained_on, indent=1, sort_keys=True), st.run_dir(run) / TRAINED_PLATES)
        out["run"] = run
        out["metrics"] = evaluate_flow(store, run)
        out["plates_since_training"] = plates_since_training(st)
    return out


def _folder_fingerprint(folder: Path) -> str:
    from pipeline.plates.discovery import fingerprint_files

    return fingerprint_files(folder, [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()])


def _read_refused(st: Store) -> dict[str, dict[str, str]]:
    path = st.path("serve_refused")
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_refused(st: Store, refused: dict[str, dict[str, str]]) -> None:
    write_text_atomic(json.dumps(refused, indent=1, sort_keys=True), st.path("serve_refused"))


def serve_ingest(inbox: str | Path, store: str | Path, *, interval: float | None = None, cron: str | None = None,
                 retrain_after: int | None = None, preset: str = "default",
                 settings: dict[str, Any] | None = None, train_overrides: dict[str, Any] | None = None,
                 settle_seconds: float = 30.0, workers: int = 1, name: str = "cmcl-ingest") -> None:
    """Serve :func:`ingest_inbox_flow` on a schedule until interrupted (blocks).

    The Prefect server is taken from ``PREFECT_API_URL`` (see :func:`start_server`; the ``cmcl
    serve`` verb first looks for a running ``cmcl server``, :func:`flows.api.use_running_server`). Ticks never
    overlap: a tick due while another runs waits for it, so choose an interval longer than a
    tick takes (each tick starts a fresh Python process: 10-20 s on a busy machine, plus the
    ingestion of whatever landed). Move finished plate folders into the inbox (or let
    ``settle_seconds`` pass after the last file was written) so no half-copied plate is read.

    Parameters
    ----------
    inbox, store : str or Path
        Folder watched for plate folders; the cmcl store.
    interval : float, optional
        Seconds between ticks. Exactly one of ``interval`` and ``cron`` is required.
    cron : str, optional
        A cron schedule such as ``"0 * * * *"`` (hourly).
    retrain_after, preset, settings, train_overrides, settle_seconds, workers
        Passed to every tick, see :func:`ingest_inbox_flow`.
    name : str, default "cmcl-ingest"
        Deployment name (``ingest-inbox/<name>`` in Prefect).

    Raises
    ------
    ValueError
        If not exactly one schedule is given, the preset or ``retrain_after`` is invalid, or
        no Prefect server is configured.
    FileNotFoundError
        If ``inbox`` does not exist.
    RuntimeError
        If the configured Prefect server does not answer.
    """
    from prefect.settings import PREFECT_API_URL

    if (interval is None) == (cron is None):
        raise ValueError("give exactly one schedule: interval (seconds) or cron")
    if interval is not None and interval <= 0:
        raise ValueError(f"interval must be positive seconds, got {interval!r}")
    if retrain_after is not None and retrain_after < 1:
        raise ValueError(f"retrain_after must be at least 1 plate, got {retrain_after!r}")
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of {', '.join(PRESETS)}")
    if not Path(inbox).is_dir():
        raise FileNotFoundError(f"inbox {inbox} does not exist")
    api_url = PREFECT_API_URL.value()
    if not api_url:
        raise ValueError("schedules need a Prefect server: start one with `cmcl server` (found automatically) "
                         "or `prefect server start` and set PREFECT_API_URL, e.g. http://127.0.0.1:4200/api")
    wait_healthy(api_url, timeout=30)
    import asyncio

    from prefect.runner import Runner

    from flows.signals import arm

    class _Runner(Runner):
        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
            arm(signal.SIGTERM)  # the graceful shutdown may wait on a gone API: never more than seconds
            super().handle_sigterm(*args, **kwargs)

    runner = _Runner(name=name, limit=1)
    runner.add_flow(
        ingest_inbox_flow,
        name=name,
        interval=timedelta(seconds=interval) if interval is not None else None,
        cron=cron,
        parameters={"inbox": str(Path(inbox).resolve()), "store": str(Path(store).resolve()),
                    "settings": settings, "retrain_after": retrain_after, "preset": preset,
                    "train_overrides": train_overrides, "settle_seconds": settle_seconds, "workers": workers},
        description=f"ingest new plates of {inbox} into {store}",
    )
    asyncio.run(runner.start())


# --------------------------------------------------------------------------- server processes


@dataclass(frozen=True)
class PrefectServer:
    """A ``prefect server start`` child process (leader of its own process group)."""

    process: subprocess.Popen
    host: str
    port: int
    home: Path | None

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    def stop(self, *, timeout: float = 15.0) -> None:
        """Stop the server and everything it started (see :func:`stop_process`)."""
        stop_process(self.process, timeout=timeout)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_server(host: str = "127.0.0.1", port: int | None = None, *, home: str | Path | None = None,
                 log: str | Path | None = None) -> PrefectServer:
    """Start ``prefect server start`` in a new process group; returns at once (see :func:`wait_healthy`).

    Parameters
    ----------
    host : str, default "127.0.0.1"
        Interface to bind; only loopback unless told otherwise.
    port : int, optional
        Port to bind; default a free one.
    home : str or Path, optional
        A ``PREFECT_HOME`` of its own (database, settings), created if needed; default the
        user's Prefect home.
    log : str or Path, optional
        File receiving the server's output; default the caller's console.

    Returns
    -------
    PrefectServer
        The process and its ``api_url``, for ``PREFECT_API_URL`` of clients and ``serve``.
    """
    port = port or free_port(host)
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    if home is not None:
        Path(home).mkdir(parents=True, exist_ok=True)
        env["PREFECT_HOME"] = str(home)
    out = open(log, "ab") if log is not None else None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host,
                                 "--port", str(port)], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT if out else None, start_new_session=True)
    finally:
        if out is not None:
            out.close()
    return PrefectServer(proc, host, port, Path(home) if home is not None else None)


def wait_healthy(api_url: str, *, timeout: float = 120.0, process: subprocess.Popen | None = None) -> None:
    """Wait until ``GET <api_url>/health`` answers 200.

    Raises
    ------
    RuntimeError
        If ``process`` (the server) exits first, or the API does not answer within ``timeout`` seconds.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"Prefect server for {api_url} exited with code {process.returncode} "
                               "before it was healthy")
        try:
            with opener.open(f"{api_url.rstrip('/')}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Prefect API {api_url} did not answer /health within {timeout:g} s")
        time.sleep(0.5)


def stop_process(process: subprocess.Popen, *, timeout: float = 15.0) -> None:
    """Stop ``process`` and every process it started: SIGTERM, then SIGKILL after ``timeout`` seconds.

    Descendants are found before signalling (including those in sessions of their own, such as the
    flow-run processes of ``serve``) and also signalled by process group when ``process`` leads
    one (``start_new_session=True``, as :func:`start_server` does). Returns once all are gone.
    """
    import psutil

    try:
        procs = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        pgid = None
    own_group = pgid is not None and pgid != os.getpgrp()
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if own_group:
            _signal_group(pgid, sig)
        for p in [*procs, process]:
            try:
                p.send_signal(sig)
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass
        deadline = time.monotonic() + wait_s
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            pass
        _, procs = psutil.wait_procs(procs, timeout=max(0.0, deadline - time.monotonic()))
        if not procs and process.poll() is not None:
            break
    if own_group:
        _signal_group(pgid, signal.SIGKILL)  # anything left in the group
    if procs or process.poll() is None:
        raise RuntimeError(f"processes {[process.pid, *(p.pid for p in procs)]} survived SIGKILL")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
