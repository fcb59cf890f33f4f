"""Checkpoints of a training run: where they live, what they hold, writing and reading them.

A run's checkpoints are ``runs/<run_id>/checkpoints/{best,last}.pt``
(:func:`cmcl_model.train.layout.checkpoint_path` is the one place that spells it). They hold only tensors and plain Python values, so
``torch.load(path, weights_only=True)`` reads them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from cmcl_model.nn.model import CMCLModel
from cmcl_model.train.build import build_model
from cmcl_model.train.config import TrainConfig
from cmcl_model.train.layout import Which, checkpoint_path

__all__ = ["checkpoint_state", "save_checkpoint", "load_checkpoint",
           "load_model"]

def checkpoint_state(model: torch.nn.Module, loss_fn: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     config: TrainConfig, normalization: Mapping[str, Any], *, position: Mapping[str, int],
                     best: float | None, bad_epochs: int, epoch_acc: Sequence[float],
                     epoch_parts: Mapping[str, float]) -> dict[str, Any]:
    """Everything a resume needs (format 1): weights, optimizer, config, per-plate normalization,
    the loop's position and running sums, and the torch RNG states."""
    return {
        "format": 1,
        "model": model.state_dict(),
        "loss": loss_fn.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": config.to_dict(),
        "normalization": {p: n.to_dict() for p, n in normalization.items()},
        "position": dict(position),
        "best": best,
        "bad_epochs": bad_epochs,
        "epoch_acc": list(epoch_acc),
        "epoch_parts": dict(epoch_parts),
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename (a kill leaves the old file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(dict(state), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(run_dir: str | os.PathLike, which: Which = "best") -> dict[str, Any]:
    """Read ``checkpoints/<which>.pt`` with ``weights_only=True`` onto the CPU.

    Raises
    ------
    ValueError
        On an unknown ``which``.
    FileNotFoundError
        If the checkpoint does not exist.
    """
    path = checkpoint_path(run_dir, which)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, weights_only=True, map_location="cpu")


def load_model(run_dir: str | os.PathLike, which: Which = "best") -> tuple[CMCLModel, TrainConfig]:
    """Rebuild the model of a run and load its weights; returns (model in eval mode, config)."""
    ckpt = load_checkpoint(run_dir, which)
    config = TrainConfig.from_dict(ckpt["config"])
    model = build_model(config)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, config
