"""Worker processes for the chemistry stage: one pool recipe and one way to cut work into parts.

Standardization (:mod:`pipeline.chem.standardize`) and graph building (:mod:`pipeline.chem.graphs`)
send SMILES strings to worker processes and get strings or arrays back (RDKit objects never
cross processes). Both take their pool from :func:`chem_pool` and their parts from
:func:`split_evenly`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

import numpy as np

from pipeline.ingest.pool import pool_context, process_pool

__all__ = ["WORKER_MODULES", "chem_pool", "split_evenly", "check_n_jobs"]

T = TypeVar("T")

#: Modules every worker imports once, before its first task (RDKit and the worker functions).
WORKER_MODULES: tuple[str, ...] = ("pipeline.chem.standardize", "pipeline.chem.graphs")


def chem_pool(n_jobs: int) -> ProcessPoolExecutor:
    """A pool of ``n_jobs`` worker processes; forkserver (thread-safe, unlike fork) with
    :data:`WORKER_MODULES` preloaded."""
    return process_pool(n_jobs, pool_context(list(WORKER_MODULES)))


def split_evenly(items: Sequence[T], parts: int) -> list[Sequence[T]]:
    """``items`` cut into at most ``parts`` consecutive slices of near-equal length, in order;
    empty slices are left out (fewer items than parts gives one slice per item)."""
    bounds = np.linspace(0, len(items), parts + 1).astype(int)
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def check_n_jobs(n_jobs: int) -> None:
    """Raise ``ValueError`` naming ``n_jobs`` unless it is a positive int."""
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive int, got {n_jobs!r}")
