"""A fine-tuning run that survives being stopped: its state after each epoch, on disk.

:func:`cmcl_model.finetune.run.finetune_once` with a ``state_path`` writes, after every epoch,
everything the next epoch depends on: the model's and the optimizer's state, the batch-order
generator's and torch's global random state (dropout), the curves and the best epoch so far,
and the seconds spent. Started again with the same path and key, it continues from the epoch
after the last one saved and ends with the numbers an uninterrupted run gives (tested). The
transfer benchmark uses it so that a cell of 30-60 minutes stopped by the end of a session is
not started over (``benchmarks/finetune.py --partial-dir``).

A state written for another key (another cell, or the same cell under other fine-tuning code)
is ignored and replaced.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["LoopState", "save_state", "load_state"]


@dataclass
class LoopState:
    """What a fine-tuning loop carries from one epoch to the next (besides the model, the
    optimizer and the random generators)."""

    epoch: int = 0  # epochs done
    curve: dict[str, list[float]] = field(default_factory=lambda: {"val": [], "test": []})
    best: tuple = (math.nan, -1, None, None)  # val, epoch, test, per-task test
    best_state: dict[str, Any] | None = None  # model weights at the best epoch (early stopping)
    bad: int = 0  # epochs since validation last improved
    last_test: float = math.nan
    last_per: list | None = None
    wall_s: float = 0.0  # seconds spent by earlier, stopped runs

    def record(self, epoch: int, val: float, test: float, per: list | None, *, better: bool,
               weights: dict[str, Any] | None = None) -> None:
        """Epoch ``epoch`` (0-based) scored ``val`` and ``test`` (``per``: per task); ``better``:
        ``val`` beat the best so far (``weights``: the model's state then, for early stopping)."""
        self.curve["val"].append(val)
        self.curve["test"].append(test)
        self.last_test, self.last_per = test, per
        if better:
            self.best, self.bad = (val, epoch, test, per), 0
            self.best_state = weights if weights is not None else self.best_state
        else:
            self.bad += 1
        self.epoch = epoch + 1


def save_state(path: str | os.PathLike, key: str, state: LoopState, model: torch.nn.Module,
               opt: torch.optim.Optimizer, generator: torch.Generator) -> None:
    """Write ``state`` with the model, optimizer and random states to ``path`` (atomically: a
    stop while writing leaves the previous epoch's state)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"key": key, "loop": state.__dict__, "model": model.state_dict(), "opt": opt.state_dict(),
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)


def load_state(path: str | os.PathLike, key: str, model: torch.nn.Module, opt: torch.optim.Optimizer,
               generator: torch.Generator) -> LoopState | None:
    """The loop state saved at ``path`` for ``key``, with the model, optimizer and random states
    restored in place; None (nothing restored) when there is none, or it was written for another
    key, or it cannot be read."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a truncated or foreign file: start over
        return None
    if not isinstance(saved, dict) or saved.get("key") != key:
        return None
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    return LoopState(**saved["loop"])
