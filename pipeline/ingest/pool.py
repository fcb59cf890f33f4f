"""Process pools whose workers never outlive the process that started them."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

__all__ = ["exit_with_parent", "pool_context", "process_pool", "start_pool_server", "INGEST_PRELOAD"]

#: Modules the fork server imports before it forks any worker: every module any pool asked for
#: before the server started (it starts once per process, with the first pool).
_PRELOAD: list[str] = []


#: What the ingestion workers' fork server imports: :mod:`pipeline.ingest.warm` (whatever the
#: features: the workers load the feature kernels while they idle during the illumination stage,
#: :func:`pipeline.ingest.run.ingest_plate`, which is cheaper than the server loading them at start,
#: where both cores are busy; ``cmcl -q ingest`` of 40 real fields with the default features was
#: faster in 6 of 7 alternating pairs, median 13.3 against 13.7 s). Named here, in a module that
#: imports nothing heavy, so a command can start the server before it imports the ingestion code
#: itself (``start_pool_server(INGEST_PRELOAD)``).
INGEST_PRELOAD: tuple[str, ...] = ("pipeline.ingest.warm",)


def exit_with_parent(interval: float = 0.5) -> None:
    """Worker initializer: end this worker when the process that started the pool is gone.

    A worker blocked on its task queue does not notice that the pool's process was killed
    (SIGKILL, the OOM killer) and would live on, holding memory and that process's pipes. A
    daemon thread waits on multiprocessing's parent sentinel (a pipe whose other end the pool's
    process holds, with ``spawn`` and with ``forkserver``: the kernel closes it when that process
    dies) and exits the worker then. Watching the parent's PID is not enough: a worker forked by
    the fork server has the server as its parent, and the server outlives the pool's process
    while its workers live (they hold its liveness pipe). Without a sentinel (``fork``), the
    thread checks every ``interval`` seconds whether this worker has been re-parented."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        def watch() -> None:
            parent.join()  # returns once the sentinel pipe is closed: the pool's process is gone
            os._exit(1)
    else:
        ppid = os.getppid()

        def watch() -> None:
            while os.getppid() == ppid:
                time.sleep(interval)
            os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def process_pool(processes: int, mp_context) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``processes`` workers started with ``mp_context`` (spawn or
    forkserver: safe beside threads, e.g. Prefect's), each ending with its parent
    (:func:`exit_with_parent`)."""
    return ProcessPoolExecutor(max_workers=processes, mp_context=mp_context, initializer=exit_with_parent)


def pool_context(preload: Sequence[str] = ()):
    """The multiprocessing context for worker pools: ``forkserver`` where the platform has it
    (safe beside threads, e.g. Prefect's and zarr's event loop, unlike ``fork``), else ``spawn``.

    The fork server imports ``preload`` (and what earlier callers asked for) once; every worker
    is then forked from it with those modules, and whatever their import did, already loaded:
    with ``spawn`` each worker imports numpy, pandas, zarr, scipy and scikit-image and loads its
    compiled kernels itself (~1.5-2 s of CPU per worker, per pool). The server lives as long as
    the process, so later pools (the next plate, the next batch of compounds) start at once.
    Modules asked for after the server started are imported by each worker when it needs them.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    for name in preload:
        if name not in _PRELOAD:
            _PRELOAD.append(name)
    ctx.set_forkserver_preload(list(_PRELOAD))
    return ctx


def start_pool_server(preload: Sequence[str] = ()) -> None:
    """Start the fork server of :func:`pool_context` now, without waiting for it: it imports
    ``preload`` (~1.5 s on one core) while the caller does its own first work (planning a
    plate), instead of when the first pool asks for a worker. No-op without ``forkserver`` or
    once the server runs."""
    if pool_context(preload).get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()
