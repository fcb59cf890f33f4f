"""Process pools whose workers never outlive the process that started them."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

__all__ = ["process_pool", "exit_with_parent"]


def exit_with_parent(interval: float = 0.5) -> None:
    """Worker initializer: end this worker when the process that started it is gone.

    A worker blocked on its task queue does not notice that its parent was killed (SIGKILL, the
    OOM killer) and would live on, holding memory and the parent's pipes; a daemon thread checks
    the parent every ``interval`` seconds and exits the worker once it has been re-parented. The
    parent is the pool's process with spawn, the fork server with forkserver (which itself exits
    when the pool's process is gone)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def process_pool(processes: int, mp_context) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``processes`` workers started with ``mp_context`` (spawn or
    forkserver: safe beside threads, e.g. Prefect's), each ending with its parent
    (:func:`exit_with_parent`)."""
    return ProcessPoolExecutor(max_workers=processes, mp_context=mp_context, initializer=exit_with_parent)
