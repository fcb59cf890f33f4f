"""The training loop: one optimizer step, one epoch, validation, and :func:`train` tying them to a run.

Configuration is :mod:`cmcl_model.train.config`'s, the objectives :mod:`cmcl_model.train.objectives`',
the data :mod:`cmcl_model.train.loaders`', the run directory :mod:`cmcl_model.train.rundir`'s and
checkpoints :mod:`cmcl_model.train.checkpoints`'.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmcl_model.data.pairs import PairBatch
from cmcl_model.evaluation.metrics import hit101
from cmcl_model.nn.losses import GICLoss
from cmcl_model.nn.model import CMCLModel
from cmcl_model.train.build import amp_dtype, build_model, resolve_device
from cmcl_model.train.checkpoints import checkpoint_state, save_checkpoint
from cmcl_model.train.config import TrainConfig
from cmcl_model.train.distributed import DistContext, any_rank, broadcast_object, convert_batchnorm, init_from_env
from cmcl_model.train.layout import checkpoint_path, metrics_path
from cmcl_model.train.loaders import TrainData, build_data
from cmcl_model.train.objectives import build_loss, compute_losses
from cmcl_model.train.rundir import note_resume, open_run, truncate_metrics, write_run_config
from pipeline.store.paths import Store

__all__ = ["train", "lr_at", "train_step", "validate", "LoopState"]

#: ``progress(step, total_steps, info)``, called after every optimizer step (rank 0)
StepCallback = Callable[[int, int, str], None]


def lr_at(step: int, total: int, warmup: int, config: TrainConfig) -> float:
    """Learning rate at optimizer ``step``: linear warm-up over ``warmup`` steps, then cosine
    decay to ``config.lr * config.min_lr_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return config.lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    t = min(max(t, 0.0), 1.0)
    lo = config.lr * config.min_lr_ratio
    return lo + 0.5 * (config.lr - lo) * (1 + math.cos(math.pi * t))


@torch.no_grad()
def validate(model: CMCLModel, loss_fn: GICLoss, loader, device: torch.device, config: TrainConfig) -> dict[str, float]:
    """Validation loss and hit101 retrieval (seed 0) of the ``val_*`` metrics; {} without a batch of 2."""
    model.eval()
    losses, gs, ims = [], [], []
    for batch in loader:
        if len(batch) < 2:
            continue
        batch = batch.to(device)
        loss, _, g, i = compute_losses(model, loss_fn, batch, config)
        losses.append((float(loss), len(batch)))
        gs.append(g.float().cpu())
        ims.append(i.float().cpu())
    model.train()
    if not gs:
        return {}
    g, i = torch.cat(gs).numpy(), torch.cat(ims).numpy()
    out = {"val_loss": sum(l * n for l, n in losses) / sum(n for _, n in losses)}
    if len(g) >= 2:
        res, ncand = hit101(g, i, seeds=(0,))
        for d, r in res.items():
            for m in ("hit@1", "hit@10", "mrr"):
                out[f"val_{d}_{m}"] = r[m]
        out["val_hit@10"] = 0.5 * (res["graph_to_image"]["hit@10"] + res["image_to_graph"]["hit@10"])
        out["val_mrr"] = 0.5 * (res["graph_to_image"]["mrr"] + res["image_to_graph"]["mrr"])
        out["val_n_candidates"] = ncand
    return out


def _build_trainable(config: TrainConfig, device: torch.device, state: dict[str, Any] | None,
                     ctx: DistContext | None) -> tuple[CMCLModel, torch.nn.Module, GICLoss, list, torch.optim.Optimizer]:
    """(model, the module the step calls: the model or its DDP wrapper, loss, parameters, optimizer)."""
    model = build_model(config)
    if state is not None:
        model.load_state_dict(state["model"])
    model = model.to(device)
    if ctx is not None:
        convert_batchnorm(model, ctx)
    loss_fn = build_loss(config).to(device)
    if state is not None:
        loss_fn.load_state_dict(state["loss"])
    params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    step_model: torch.nn.Module = model
    if ctx is not None:
        with warnings.catch_warnings():  # broadcast_buffers=False is what we mean (batch norm is global already)
            warnings.simplefilter("ignore", FutureWarning)
            step_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
            )
    return model, step_model, loss_fn, params, optimizer


def train_step(step_model: torch.nn.Module, loss_fn: GICLoss, optimizer: torch.optim.Optimizer, params: list,
               scaler: torch.amp.GradScaler | None, batch: PairBatch, config: TrainConfig, *, step: int, lr: float,
               ctx: DistContext | None, amp: torch.dtype | None) -> tuple[float, dict[str, float]]:
    """One optimizer step on this rank's share of a global batch -> (global loss, its parts).

    Dropout draws from the torch RNG seeded by (seed, step, rank), so a resumed run redraws
    exactly what an uninterrupted one drew.
    """
    torch.manual_seed(int(np.random.SeedSequence((config.seed, step, 2, 0 if ctx is None else ctx.rank)).generate_state(1)[0]))
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss, parts, _, _ = compute_losses(step_model, loss_fn, batch, config, step=step, ctx=ctx, amp=amp)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return float(loss.detach()), parts


@dataclass
class LoopState:
    """Where the loop stands: next batch, early-stopping score, this epoch's running sums."""

    position: dict[str, int] = dataclasses.field(default_factory=lambda: {"epoch": 0, "batch": 0, "step": 0})
    best: float | None = None
    bad_epochs: int = 0
    epoch_acc: list = dataclasses.field(default_factory=lambda: [0.0, 0])  # sum of batch losses, batches
    epoch_parts: dict[str, float] = dataclasses.field(default_factory=dict)  # sum of each loss term

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> "LoopState":
        return cls(dict(state["position"]), state["best"], state["bad_epochs"], list(state["epoch_acc"]),
                   dict(state.get("epoch_parts", {})))

    def add_step(self, loss: float, parts: dict[str, float]) -> None:
        self.epoch_acc[0] += loss
        self.epoch_acc[1] += 1
        for name, value in parts.items():
            self.epoch_parts[name] = self.epoch_parts.get(name, 0.0) + value
        self.position["batch"] += 1
        self.position["step"] += 1

    def epoch_means(self) -> dict[str, float]:
        n = max(1, self.epoch_acc[1])
        return {"train_loss": self.epoch_acc[0] / n,
                **{f"train_{name}": total / n for name, total in sorted(self.epoch_parts.items())}}

    def end_epoch(self, score: float) -> bool:
        """Close the epoch with its validation ``score`` (higher is better); True if it improved."""
        improved = self.best is None or score > self.best
        if improved:
            self.best, self.bad_epochs = score, 0
        else:
            self.bad_epochs += 1
        self.position = {"epoch": self.position["epoch"] + 1, "batch": 0, "step": self.position["step"]}
        self.epoch_acc, self.epoch_parts = [0.0, 0], {}
        return improved


@dataclass
class _Run:
    """One process's view of a training run: its data, model, optimizer and loop state."""

    store: Store
    config: TrainConfig
    run_dir: Path
    device: torch.device
    amp: torch.dtype | None
    ctx: DistContext | None
    data: TrainData
    model: CMCLModel
    step_model: torch.nn.Module
    loss_fn: GICLoss
    params: list
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    st: LoopState
    steps_per_epoch: int

    @property
    def main(self) -> bool:
        return self.ctx is None or self.ctx.is_main

    @property
    def world(self) -> int:
        return 1 if self.ctx is None else self.ctx.world_size

    def save(self, which: str) -> None:
        """Write checkpoint ``which`` ('best' or 'last'; rank 0 only)."""
        if not self.main:
            return
        st = self.st
        ckpt = checkpoint_state(self.model, self.loss_fn, self.optimizer, self.config, self.data.full.normalization,
                                position=st.position, best=st.best, bad_epochs=st.bad_epochs,
                                epoch_acc=st.epoch_acc, epoch_parts=st.epoch_parts)
        if self.scaler is not None:
            ckpt["scaler"] = self.scaler.state_dict()
        save_checkpoint(ckpt, checkpoint_path(self.run_dir, which))


def _start_run(store: Store, config: TrainConfig, run_id: str | None, resume: bool) -> _Run:
    """Open (or resume) the run, seed, build data, model and optimizer, write or note ``config.json``."""
    device = resolve_device(config.device)
    amp = amp_dtype(config.precision, device)
    ctx = init_from_env(device)
    if ctx is not None and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    run_id, state = open_run(store, config, run_id, resume, ctx)
    run_dir = store.run_dir(run_id)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    data = build_data(store, config, state, device, ctx)
    if config.image_source == "profiles":  # the MLP's input width comes from the data
        config = dataclasses.replace(config, profile_features=data.full.n_features)
    model, step_model, loss_fn, params, optimizer = _build_trainable(config, device, state, ctx)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    steps_per_epoch = len(data.sampler.batches())
    st = LoopState() if state is None else LoopState.from_checkpoint(state)
    run = _Run(store, config, run_dir, device, amp, ctx, data, model, step_model, loss_fn, params, optimizer,
               scaler, st, steps_per_epoch)
    if state is not None:
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if run.main:
            truncate_metrics(metrics_path(run_dir), st.position["epoch"])
            note_resume(run_dir, run.world, st.position["step"])
    elif run.main:
        write_run_config(store, run_dir, run_id, config, plates=data.full.plates,
                         dataset_fingerprint=data.full.fingerprint(), splits=data.splits, n_keys=len(data.full),
                         world_size=run.world)
    return run


def _epoch_steps(run: _Run, on_step: StepCallback, deadline: float | None) -> tuple[int, str | None]:
    """The optimizer steps of the current epoch from its next batch -> (samples seen, stop reason or None)."""
    config, st = run.config, run.st
    position = st.position
    epoch = position["epoch"]
    total_steps = run.steps_per_epoch * config.epochs
    warmup = int(round(config.warmup_epochs * run.steps_per_epoch))
    run.data.train_ds.set_epoch(epoch)
    run.data.sampler.set_epoch(epoch, start_batch=position["batch"])
    n_samples, stopped = 0, None
    for batch in run.data.train_loader:
        batch = batch.to(run.device)
        lr = lr_at(position["step"], total_steps, warmup, config)
        loss, parts = train_step(run.step_model, run.loss_fn, run.optimizer, run.params, run.scaler, batch, config,
                                 step=position["step"], lr=lr, ctx=run.ctx, amp=run.amp)
        st.add_step(loss, parts)
        n_samples += len(batch) * run.world
        on_step(position["step"], total_steps, f"epoch {epoch + 1}/{config.epochs} loss {loss:.3f}")
        if config.max_steps is not None and position["step"] >= config.max_steps:
            stopped = "max_steps"
        elif deadline is not None and any_rank(time.monotonic() > deadline, run.ctx):
            stopped = "max_minutes"
        if stopped:
            break
        every = config.checkpoint_every_steps
        if every and position["step"] % every == 0 and position["batch"] < run.steps_per_epoch:
            run.save("last")  # mid-epoch crash point: a SIGKILL loses at most `every` steps
    return n_samples, stopped


def _run_epoch(run: _Run, on_step: StepCallback, deadline: float | None) -> str | None:
    """Train the rest of the current epoch, validate, log, checkpoint -> stop reason or None."""
    t_epoch = time.monotonic()
    position = run.st.position
    epoch = position["epoch"]
    n_samples, stopped = _epoch_steps(run, on_step, deadline)
    if stopped and position["batch"] < run.steps_per_epoch:
        run.save("last")  # mid-epoch: resume continues with the next batch
        return stopped
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "step": position["step"],
        "lr": run.optimizer.param_groups[0]["lr"],
        **run.st.epoch_means(),
        "seconds": time.monotonic() - t_epoch,
        "train_samples_per_s": n_samples / max(1e-9, time.monotonic() - t_epoch),
    }
    if run.data.val_loader is not None:
        record.update(validate(run.model, run.loss_fn, run.data.val_loader, run.device, run.config))
    record = broadcast_object(record, run.ctx)  # type: ignore[assignment]  # rank 0's validation decides
    improved = run.st.end_epoch(record.get("val_mrr", -record["train_loss"]))
    if run.main:
        with open(metrics_path(run.run_dir), "a") as f:
            f.write(json.dumps(record) + "\n")
    if improved:
        run.save("best")
    run.save("last")
    if stopped is None and run.config.patience is not None and run.st.bad_epochs >= run.config.patience:
        stopped = "early_stopping"
    return stopped


def _progress_bar(total: int, completed: int):
    """(rich Progress, task id) of the training bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeRemainingColumn(), transient=True)
    bar.start()
    return bar, bar.add_task("train", total=total, completed=completed, info="")


def train(
    store: Store,
    config: TrainConfig,
    *,
    run_id: str | None = None,
    progress: bool | StepCallback = True,
    resume: bool = False,
) -> Path:
    """Train a :class:`CMCLModel` on the treatment compounds of a store.

    Run under torchrun (or inside an initialised process group) this is one rank of a
    data-parallel run (:mod:`cmcl_model.train.distributed`): the global batch ``config.batch_size`` is
    split over the ranks, losses see the whole global batch, batch norm uses its statistics, and
    rank 0 alone writes the run directory; N ranks follow one process's loss curve.

    Parameters
    ----------
    store : Store
        The cmcl store; ``tables/split.parquet`` is created (scaffold split) if absent.
    config : TrainConfig
    run_id : str, optional
        Default: a new time-sortable id. Required with ``resume=True``.
    progress : bool or callable
        True: show a rich progress bar; a callable ``progress(step, total_steps, info)`` is
        called after every step instead (rank 0 only).
    resume : bool
        Continue ``runs/<run_id>`` from ``checkpoints/last.pt`` exactly where it stopped
        (same next batch, optimizer state and random draws), with any number of processes.
        ``config`` must equal the stored one except for stopping limits, workers and device.

    Returns
    -------
    Path of the run directory.

    Raises
    ------
    ValueError
        If the store has too few training compounds, on a resume mismatch, or if the batch
        size is not a multiple of the number of processes.
    FileNotFoundError
        If resuming a run without ``last.pt``.
    """
    run = _start_run(store, config, run_id, resume)
    config = run.config
    total_steps = run.steps_per_epoch * config.epochs
    tick = progress if callable(progress) and run.main else None
    bar, task = (_progress_bar(total_steps, run.st.position["step"]) if progress and run.main and tick is None
                 else (None, None))

    def on_step(step: int, total: int, info: str) -> None:
        if bar is not None:
            bar.update(task, advance=1, info=info)
        elif tick is not None:
            tick(step, total, info)

    deadline = time.monotonic() + 60 * config.max_minutes if config.max_minutes else None
    stopped = None
    try:
        run.model.train()
        while run.st.position["epoch"] < config.epochs and stopped is None:
            stopped = _run_epoch(run, on_step, deadline)
    finally:
        if bar is not None:
            bar.stop()
    best, last = checkpoint_path(run.run_dir, "best"), checkpoint_path(run.run_dir, "last")
    if run.main and not best.exists() and last.exists():
        # stopped before the first epoch ended: the only weights there are are the best ones
        save_checkpoint(torch.load(last, weights_only=True), best)
    broadcast_object(None, run.ctx)  # every rank returns once rank 0's files are written
    return run.run_dir
