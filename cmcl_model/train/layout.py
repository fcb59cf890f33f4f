"""Where a training run's files live (torch-free): ``runs/<run_id>/`` holds ``config.json``,
``metrics.jsonl`` and ``checkpoints/{best,last}.pt``, as ``schemas/store.json`` declares them (the
same entries :class:`pipeline.store.paths.Store`'s ``run_config``, ``run_metrics`` and
``checkpoint`` read), taken relative to the run folder so any run directory can be given."""

from __future__ import annotations

import functools
import os
import typing
from pathlib import Path
from typing import Literal

__all__ = ["Which", "CHECKPOINTS", "checkpoint_path", "metrics_path", "config_path"]

#: ``best``: the epoch with the best validation score; ``last``: where the run stopped (resume)
Which = Literal["best", "last"]
CHECKPOINTS: tuple[str, ...] = typing.get_args(Which)


@functools.cache
def _in_run(key: str) -> str:
    """The path template of store entry ``key`` relative to its run folder (``runs/{run}/``)."""
    from pipeline.store.schema import store_layout  # read when a path is first asked for

    paths = store_layout()["paths"]
    prefix, template = paths["runs"]["path"], paths[key]["path"]
    if not template.startswith(prefix):
        raise RuntimeError(f"schemas/store.json: {key!r} ({template}) is not inside the run folder {prefix}")
    return template[len(prefix):]


def checkpoint_path(run_dir: str | os.PathLike, which: Which = "best") -> Path:
    """``<run_dir>/checkpoints/<which>.pt``.

    Raises
    ------
    ValueError
        If ``which`` is not one of :data:`CHECKPOINTS`.
    """
    if which not in CHECKPOINTS:
        raise ValueError(f"which={which!r} is not one of {', '.join(map(repr, CHECKPOINTS))}")
    return Path(run_dir) / _in_run("checkpoint").format(which=which)


def metrics_path(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/metrics.jsonl``: one JSON object per finished epoch."""
    return Path(run_dir) / _in_run("run_metrics")


def config_path(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/config.json``: the run's configuration, data fingerprints and code version."""
    return Path(run_dir) / _in_run("run_config")
