"""Training loop: configuration, run directories, checkpoints, resume.

A run lives in ``runs/<run_id>/`` of the store: ``config.json`` (configuration, data
fingerprints, code version), ``metrics.jsonl`` (one line per epoch) and
``checkpoints/{best,last}.pt``. Checkpoints hold only tensors and plain Python values, so
``torch.load(path, weights_only=True)`` reads them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from cmcl_model.data.pairs import (
    PairBatch,
    PairDataset,
    PlateNorm,
    UniqueCompoundBatchSampler,
    collate_pairs,
    load_or_create_split,
)
from cmcl_model.nn.encoders import GINEncoder, ImageEncoder, ProfileEncoder
from cmcl_model.train.distributed import (
    DistContext,
    ShardedBatches,
    all_reduce_sum,
    any_rank,
    broadcast_object,
    convert_batchnorm,
    gather_counts,
    gather_rows,
    init_from_env,
)
from cmcl_model.nn.losses import GICLoss, ggim_loss, hard_negatives
from cmcl_model.evaluation.metrics import hit101
from cmcl_model.nn.model import CMCLModel
from pipeline.store.atomic import write_text_atomic
from pipeline.store.paths import Store

__all__ = ["TrainConfig", "build_model", "build_loss", "amp_dtype", "train", "load_model", "load_checkpoint", "new_run_id", "resolve_device"]

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


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
    #: 'auto' (bf16 autocast on CUDA, fp32 on CPU), 'fp32', 'bf16' (autocast, CPU or CUDA) or
    #: 'fp16' (CUDA autocast with a gradient scaler)
    precision: Precision = "auto"
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
    #: 'profiles' (CellProfiler well profiles, cmcl's own or imported: cmcl_model/data/profiles.py)
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
    #: leave out crops zero-padded at the field's edge (cells table ``Metadata_CropPadded``).
    #: Default False: they are whole, measured cells (their features and profiles include
    #: them), the padding is the CNN's own zero, and evaluation embeds every crop
    exclude_padded_crops: bool = False
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
        if not isinstance(self.exclude_padded_crops, bool):
            raise ValueError(f"TrainConfig.exclude_padded_crops must be true or false, got {self.exclude_padded_crops!r}")
        if self.image_source not in ("crops", "tiles", "profiles"):
            raise ValueError(f"TrainConfig.image_source={self.image_source!r} is not one of 'crops', 'tiles', 'profiles'")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"TrainConfig.precision={self.precision!r} is not one of 'auto', 'fp32', 'bf16', 'fp16'")
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
        from cmcl_model.data.profiles import ProfileDataset, ProfileNorm

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
        source=config.image_source, exclude_padded_crops=config.exclude_padded_crops,
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


def _step_generator(seed: int, step: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded by (run seed, optimizer step, stream): the loss's random choices are a
    pure function of the step, the same in every process of a data-parallel run."""
    state = int(np.random.SeedSequence((seed, step, stream)).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(state)


def _mask_atoms(
    x: torch.Tensor, rate: float, mask_index: torch.Tensor, *, generator: torch.Generator, ctx: DistContext | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a random ``rate`` of atoms (at least one) by mask tokens -> (masked x, mask bool).

    The draw covers the atoms of the global batch (every rank's, in rank order) and each rank
    keeps its own rows, so N processes mask exactly the atoms one process would.
    """
    counts = gather_counts(x.size(0), ctx, device=x.device)
    total, offset = sum(counts), sum(counts[: 0 if ctx is None else ctx.rank])
    mask = torch.rand(total, generator=generator) < rate
    if not mask.any():
        mask[torch.randint(total, (1,), generator=generator)] = True
    mask = mask[offset:offset + x.size(0)].to(x.device)
    xm = x.clone()
    xm[mask] = mask_index.to(x.device)
    return xm, mask


def compute_losses(
    model: torch.nn.Module,
    loss_fn: GICLoss,
    batch: PairBatch,
    config: TrainConfig,
    *,
    step: int = 0,
    ctx: DistContext | None = None,
    amp: torch.dtype | None = None,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor]:
    """Total loss of a batch, its parts, and this process's (graph, image) embeddings.

    ``model`` is a :class:`CMCLModel` or its DDP wrapper. With ``ctx`` (a data-parallel run) the
    contrastive and matching terms are computed on the embeddings of the global batch
    (:func:`~cmcl_model.train.distributed.gather_rows`); the MGM term is a sum over ranks, so its
    gradient here is scaled by the number of ranks (DDP averages). The returned loss's *value*
    is the global batch's loss on every rank. ``step`` seeds the MGM masks and GGIM negatives;
    ``amp`` is the autocast dtype of the encoders' forward (losses run in float32).
    """
    core = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    training = core.training
    mgm, ggim = config.mgm_weight > 0 and training, config.ggim_weight > 0 and training
    gr = batch.graphs
    xm = mask = None
    if mgm:
        gen = _step_generator(config.seed, step, 0)
        xm, mask = _mask_atoms(gr.x, config.mask_rate, core.graph_encoder.atom_encoder.mask_index, generator=gen, ctx=ctx)
    with torch.autocast(gr.x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        g, i, nodes = model(gr, batch.crops, masked_x=xm)
    g, i = g.float(), i.float()
    gg, ii = gather_rows(g, ctx), gather_rows(i, ctx)
    loss, parts = loss_fn(gg, ii)
    if mgm:
        logits = core.mgm_logits(nodes.float()[mask], gr.batch[mask], i)
        n_masked = float(sum(gather_counts(int(mask.sum()), ctx, device=mask.device)))
        local = torch.nn.functional.cross_entropy(logits, gr.x[mask, 0].long(), reduction="sum") / n_masked
        value = all_reduce_sum(local.detach(), ctx)
        scale = 1 if ctx is None else ctx.world_size
        lm = value + scale * (local - local.detach())  # value: the global mean; gradient: scale x this rank's part
        loss = loss + config.mgm_weight * lm
        parts["mgm"] = float(value)
    if ggim:
        gen = _step_generator(config.seed, step, 1, gg.device)
        sim = torch.nn.functional.normalize(gg, dim=-1) @ torch.nn.functional.normalize(ii, dim=-1).T
        neg_img = hard_negatives(sim, generator=gen)  # for each graph a, a hard image
        neg_gra = hard_negatives(sim.T, generator=gen)  # for each image b, a hard graph
        pos = core.ggim_logits(gg, ii)
        neg = core.ggim_logits(torch.cat([gg, gg[neg_gra]]), torch.cat([ii[neg_img], ii]))
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
        write_text_atomic("".join(k + "\n" for k in keep), path)


_RESUME_FREE = {
    "max_steps", "max_minutes", "num_workers", "device", "eval_batch_size", "cache_mb", "checkpoint_every_steps",
    "profile_features",
}


def amp_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None: float32 throughout)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs CUDA (it needs a gradient scaler); on CPU use --set precision=bf16")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _check_run(store: Store, config: TrainConfig, run_id: str | None, resume: bool) -> str:
    """The run id to use, after checking that the run can start or resume (see :func:`train`)."""
    if resume and run_id is None:
        raise ValueError("resume=True needs the run_id of the run to continue")
    run_id = run_id or new_run_id(json.dumps(config.to_dict(), sort_keys=True))
    run_dir = store.run_dir(run_id)
    if resume:
        last = run_dir / "checkpoints" / "last.pt"
        if not last.exists():
            raise FileNotFoundError(f"cannot resume: {last} does not exist")
        stored = torch.load(last, weights_only=True, map_location="cpu")["config"]
        stored = TrainConfig.from_dict(stored).to_dict()  # fields added since take their defaults
        diff = sorted(k for k, v in config.to_dict().items() if k not in _RESUME_FREE and stored.get(k) != v)
        if diff:
            raise ValueError(f"cannot resume {run_id}: config differs from the stored one in {diff}")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"run directory {run_dir} already exists; pass resume=True or a new run_id")
    return run_id


def _open_run(store: Store, config: TrainConfig, run_id: str | None, resume: bool,
              ctx: DistContext | None) -> tuple[str, dict[str, Any] | None]:
    """(run id, resumed checkpoint or None); rank 0 decides and every rank follows (or raises its error)."""
    error: Exception | None = None
    if ctx is None or ctx.is_main:
        try:
            run_id = _check_run(store, config, run_id, resume)
        except (ValueError, FileNotFoundError) as exc:
            error = exc
    run_id, error = broadcast_object((run_id, error), ctx)  # type: ignore[misc]
    if error is not None:
        raise error
    assert run_id is not None
    last = store.run_dir(run_id) / "checkpoints" / "last.pt"
    return run_id, torch.load(last, weights_only=True, map_location="cpu") if resume else None


@dataclass
class _Data:
    full: PairDataset
    splits: dict[str, list[str]]
    sampler: UniqueCompoundBatchSampler
    train_ds: PairDataset
    train_loader: DataLoader
    val_loader: DataLoader | None


def _build_data(store: Store, config: TrainConfig, state: dict[str, Any] | None, device: torch.device,
                ctx: DistContext | None) -> _Data:
    """Datasets, the global batch sampler and this rank's loaders."""
    full, train_ds, val_ds, splits = _datasets(store, config, None if state is None else state["normalization"])
    bs = min(config.batch_size, len(train_ds))
    world = 1 if ctx is None else ctx.world_size
    if bs % world:
        raise ValueError(f"batch_size {bs} cannot be split over {world} processes; set batch_size to a multiple of {world}")
    sampler = _batch_sampler(train_ds, bs, config, shuffle=True, drop_last=True)
    batches = sampler if ctx is None else ShardedBatches(sampler, rank=ctx.rank, world_size=world)
    loader_kw = dict(collate_fn=collate_pairs, num_workers=config.num_workers, pin_memory=device.type == "cuda",
                     persistent_workers=config.num_workers > 0)
    train_loader = DataLoader(train_ds, batch_sampler=batches, generator=torch.Generator().manual_seed(config.seed), **loader_kw)
    val_loader = None
    if val_ds is not None and (ctx is None or ctx.is_main):
        val_batches = _batch_sampler(val_ds, min(config.eval_batch_size, len(val_ds)), config, shuffle=False, drop_last=False)
        val_loader = DataLoader(val_ds, batch_sampler=val_batches, generator=torch.Generator().manual_seed(config.seed), **loader_kw)
    return _Data(full, splits, sampler, train_ds, train_loader, val_loader)


def _write_run_config(store: Store, run_dir: Path, run_id: str, config: TrainConfig, data: _Data, world_size: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "run_id": run_id,
        "config": config.to_dict(),
        "world_size": world_size,
        "data": {
            "store": str(store.root.resolve()),
            "fingerprints": data_fingerprints(store, data.full.plates),
            "dataset": data.full.fingerprint(),
            "n_compounds": {k: len(v) for k, v in data.splits.items()},
            # treatment compounds the split does not cover (0: the split grows with new compounds)
            "n_unsplit": len(data.full) - sum(len(v) for v in data.splits.values()),
        },
        "code": code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_text_atomic(json.dumps(meta, indent=2), run_dir / "config.json")


def _note_resume(run_dir: Path, world_size: int, step: int) -> None:
    """Append ``{"world_size", "step"}`` to config.json's ``resumes`` (a run may resume on other hardware)."""
    path = run_dir / "config.json"
    if path.is_file():
        meta = json.loads(path.read_text())
        meta.setdefault("resumes", []).append({"world_size": world_size, "step": step})
        write_text_atomic(json.dumps(meta, indent=2), path)


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


def _train_step(step_model: torch.nn.Module, loss_fn: GICLoss, optimizer: torch.optim.Optimizer, params: list,
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
class _LoopState:
    """Where the loop stands: next batch, early-stopping score, this epoch's running sums."""

    position: dict[str, int] = dataclasses.field(default_factory=lambda: {"epoch": 0, "batch": 0, "step": 0})
    best: float | None = None
    bad_epochs: int = 0
    epoch_acc: list = dataclasses.field(default_factory=lambda: [0.0, 0])  # sum of batch losses, batches
    epoch_parts: dict[str, float] = dataclasses.field(default_factory=dict)  # sum of each loss term

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> "_LoopState":
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


def _progress_bar(total: int, completed: int):
    """(rich Progress, task id) of the training bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeRemainingColumn(), transient=True)
    bar.start()
    return bar, bar.add_task("train", total=total, completed=completed, info="")


def train(
    store_root: str | os.PathLike,
    config: TrainConfig,
    *,
    run_id: str | None = None,
    progress: bool | Callable[[int, int, str], None] = True,
    resume: bool = False,
) -> Path:
    """Train a :class:`CMCLModel` on the treatment compounds of a store.

    Run under torchrun (or inside an initialised process group) this is one rank of a
    data-parallel run (:mod:`cmcl_model.train.distributed`): the global batch ``config.batch_size`` is
    split over the ranks, losses see the whole global batch, batch norm uses its statistics, and
    rank 0 alone writes the run directory; N ranks follow one process's loss curve.

    Parameters
    ----------
    store_root : path
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
    store = Store(Path(store_root))
    device = resolve_device(config.device)
    amp = amp_dtype(config.precision, device)
    ctx = init_from_env(device)
    if ctx is not None and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    main = ctx is None or ctx.is_main
    world = 1 if ctx is None else ctx.world_size
    run_id, state = _open_run(store, config, run_id, resume, ctx)
    run_dir = store.run_dir(run_id)
    ckpt_dir = run_dir / "checkpoints"
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)

    data = _build_data(store, config, state, device, ctx)
    if config.image_source == "profiles":  # the MLP's input width comes from the data
        config = dataclasses.replace(config, profile_features=data.full.n_features)
    sampler = data.sampler
    model, step_model, loss_fn, params, optimizer = _build_trainable(config, device, state, ctx)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    steps_per_epoch = len(sampler.batches())
    total_steps = steps_per_epoch * config.epochs
    warmup = int(round(config.warmup_epochs * steps_per_epoch))

    st = _LoopState() if state is None else _LoopState.from_checkpoint(state)
    position = st.position
    if state is not None:
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if main:
            _truncate_metrics(run_dir / "metrics.jsonl", position["epoch"])
            _note_resume(run_dir, world, position["step"])
    elif main:
        _write_run_config(store, run_dir, run_id, config, data, world)

    t_start = time.monotonic()
    deadline = t_start + 60 * config.max_minutes if config.max_minutes else None
    metrics_path = run_dir / "metrics.jsonl"

    def save(name: str) -> None:
        if not main:
            return
        ckpt = _checkpoint(model, loss_fn, optimizer, config, data.full, st.position, st.best, st.bad_epochs,
                           st.epoch_acc, st.epoch_parts)
        if scaler is not None:
            ckpt["scaler"] = scaler.state_dict()
        _atomic_save(ckpt, ckpt_dir / name)

    tick = progress if callable(progress) and main else None
    bar, task = (_progress_bar(total_steps, position["step"]) if progress and main and tick is None
                 else (None, None))
    stopped = None
    try:
        model.train()
        while st.position["epoch"] < config.epochs and stopped is None:
            position = st.position
            epoch = position["epoch"]
            t_epoch = time.monotonic()
            data.train_ds.set_epoch(epoch)
            sampler.set_epoch(epoch, start_batch=position["batch"])
            n_samples = 0
            for batch in data.train_loader:
                batch = batch.to(device)
                lr = _lr_at(position["step"], total_steps, warmup, config)
                loss, parts = _train_step(step_model, loss_fn, optimizer, params, scaler, batch, config,
                                          step=position["step"], lr=lr, ctx=ctx, amp=amp)
                st.add_step(loss, parts)
                n_samples += len(batch) * world
                if bar is not None:
                    bar.update(task, advance=1, info=f"epoch {epoch + 1}/{config.epochs} loss {loss:.3f}")
                elif tick is not None:
                    tick(position["step"], total_steps, f"epoch {epoch + 1}/{config.epochs} loss {loss:.3f}")
                if config.max_steps is not None and position["step"] >= config.max_steps:
                    stopped = "max_steps"
                elif deadline is not None and any_rank(time.monotonic() > deadline, ctx):
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
                **st.epoch_means(),
                "seconds": time.monotonic() - t_epoch,
                "train_samples_per_s": n_samples / max(1e-9, time.monotonic() - t_epoch),
            }
            if data.val_loader is not None:
                record.update(_validate(model, loss_fn, data.val_loader, device, config))
            record = broadcast_object(record, ctx)  # type: ignore[assignment]  # rank 0's validation decides
            improved = st.end_epoch(record.get("val_mrr", -record["train_loss"]))
            if main:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            if improved:
                save("best.pt")
            save("last.pt")
            if config.patience is not None and st.bad_epochs >= config.patience:
                stopped = "early_stopping"
    finally:
        if bar is not None:
            bar.stop()
    if main and not (ckpt_dir / "best.pt").exists() and (ckpt_dir / "last.pt").exists():
        # stopped before the first epoch ended: the only weights there are are the best ones
        _atomic_save(torch.load(ckpt_dir / "last.pt", weights_only=True), ckpt_dir / "best.pt")
    broadcast_object(None, ctx)  # every rank returns once rank 0's files are written
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
