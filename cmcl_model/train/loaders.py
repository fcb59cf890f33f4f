"""The data of a training run: the split's datasets, the global batch sampler and this process's loaders."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cmcl_model.data.crops import PlateNorm
from cmcl_model.data.pairs import PairDataset, UniqueCompoundBatchSampler, collate_pairs
from cmcl_model.data.split import load_or_create_split
from cmcl_model.train.config import TrainConfig
from cmcl_model.train.distributed import DistContext, ShardedBatches
from pipeline.store.paths import Store

__all__ = ["TrainData", "build_data", "split_keys", "make_datasets", "batch_sampler"]


@dataclass
class TrainData:
    """A run's datasets and loaders: ``full`` (all compounds: normalization, fingerprint),
    ``splits`` (split name -> InChIKeys), the global ``sampler`` of training batches, the training
    dataset and loader (this rank's share), and the validation loader (rank 0 only; None without
    enough validation compounds)."""

    full: Dataset
    splits: dict[str, list[str]]
    sampler: Sampler
    train_ds: Dataset
    train_loader: DataLoader
    val_loader: DataLoader | None


def split_keys(store: Store, dataset_keys: list[str], config: TrainConfig) -> dict[str, list[str]]:
    """Split name -> sorted InChIKeys of ``dataset_keys`` (the store's split, created or extended)."""
    comps = store.read("compounds")[["Metadata_InChIKey", "Metadata_Scaffold"]]
    comps = comps[comps["Metadata_InChIKey"].isin(set(dataset_keys))]
    split = load_or_create_split(store, comps, fractions=config.split_fractions, seed=config.split_seed)
    keys = set(dataset_keys)
    return {
        s: sorted(k for k in split.loc[split["Split"] == s, "Metadata_InChIKey"] if k in keys)
        for s in ("train", "val", "test")
    }


def _need_training_compounds(store: Store, splits: dict[str, list[str]]) -> None:
    if len(splits["train"]) < 2:
        raise ValueError(f"store {store.root} has {len(splits['train'])} training compounds; need at least 2")


def _profile_datasets(store: Store, config: TrainConfig, saved_norm: Mapping[str, Any] | None):
    from cmcl_model.data.profiles import ProfileDataset, ProfileNorm

    norm = None if saved_norm is None else {p: ProfileNorm.from_dict(d) for p, d in saved_norm.items()}
    full = ProfileDataset(store, sources=config.profile_sources, profiles_per_sample=config.crops_per_sample,
                          negatives=config.negatives, normalization=norm, jitter=config.jitter, seed=config.seed)
    splits = split_keys(store, full.keys, config)
    _need_training_compounds(store, splits)
    val = full.subset(splits["val"]) if len(splits["val"]) >= 2 else None
    return full, full.subset(splits["train"], augment=config.augment), val, splits


def make_datasets(store: Store, config: TrainConfig, saved_norm: Mapping[str, Any] | None):
    """(full, train, val or None, split keys) datasets of ``config.image_source``.

    ``saved_norm`` (a checkpoint's ``normalization``) is reused instead of recomputing statistics.

    Raises
    ------
    ValueError
        If the split leaves fewer than 2 training compounds.
    """
    if config.image_source == "profiles":
        return _profile_datasets(store, config, saved_norm)
    norm = None if saved_norm is None else {p: PlateNorm.from_dict(d) for p, d in saved_norm.items()}
    common = dict(
        crops_per_sample=config.crops_per_sample, jitter=config.jitter, log1p=config.log1p,
        norm_crops=config.norm_crops, cache_bytes=config.cache_mb * 2**20, seed=config.seed,
        source=config.image_source, exclude_padded_crops=config.exclude_padded_crops,
    )
    full = PairDataset(store, normalization=norm, **common)
    splits = split_keys(store, full.keys, config)
    _need_training_compounds(store, splits)
    train_ds = PairDataset(store, keys=splits["train"], augment=config.augment, normalization=full.normalization, **common)
    val_ds = (
        PairDataset(store, keys=splits["val"], augment=False, normalization=full.normalization, **common)
        if len(splits["val"]) >= 2
        else None
    )
    return full, train_ds, val_ds, splits


def batch_sampler(ds, batch_size: int, config: TrainConfig, *, shuffle: bool, drop_last: bool) -> Sampler:
    """Batches with no compound twice (profile mode: optionally within one source, see ``negatives``)."""
    if config.image_source == "profiles":
        return ds.batch_sampler(batch_size, shuffle=shuffle, drop_last=drop_last, seed=config.seed)
    return UniqueCompoundBatchSampler(ds.keys, batch_size, shuffle=shuffle, drop_last=drop_last, seed=config.seed)


def build_data(store: Store, config: TrainConfig, state: Mapping[str, Any] | None, device: torch.device,
               ctx: DistContext | None) -> TrainData:
    """Datasets, the global batch sampler and this rank's loaders (``state``: a resumed checkpoint).

    Raises
    ------
    ValueError
        If the batch size is not a multiple of the number of processes, or too few training compounds.
    """
    full, train_ds, val_ds, splits = make_datasets(store, config, None if state is None else state["normalization"])
    bs = min(config.batch_size, len(train_ds))
    world = 1 if ctx is None else ctx.world_size
    if bs % world:
        raise ValueError(f"batch_size {bs} cannot be split over {world} processes; set batch_size to a multiple of {world}")
    sampler = batch_sampler(train_ds, bs, config, shuffle=True, drop_last=True)
    batches = sampler if ctx is None else ShardedBatches(sampler, rank=ctx.rank, world_size=world)
    loader_kw = dict(collate_fn=collate_pairs, num_workers=config.num_workers, pin_memory=device.type == "cuda",
                     persistent_workers=config.num_workers > 0)
    train_loader = DataLoader(train_ds, batch_sampler=batches, generator=torch.Generator().manual_seed(config.seed), **loader_kw)
    val_loader = None
    if val_ds is not None and (ctx is None or ctx.is_main):
        val_batches = batch_sampler(val_ds, min(config.eval_batch_size, len(val_ds)), config, shuffle=False, drop_last=False)
        val_loader = DataLoader(val_ds, batch_sampler=val_batches, generator=torch.Generator().manual_seed(config.seed), **loader_kw)
    return TrainData(full, splits, sampler, train_ds, train_loader, val_loader)
