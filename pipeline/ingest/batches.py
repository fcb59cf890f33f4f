"""How a plate's fields are spread over worker processes: fixed batches, results gathered in
order, and each worker's seconds per step.

Both passes over a plate (:func:`pipeline.ingest.images.write_images`,
:func:`pipeline.ingest.fields.segment_and_tile`) hand batches of :data:`BATCH_FIELDS` fields to
:func:`map_in_order` on the pool of :func:`executor`; their outputs do not depend on the number of
processes.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator

from pipeline.ingest.pool import pool_context, process_pool

__all__ = ["BATCH_FIELDS", "Progress", "Clock", "add_seconds", "one_codec_thread", "map_in_order", "executor",
           "default_processes"]

#: ``progress(stage, done, total)``: called after each field of a stage (``done`` counts from 0).
Progress = Callable[[str, int, int], None]

#: Fields per task of a worker process, in both passes over a plate. Fixed, so that the work
#: (and the order in which partial illumination statistics are merged) does not depend on the
#: number of processes: outputs are identical for any ``processes``.
BATCH_FIELDS = 4


class Clock:
    """Wall-clock seconds a worker spends per step (summed over its fields): where its time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        """Charge the seconds since the last lap (or the start) to step ``name``."""
        t = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + t - self._t
        self._t = t


def add_seconds(total: dict[str, float], part: dict[str, float]) -> None:
    """Add ``part``'s seconds per step into ``total`` (in place)."""
    for k, v in part.items():
        total[k] = total.get(k, 0.0) + v


def one_codec_thread() -> None:
    """Blosc compresses with one thread per core by default; in a worker process, beside other
    workers, that oversubscribes the cores: one thread each."""
    if multiprocessing.parent_process() is not None:
        import numcodecs.blosc

        numcodecs.blosc.set_nthreads(1)


def default_processes(n_fields: int) -> int:
    """Worker processes for per-field work: all cores (at most 8) when there is enough work."""
    return 1 if n_fields < 24 else max(1, min(8, os.cpu_count() or 1))


def map_in_order(ex, fn: Callable, items: list, *, help_first: bool = False) -> Iterator:
    """``fn`` over ``items``, results in order: on the pool ``ex`` (here when None). With
    ``help_first`` this process computes the first item itself while the others are submitted
    from a thread: starting a new pool's workers blocks until its fork server has imported and
    warmed up (~1.5 s, on one core), which would otherwise leave the other core idle."""
    if ex is None:
        yield from map(fn, items)
        return
    if not help_first or len(items) < 2:
        yield from ex.map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmcl-submit") as submitter:
        submitted = submitter.submit(lambda: [ex.submit(fn, item) for item in items[1:]])
        yield fn(items[0])
        futures = submitted.result()[::-1]
        while futures:  # dropped once consumed: a plate's results are never all held at once
            yield futures.pop().result()


@contextmanager
def executor(processes: int, pool=None):
    """``pool`` when given (an executor the caller keeps), else a process pool of ``processes``
    workers forked from a warm fork server (:func:`pipeline.ingest.pool.pool_context`, which imports
    :mod:`pipeline.ingest.warm`: this module and its compiled kernels, loaded once), or None for one
    process."""
    if pool is not None:
        yield pool
        return
    if processes <= 1:
        yield None
        return
    with process_pool(processes, pool_context(["pipeline.ingest.warm"])) as pool:
        yield pool
