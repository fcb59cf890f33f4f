"""Where a training run's files live, declared once (torch-free): ``runs/<run_id>/`` holds
``config.json``, ``metrics.jsonl`` and ``checkpoints/{best,last}.pt``."""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Literal

__all__ = ["Which", "CHECKPOINTS", "checkpoint_path", "metrics_path", "config_path"]

#: ``best``: the epoch with the best validation score; ``last``: where the run stopped (resume)
Which = Literal["best", "last"]
CHECKPOINTS: tuple[str, ...] = typing.get_args(Which)


def checkpoint_path(run_dir: str | os.PathLike, which: Which = "best") -> Path:
    """``<run_dir>/checkpoints/<which>.pt``.

    Raises
    ------
    ValueError
        If ``which`` is not one of :data:`CHECKPOINTS`.
    """
    if which not in CHECKPOINTS:
        raise ValueError(f"which={which!r} is not one of {', '.join(map(repr, CHECKPOINTS))}")
    return Path(run_dir) / "checkpoints" / f"{which}.pt"


def metrics_path(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/metrics.jsonl``: one JSON object per finished epoch."""
    return Path(run_dir) / "metrics.jsonl"


def config_path(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/config.json``: the run's configuration, data fingerprints and code version."""
    return Path(run_dir) / "config.json"
