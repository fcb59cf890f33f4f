"""Training loop: configuration, run directories, checkpoints, resume.

A run lives in ``runs/<run_id>/`` of the store: ``config.json`` (configuration, data
fingerprints, code version), ``metrics.jsonl`` (one line per epoch) and
``checkpoints/{best,last}.pt``. Checkpoints hold only tensors and plain Python values, so
``torch.load(path, weights_only=True)`` reads them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from cmcl_model.data import (
    PairBatch,
    PairDataset,
    PlateNorm,
    UniqueCompoundBatchSampler,
    collate_pairs,
    load_or_create_split,
)
from cmcl_model.encoders import GINEncoder, ImageEncoder, ProfileEncoder
from cmcl_model.losses import GICLoss, ggim_loss, hard_negatives, mgm_loss
from cmcl_model.metrics import hit101
from cmcl_model.model import CMCLModel
from pipeline.store import Store

__all__ = ["TrainConfig", "build_model", "build_loss", "train", "load_model", "load_checkpoint", "new_run_id", "resolve_device"]

Device = Literal["auto", "cpu", "cuda"]


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the type ``hint`` of a :class:`TrainConfig` field."""
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, a, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] + (" (or null)" if type(None) in args else ""))
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a JSON list, e.g. [64, 128], got {value!r}")
        inner = args[0]
        if len(args) != 2 or args[1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"{where} must be a list of {len(args)} numbers, got {value!r}")
        return [_coerce(v, inner, where) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise ValueError(f"{where} must be text, got {value!r}")
    return value


@dataclass(frozen=True)
class TrainConfig:
    """Every hyper-parameter of a training run. Defaults are paper-like (MIGA) sizes.

    Use :meth:`quick` (tests, ~30 s on ~80 compounds) or :meth:`demo` (CPU demo, ~5 min on
    ~600 compounds of 32 px crops) for small machines.
    """

    # optimisation
    epochs: int = 100
    batch_size: int = 256
    crops_per_sample: int = 4
    lr: float = 3e-4
    weight_decay: float = 1e-5
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    device: Device = "auto"
    seed: int = 0
    # graph encoder
    gin_layers: int = 5
    gin_hidden: int = 300
    gin_dropout: float = 0.1
    gin_jk: Literal["last", "sum", "concat"] = "last"
    gin_pooling: Literal["mean", "sum", "attention"] = "mean"
    # image encoder
    cnn_widths: tuple[int, ...] = (64, 128, 256, 512)
    cnn_blocks: int = 2
    cnn_stem_stride: int = 1
    proj_dim: int = 128
    # losses
    temperature: float = 0.1
    learnable_temperature: bool = False
    margin: float = 0.4
    infonce_weight: float = 0.9
    margin_weight: float = 0.1
    mgm_weight: float = 0.0
    mask_rate: float = 0.15
    ggim_weight: float = 0.0
    # data
    #: 'crops' (single cells, the default), 'tiles' (field tiles; ingest with a field tile size) or
    #: 'profiles' (CellProfiler well profiles, cmcl's own or imported: cmcl_model/profile_data.py)
    image_source: Literal["crops", "tiles", "profiles"] = "crops"
    #: profile mode: which well profiles to pair ('all', 'cmcl' = `cmcl profile`'s, 'imported')
    profile_sources: Literal["all", "cmcl", "imported"] = "all"
    #: profile mode: 'within_source' draws each batch (its negatives) from one source/lab
    negatives: Literal["any", "within_source"] = "any"
    #: profile mode: hidden widths of the profile MLP (its last width is the image feature size)
    mlp_widths: tuple[int, ...] = (512, 256)
    mlp_dropout: float = 0.1
    #: profile mode: features per profile, set by `train` from the data (0 = not yet known)
    profile_features: int = 0
    augment: bool = True
    jitter: float = 0.05
    log1p: bool = True
    norm_crops: int = 1024
    cache_mb: int = 256
    num_workers: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    eval_batch_size: int = 256
    # stopping
    max_minutes: float | None = None
    max_steps: int | None = None
    patience: int | None = None
    #: also write ``last.pt`` every this many optimizer steps inside an epoch (crash safety)
    checkpoint_every_steps: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "crops_per_sample", "gin_layers", "gin_hidden", "proj_dim", "cnn_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"TrainConfig.batch_size must be >= 2 for a contrastive loss, got {self.batch_size}")
        if self.checkpoint_every_steps is not None and self.checkpoint_every_steps < 1:
            raise ValueError(f"TrainConfig.checkpoint_every_steps must be >= 1 or None, got {self.checkpoint_every_steps}")
        if self.image_source not in ("crops", "tiles", "profiles"):
            raise ValueError(f"TrainConfig.image_source={self.image_source!r} is not one of 'crops', 'tiles', 'profiles'")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"TrainConfig.device={self.device!r} is not one of 'auto', 'cpu', 'cuda'")
        object.__setattr__(self, "cnn_widths", tuple(int(w) for w in self.cnn_widths))
        object.__setattr__(self, "mlp_widths", tuple(int(w) for w in self.mlp_widths))
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))

    @classmethod
    def quick(cls, **overrides: Any) -> "TrainConfig":
        """Tiny model for tests: ~30 s on ~80 compounds on 2 CPU cores."""
        base = dict(
            epochs=20, batch_size=32, crops_per_sample=2, lr=2e-3, weight_decay=1e-4, warmup_epochs=1.0,
            gin_layers=2, gin_hidden=64, gin_dropout=0.0, cnn_widths=(8, 16, 32), cnn_blocks=1, proj_dim=32,
            eval_batch_size=64, norm_crops=256, cache_mb=64,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def demo(cls, **overrides: Any) -> "TrainConfig":
        """CPU demo: 32 px crops, ~600 compounds, ~4-5 minutes on 2 cores.

        Measured on the generated 2-plate demo store (482 train / 68 val compounds, loaded
        2-core machine, 6-minute cap): the former preset (batch 64, CNN 16-128, lr 1e-3) made
        14 steps and stayed at chance (val Hit@10 0.14, chance 0.147); this one (batch 32,
        CNN 16-64, lr 2e-3: ~2x the steps, each ~2x cheaper) reached val Hit@10 0.23 after
        one epoch.
        """
        base = dict(
            epochs=25, batch_size=32, crops_per_sample=4, lr=2e-3, weight_decay=1e-4, warmup_epochs=1.0,
            gin_layers=3, gin_hidden=128, gin_dropout=0.1, cnn_widths=(16, 32, 64), cnn_blocks=1,
            cnn_stem_stride=2, proj_dim=128, eval_batch_size=128, max_minutes=6.0,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def parse_overrides(cls, items: list[str]) -> dict[str, Any]:
        """``['epochs=10', 'lr=1e-3']`` (``--set`` values) -> typed field overrides.

        Values are read as JSON where they parse (``10``, ``1e-3``, ``true``, ``null``,
        ``[0.8, 0.1, 0.1]``), else as text, then checked against the field's type.

        Raises
        ------
        ValueError
            Naming the ``--set`` item: not ``KEY=VALUE``, an unknown key (the message lists the
            valid keys), or a value of the wrong type or outside a field's choices.
        """
        import typing

        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        out: dict[str, Any] = {}
        for item in items:
            if "=" not in item:
                raise ValueError(f"--set {item!r} is not KEY=VALUE (e.g. --set epochs=10)")
            key, text = (s.strip() for s in item.split("=", 1))
            if key not in hints:
                raise ValueError(f"--set {item!r}: unknown key {key!r}; valid keys: {', '.join(names)}")
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
            out[key] = _coerce(value, hints[key], f"--set {item!r}: {key}")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# --------------------------------------------------------------------------------------------
def resolve_device(device: Device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but CUDA is not available")
    return torch.device(device)


def build_model(config: TrainConfig) -> CMCLModel:
    """The model described by ``config`` (random init from the current torch RNG)."""
    gin = GINEncoder(
        config.gin_layers, config.gin_hidden, dropout=config.gin_dropout, jk=config.gin_jk, pooling=config.gin_pooling
    )
    if config.image_source == "profiles":
        if config.profile_features < 1:
            raise ValueError("profile mode needs TrainConfig.profile_features (set by `train` from the profiles)")
        cnn = ProfileEncoder(config.profile_features, config.mlp_widths, dropout=config.mlp_dropout)
    else:
        cnn = ImageEncoder(5, config.cnn_widths, blocks=config.cnn_blocks, stem_stride=config.cnn_stem_stride)
    return CMCLModel(gin, cnn, proj_dim=config.proj_dim, mgm=config.mgm_weight > 0, ggim=config.ggim_weight > 0)


def build_loss(config: TrainConfig) -> GICLoss:
    return GICLoss(
        temperature=config.temperature,
        learnable_temperature=config.learnable_temperature,
        margin=config.margin,
        infonce_weight=config.infonce_weight,
        margin_weight=config.margin_weight,
    )


def new_run_id(salt: str = "") -> str:
    """Time-sortable run id ``YYYYmmdd-HHMMSS-<6 hex>`` (UTC)."""
    now = time.time()
    h = hashlib.sha1(f"{now!r}{salt}{os.getpid()}".encode()).hexdigest()[:6]
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + h


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_fingerprints(store: Store, plates: list[str]) -> dict[str, str]:
    """Content hashes of the tables a run reads and of the crop arrays' metadata."""
    out: dict[str, str] = {}
    for name in ("compound_inputs", "well_compounds", "graphs", "split", "platemap", "cells"):
        for p in store.table_files(name):
            out[str(p.relative_to(store.root))] = _file_sha256(p)
    for plate in plates:
        meta = store.crops_zarr(plate) / "zarr.json"
        if meta.exists():
            out[str(meta.relative_to(store.root))] = _file_sha256(meta)
        arr_meta = store.crops_zarr(plate) / "crops" / "zarr.json"
        if arr_meta.exists():
            out[str(arr_meta.relative_to(store.root))] = _file_sha256(arr_meta)
    return out


def code_version() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("cmcl")
    except PackageNotFoundError:
        v = None
    commit = None
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        commit = res.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cmcl": v, "git_commit": commit, "torch": torch.__version__}


# --------------------------------------------------------------------------------------------
def _split_keys(store: Store, dataset_keys: list[str], config: TrainConfig) -> dict[str, list[str]]:
    comps = store.read("compounds")[["Metadata_InChIKey", "Metadata_Scaffold"]]
    comps = comps[comps["Metadata_InChIKey"].isin(set(dataset_keys))]
    split = load_or_create_split(store, comps, fractions=config.split_fractions, seed=config.split_seed)
    keys = set(dataset_keys)
    return {
        s: sorted(k for k in split.loc[split["Split"] == s, "Metadata_InChIKey"] if k in keys)
        for s in ("train", "val", "test")
    }


def _datasets(store: Store, config: TrainConfig, saved_norm: Mapping[str, Any] | None):
    """(full, train, val or None, split keys) datasets of ``config.image_source``."""
    if config.image_source == "profiles":
        from cmcl_model.profile_data import ProfileDataset, ProfileNorm

        norm = None if saved_norm is None else {p: ProfileNorm.from_dict(d) for p, d in saved_norm.items()}
        full = ProfileDataset(store.root, sources=config.profile_sources, profiles_per_sample=config.crops_per_sample,
                              negatives=config.negatives, normalization=norm, jitter=config.jitter, seed=config.seed)
        splits = _split_keys(store, full.keys, config)
        if len(splits["train"]) < 2:
            raise ValueError(f"store {store.root} has {len(splits['train'])} training compounds; need at least 2")
        val = full.subset(splits["val"]) if len(splits["val"]) >= 2 else None
        return full, full.subset(splits["train"], augment=config.augment), val, splits
    norm = None if saved_norm is None else {p: PlateNorm.from_dict(d) for p, d in saved_norm.items()}
    common = dict(
        crops_per_sample=config.crops_per_sample, jitter=config.jitter, log1p=config.log1p,
        norm_crops=config.norm_crops, cache_bytes=config.cache_mb * 2**20, seed=config.seed,
        source=config.image_source,
    )
    full = PairDataset(store.root, normalization=norm, **common)
    splits = _split_keys(store, full.keys, config)
    if len(splits["train"]) < 2:
        raise ValueError(f"store {store.root} has {len(splits['train'])} training compounds; need at least 2")
    train_ds = PairDataset(store.root, keys=splits["train"], augment=config.augment, normalization=full.normalization, **common)
    val_ds = (
        PairDataset(store.root, keys=splits["val"], augment=False, normalization=full.normalization, **common)
        if len(splits["val"]) >= 2
        else None
    )
    return full, train_ds, val_ds, splits


def _batch_sampler(ds, batch_size: int, config: TrainConfig, *, shuffle: bool, drop_last: bool):
    """Batches with no compound twice (profile mode: optionally within one source, see ``negatives``)."""
    if config.image_source == "profiles":
        return ds.batch_sampler(batch_size, shuffle=shuffle, drop_last=drop_last, seed=config.seed)
    return UniqueCompoundBatchSampler(ds.keys, batch_size, shuffle=shuffle, drop_last=drop_last, seed=config.seed)


def _lr_at(step: int, total: int, warmup: int, config: TrainConfig) -> float:
    if warmup > 0 and step < warmup:
        return config.lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    t = min(max(t, 0.0), 1.0)
    lo = config.lr * config.min_lr_ratio
    return lo + 0.5 * (config.lr - lo) * (1 + math.cos(math.pi * t))


def _mask_atoms(x: torch.Tensor, rate: float, mask_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a random ``rate`` of atoms (at least one) by mask tokens -> (masked x, mask bool)."""
    mask = torch.rand(x.size(0)) < rate
    if not mask.any():
        mask[torch.randint(x.size(0), (1,))] = True
    mask = mask.to(x.device)
    xm = x.clone()
    xm[mask] = mask_index.to(x.device)
    return xm, mask


@contextlib.contextmanager
def _frozen_running_stats(module: torch.nn.Module) -> Iterator[None]:
    """Batch norm inside uses batch statistics but leaves its running statistics untouched.

    The masked-graph (MGM) pass must not move them: evaluation sees unmasked graphs, and
    running statistics that mix in mask tokens made validation loss climb above chance while
    the training loss fell (demo store, seed 1: test Hit@10 0.22 -> 0.52 with this guard).
    """
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def compute_losses(
    model: CMCLModel, loss_fn: GICLoss, batch: PairBatch, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor]:
    """Total loss of a batch, its parts, and the (graph, image) embeddings."""
    g = model.embed_graphs(batch.graphs)
    i = model.embed_images(batch.crops)
    loss, parts = loss_fn(g, i)
    if config.mgm_weight > 0 and model.training:
        gr = batch.graphs
        xm, mask = _mask_atoms(gr.x, config.mask_rate, model.graph_encoder.atom_encoder.mask_index)
        with _frozen_running_stats(model.graph_encoder):
            nodes = model.graph_encoder.node_forward(xm, gr.edge_index, gr.edge_attr)
        logits = model.mgm_logits(nodes[mask], gr.batch[mask], i)
        lm = mgm_loss(logits, gr.x[mask, 0])
        loss = loss + config.mgm_weight * lm
        parts["mgm"] = float(lm.detach())
    if config.ggim_weight > 0 and model.training:
        gn, inn = torch.nn.functional.normalize(g, dim=-1), torch.nn.functional.normalize(i, dim=-1)
        sim = gn @ inn.T
        neg_img = hard_negatives(sim)  # for each graph a, a hard image
        neg_gra = hard_negatives(sim.T)  # for each image b, a hard graph
        pos = model.ggim_logits(g, i)
        neg = model.ggim_logits(torch.cat([g, g[neg_gra]]), torch.cat([i[neg_img], i]))
        lg = ggim_loss(pos, neg)
        loss = loss + config.ggim_weight * lg
        parts["ggim"] = float(lg.detach())
    return loss, parts, g, i


@torch.no_grad()
def _validate(model, loss_fn, loader, device, config) -> dict[str, float]:
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


def _checkpoint(model, loss_fn, optimizer, config, dataset, position, best, bad_epochs, epoch_acc, epoch_parts) -> dict[str, Any]:
    return {
        "format": 1,
        "model": model.state_dict(),
        "loss": loss_fn.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": config.to_dict(),
        "normalization": {p: n.to_dict() for p, n in dataset.normalization.items()},
        "position": dict(position),
        "best": best,
        "bad_epochs": bad_epochs,
        "epoch_acc": list(epoch_acc),
        "epoch_parts": dict(epoch_parts),
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Drop metric rows of epochs after ``epochs_done`` (a kill between writing an epoch's row
    and its ``last.pt`` would otherwise repeat that epoch's row after a resume)."""
    if not path.exists():
        return
    lines = [l for l in path.read_text().splitlines() if l.strip()]
    keep = []
    for l in lines:
        try:
            row = json.loads(l)
        except json.JSONDecodeError:  # a half-written last line
            break
        if int(row.get("epoch", 0)) <= epochs_done:
            keep.append(l)
    if len(keep) != len(lines):
        _atomic_write_text("".join(k + "\n" for k in keep), path)


_RESUME_FREE = {
    "max_steps", "max_minutes", "num_workers", "device", "eval_batch_size", "cache_mb", "checkpoint_every_steps",
    "profile_features",
}


def train(
    store_root: str | os.PathLike,
    config: TrainConfig,
    *,
    run_id: str | None = None,
    progress: bool | Callable[[int, int, str], None] = True,
    resume: bool = False,
) -> Path:
    """Train a :class:`CMCLModel` on the treatment compounds of a store.

    Parameters
    ----------
    store_root : path
        The cmcl store; ``tables/split.parquet`` is created (scaffold split) if absent.
    config : TrainConfig
    run_id : str, optional
        Default: a new time-sortable id. Required with ``resume=True``.
    progress : bool or callable
        True: show a rich progress bar; a callable ``progress(step, total_steps, info)`` is
        called after every step instead (e.g. ``flows.progress.StepProgress.update``-like).
    resume : bool
        Continue ``runs/<run_id>`` from ``checkpoints/last.pt`` exactly where it stopped
        (same next batch, optimizer state and RNG state). ``config`` must equal the stored
        one except for stopping limits, workers and device.

    Returns
    -------
    Path of the run directory.

    Raises
    ------
    ValueError
        If the store has too few training compounds, or on a resume mismatch.
    FileNotFoundError
        If resuming a run without ``last.pt``.
    """
    store = Store(Path(store_root))
    if resume and run_id is None:
        raise ValueError("resume=True needs the run_id of the run to continue")
    run_id = run_id or new_run_id(json.dumps(config.to_dict(), sort_keys=True))
    run_dir = store.run_dir(run_id)
    ckpt_dir = run_dir / "checkpoints"
    state = None
    if resume:
        last = ckpt_dir / "last.pt"
        if not last.exists():
            raise FileNotFoundError(f"cannot resume: {last} does not exist")
        state = torch.load(last, weights_only=True, map_location="cpu")
        stored = state["config"]
        stored = TrainConfig.from_dict(stored).to_dict()  # fields added since take their defaults
        diff = sorted(k for k, v in config.to_dict().items() if k not in _RESUME_FREE and stored.get(k) != v)
        if diff:
            raise ValueError(f"cannot resume {run_id}: config differs from the stored one in {diff}")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"run directory {run_dir} already exists; pass resume=True or a new run_id")

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)

    full, train_ds, val_ds, splits = _datasets(store, config, None if state is None else state["normalization"])
    if config.image_source == "profiles":
        config = dataclasses.replace(config, profile_features=full.n_features)
    bs = min(config.batch_size, len(train_ds))
    sampler = _batch_sampler(train_ds, bs, config, shuffle=True, drop_last=True)
    loader_kw = dict(collate_fn=collate_pairs, num_workers=config.num_workers, pin_memory=device.type == "cuda")
    train_loader = DataLoader(train_ds, batch_sampler=sampler, generator=torch.Generator().manual_seed(config.seed), **loader_kw)
    val_loader = (
        DataLoader(
            val_ds,
            batch_sampler=_batch_sampler(val_ds, min(config.eval_batch_size, len(val_ds)), config, shuffle=False, drop_last=False),
            generator=torch.Generator().manual_seed(config.seed),
            **loader_kw,
        )
        if val_ds is not None
        else None
    )

    model = build_model(config).to(device)
    loss_fn = build_loss(config).to(device)
    params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = len(sampler.batches())
    total_steps = steps_per_epoch * config.epochs
    warmup = int(round(config.warmup_epochs * steps_per_epoch))

    position = {"epoch": 0, "batch": 0, "step": 0}
    best, bad_epochs = None, 0
    epoch_acc = [0.0, 0]  # sum of batch losses, batches, this epoch
    epoch_parts: dict[str, float] = {}  # sum of each loss term (infonce, margin, mgm, ggim) this epoch
    if state is not None:
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        position = dict(state["position"])
        best, bad_epochs = state["best"], state["bad_epochs"]
        epoch_acc = list(state["epoch_acc"])
        epoch_parts = dict(state.get("epoch_parts", {}))
        torch.set_rng_state(state["rng_torch"])
        if state.get("rng_cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        _truncate_metrics(run_dir / "metrics.jsonl", position["epoch"])
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        meta = {
            "run_id": run_id,
            "config": config.to_dict(),
            "data": {
                "store": str(store.root.resolve()),
                "fingerprints": data_fingerprints(store, full.plates),
                "dataset": full.fingerprint(),
                "n_compounds": {k: len(v) for k, v in splits.items()},
                # treatment compounds the split does not cover (0: the split grows with new compounds)
                "n_unsplit": len(full) - sum(len(v) for v in splits.values()),
            },
            "code": code_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _atomic_write_text(json.dumps(meta, indent=2), run_dir / "config.json")

    use_amp = device.type == "cuda"
    t_start = time.monotonic()
    deadline = t_start + 60 * config.max_minutes if config.max_minutes else None
    metrics_path = run_dir / "metrics.jsonl"

    def save(name: str) -> None:
        _atomic_save(
            _checkpoint(model, loss_fn, optimizer, config, full, position, best, bad_epochs, epoch_acc, epoch_parts),
            ckpt_dir / name
        )

    bar = None
    tick = progress if callable(progress) else None
    if progress and tick is None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True)
        bar.start()
        task = bar.add_task("train", total=total_steps, completed=position["step"], info="")
    stopped = None
    try:
        model.train()
        while position["epoch"] < config.epochs and stopped is None:
            epoch = position["epoch"]
            t_epoch = time.monotonic()
            train_ds.set_epoch(epoch)
            sampler.set_epoch(epoch, start_batch=position["batch"])
            n_samples = 0
            for batch in train_loader:
                batch = batch.to(device)
                lr = _lr_at(position["step"], total_steps, warmup, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss, parts, _, _ = compute_losses(model, loss_fn, batch, config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                epoch_acc[0] += float(loss.detach())
                epoch_acc[1] += 1
                for name, value in parts.items():
                    epoch_parts[name] = epoch_parts.get(name, 0.0) + value
                n_samples += len(batch)
                position["batch"] += 1
                position["step"] += 1
                if bar is not None:
                    bar.update(task, advance=1, info=f"epoch {epoch + 1}/{config.epochs} loss {float(loss):.3f}")
                elif tick is not None:
                    tick(position["step"], total_steps, f"epoch {epoch + 1}/{config.epochs} loss {float(loss.detach()):.3f}")
                if config.max_steps is not None and position["step"] >= config.max_steps:
                    stopped = "max_steps"
                elif deadline is not None and time.monotonic() > deadline:
                    stopped = "max_minutes"
                if stopped:
                    break
                every = config.checkpoint_every_steps
                if every and position["step"] % every == 0 and position["batch"] < steps_per_epoch:
                    save("last.pt")  # mid-epoch crash point: a SIGKILL loses at most `every` steps
            if stopped and position["batch"] < steps_per_epoch:
                save("last.pt")  # mid-epoch: resume continues with the next batch
                break
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": position["step"],
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": epoch_acc[0] / max(1, epoch_acc[1]),
                **{f"train_{name}": total / max(1, epoch_acc[1]) for name, total in sorted(epoch_parts.items())},
                "seconds": time.monotonic() - t_epoch,
                "train_samples_per_s": n_samples / max(1e-9, time.monotonic() - t_epoch),
            }
            if val_loader is not None:
                record.update(_validate(model, loss_fn, val_loader, device, config))
            score = record.get("val_mrr", -record["train_loss"])
            improved = best is None or score > best
            if improved:
                best, bad_epochs = score, 0
            else:
                bad_epochs += 1
            position = {"epoch": epoch + 1, "batch": 0, "step": position["step"]}
            epoch_acc, epoch_parts = [0.0, 0], {}
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if improved:
                save("best.pt")
            save("last.pt")
            if config.patience is not None and bad_epochs >= config.patience:
                stopped = "early_stopping"
    finally:
        if bar is not None:
            bar.stop()
    if not (ckpt_dir / "best.pt").exists() and (ckpt_dir / "last.pt").exists():
        # stopped before the first epoch ended: the only weights there are are the best ones
        _atomic_save(torch.load(ckpt_dir / "last.pt", weights_only=True), ckpt_dir / "best.pt")
    return run_dir


def load_checkpoint(run_dir: str | os.PathLike, which: Literal["best", "last"] = "best") -> dict[str, Any]:
    """Read ``checkpoints/<which>.pt`` with ``weights_only=True``."""
    if which not in ("best", "last"):
        raise ValueError(f"which={which!r} is not one of 'best', 'last'")
    path = Path(run_dir) / "checkpoints" / f"{which}.pt"
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, weights_only=True, map_location="cpu")


def load_model(run_dir: str | os.PathLike, which: Literal["best", "last"] = "best") -> tuple[CMCLModel, TrainConfig]:
    """Rebuild the model of a run and load its weights; returns (model in eval mode, config)."""
    ckpt = load_checkpoint(run_dir, which)
    config = TrainConfig.from_dict(ckpt["config"])
    model = build_model(config)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, config
