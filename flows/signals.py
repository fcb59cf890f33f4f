"""Ctrl-C and SIGTERM for the ``cmcl`` command: stop within seconds, leave no process behind.

Left to themselves, an interrupted Prefect flow reports its crash to the API (which may already
be gone: the terminal's SIGINT reaches Prefect's temporary server too) and retries for minutes,
and a SIGTERM ends Python without running ``finally`` blocks, so ``cmcl server`` would leave its
``prefect server start`` running.

:func:`install` makes both signals raise :class:`KeyboardInterrupt` in the main thread (so
``finally`` blocks and context managers run: locks are released, ``cmcl server`` stops its
server), and starts a watchdog: if the process is still alive ``grace`` seconds later, every
descendant process (Prefect's temporary API server, segmentation workers, a Dask cluster) is
killed and the process exits with ``128 + signal``. A second signal does the same at once.

Nothing of the store is lost: a plate is only marked complete once all its outputs are in
place (:func:`pipeline.ingest.run.publish`), and an interrupted plate resumes from its staging
folder on the next run.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable

__all__ = ["install", "arm", "kill_descendants", "INTERRUPTED_HINT"]

#: What the CLI prints when a verb was interrupted.
INTERRUPTED_HINT = "interrupted: stopped; the store is consistent, rerun the same command to resume"

_stopping = threading.Event()


def kill_descendants(*, timeout: float = 2.0) -> None:
    """SIGTERM every descendant of this process, then SIGKILL those alive after ``timeout`` s."""
    import psutil

    try:
        procs = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=timeout)


def _hard_exit(signum: int) -> None:
    kill_descendants(timeout=1.0)
    try:
        sys.stderr.write(f"error: {INTERRUPTED_HINT}\n")
        sys.stderr.flush()
    finally:
        os._exit(128 + signum)


def _watchdog(signum: int, grace: float) -> None:
    time.sleep(grace)
    _hard_exit(signum)


def arm(signum: int, *, grace: float = 5.0) -> None:
    """Start the watchdog (once): descendants killed and exit ``128 + signum`` in ``grace`` s.

    For code that owns a signal itself (Prefect's runner handles SIGTERM in ``cmcl serve``):
    its graceful shutdown may then wait for an API that is gone, never longer than ``grace``.
    """
    if _stopping.is_set():
        return
    _stopping.set()
    threading.Thread(target=_watchdog, args=(signum, grace), daemon=True, name="cmcl-stop").start()


def install(*, grace: float = 5.0) -> Callable[[], None]:
    """Make SIGINT and SIGTERM stop this process within about ``grace`` seconds.

    Only the main thread can install signal handlers; elsewhere this does nothing.
    Returns a function restoring the previous handlers (the CLI calls it when a verb returns,
    so that an in-process caller such as a test runner gets its own handlers back).

    Parameters
    ----------
    grace : float, default 5
        Seconds the process gets to unwind (``finally`` blocks, Prefect marking the run crashed)
        before its descendants are killed and it exits.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    _stopping.clear()

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        if _stopping.is_set():  # a second signal: stop now
            _hard_exit(signum)
        arm(signum, grace=grace)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, h in previous.items():
            if h is not None:
                signal.signal(sig, h)

    return restore
