"""Training data from a cmcl store: (molecular graph, K single-cell crops) pairs.

One sample per *treatment* compound (plate-map ``Metadata_ControlType == 'trt'``; DMSO and
positive controls are never paired). Crops are read and normalised by :mod:`cmcl_model.data.crops`;
the split of compounds is :mod:`cmcl_model.data.split`'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler
from torch_geometric.data import Batch, Data

from cmcl_model.data.choices import CropSource
from cmcl_model.data.crops import ChunkedCropReader, PlateNorm, compute_normalization
from pipeline.chem.graphs import graphs_to_data
from pipeline.profiles.controls import mark_negcon, store_negcon
from pipeline.store.paths import CHANNELS, Store

__all__ = [
    "graphs_from_arrow",
    "treatment_crops",
    "REQUIRED_CHANNELS",
    "require_channels",
    "current_well_compounds",
    "PairDataset",
    "PairBatch",
    "collate_pairs",
    "UniqueCompoundBatchSampler",
]

# --------------------------------------------------------------------------------------------
# graphs
# --------------------------------------------------------------------------------------------
def graphs_from_arrow(table: pa.Table) -> dict[str, Data]:
    """Convert a ``graphs`` table (Arrow, declared schema) to ``{InChIKey: Data}``.

    A keyed view of :func:`pipeline.chem.graphs.graphs_to_data` (vectorised over the flat Arrow
    buffers). Each Data has ``x`` (n, 9) long, ``edge_index`` (2, E) long, ``edge_attr`` (E, 3)
    long.

    Raises
    ------
    ValueError
        If a row's list lengths disagree with ``num_nodes`` / ``num_edges``.
    """
    out: dict[str, Data] = {}
    for data in graphs_to_data(table):
        key = data.inchikey
        del data.inchikey  # batches carry tensors only
        out[key] = data
    return out


# --------------------------------------------------------------------------------------------
# which crops belong to which compound
# --------------------------------------------------------------------------------------------
#: The channels the image encoder is trained on, in this order: all five Cell Painting stains.
REQUIRED_CHANNELS: tuple[str, ...] = CHANNELS


def require_channels(store: Store, channels: tuple[str, ...] = REQUIRED_CHANNELS) -> None:
    """Refuse a store whose crops lack any of ``channels`` (plates ingested with a channel subset).

    Raises
    ------
    ValueError
        Naming each plate, the channels it has and the ones training needs.
    """
    import zarr

    bad = []
    for path in sorted((store.root / "crops").glob("*.zarr")):
        have = tuple(zarr.open_group(str(path), mode="r", zarr_format=3).attrs.get("channels", ()))
        if have != tuple(channels):
            bad.append(f"{path.name[:-5]} has {list(have)}")
    if bad:
        raise ValueError(f"training needs crops with channels {list(channels)} (the image encoder takes "
                         f"{len(channels)}-channel crops); " + "; ".join(bad) +
                         ". Ingest those plates with all five stains, or train on a store without them")


def current_well_compounds(store: Store, platemap: pd.DataFrame | None = None) -> pd.DataFrame:
    """The store's ``well_compounds`` table, checked to cover every named well of its plate maps.

    Raises
    ------
    pipeline.chem.parents.CompoundsOutOfDate
        If wells of some plates are not covered (ingested after the compounds stage ran, or
        re-ingested with a changed plate map); the message names the plates and what to run.
    """
    from pipeline.chem.parents import CompoundsOutOfDate, wells_without_compounds

    pm = store.read("platemap") if platemap is None else platemap
    wells = store.read("well_compounds")
    stale = wells_without_compounds(pm, wells)
    if len(stale):
        plates = sorted(set(stale["Metadata_Plate"]))
        raise CompoundsOutOfDate(
            f"{len(stale)} plate-map well(s) of plate(s) {', '.join(plates)} have no compound identity yet "
            f"(ingested after the compound table was built): run `cmcl compounds --store {store.root}` "
            f"first (`cmcl run` runs it for you)")
    return wells


def treatment_crops(store: Store, source: CropSource = "crops", *,
                    exclude_padded: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join plate maps, compound inputs and the image rows of ``source``.

    Parameters
    ----------
    source : {'crops', 'tiles'}
        Single-cell crops (rows of the ``cells`` table / ``crops`` array) or field tiles (rows
        of the ``tiles`` table / ``tiles`` array, written when ingesting with a field tile size).
    exclude_padded : bool
        Leave out crops flagged ``Metadata_CropPadded`` (their box crossed the field's edge and
        was zero-padded); field tiles are never padded, so it changes nothing for them.

    Returns
    -------
    trt : DataFrame
        One row per treatment image: Metadata_InChIKey, Metadata_Plate, Metadata_Well,
        Metadata_CropIndex (the row of the ``source`` array; sorted by key, plate, row).
    dmso : DataFrame
        One row per negative-control image: Metadata_Plate, Metadata_Well, Metadata_CropIndex.
        Negative controls are the wells :func:`pipeline.profiles.controls.mark_negcon` marks with
        the store's labels (:func:`pipeline.profiles.controls.store_negcon`: the last ``--negcon``
        given to it, else DMSO, negcon, vehicle, negative), matched against the plate map's control
        type and compound ID, as profiling does.

    Wells are joined to compounds by (plate, well) through the ``well_compounds`` table the
    compounds stage writes, never by SMILES text.

    Raises
    ------
    FileNotFoundError
        If ``source='tiles'`` and the store has no tiles table.
    ValueError
        If a plate's crops lack one of the channels training needs (:data:`REQUIRED_CHANNELS`),
        or with ``exclude_padded`` if a cells table predates ``Metadata_CropPadded``.
    pipeline.chem.parents.CompoundsOutOfDate
        If plate-map wells name structures the compound stage has not seen (plates ingested
        after it ran); the message says what to run.
    """
    if source not in ("crops", "tiles"):
        raise ValueError(f"image source {source!r} is not 'crops' or 'tiles'")
    require_channels(store)
    # the negative controls are the profiling step's (the store's --negcon labels, matched against
    # control type and compound ID), so a map that calls its DMSO wells 'vehicle' or leaves them
    # 'trt' neither trains on DMSO nor normalizes without it
    pm = mark_negcon(store.read("platemap"), store_negcon(store))
    if source == "tiles":
        if not store.table_files("tiles"):
            raise FileNotFoundError(f"store {store.root} has no tiles table; ingest with a field tile size "
                                    "(`cmcl ingest --field-tile-size 128`) to train on field tiles")
        images = store.read("tiles", ["Metadata_Plate", "Metadata_Well", "Metadata_TileIndex"]).rename(
            columns={"Metadata_TileIndex": "Metadata_CropIndex"})
    elif exclude_padded:
        images = _unpadded_cells(store)
    else:
        images = store.read("cells", ["Metadata_Plate", "Metadata_Well", "Metadata_CropIndex"])
    wells = current_well_compounds(store, pm)
    trt_wells = pm[pm["Metadata_ControlType"] == "trt"][["Metadata_Plate", "Metadata_Well"]].merge(
        wells[wells["Metadata_InChIKey"].notna()], on=["Metadata_Plate", "Metadata_Well"], how="inner"
    )[["Metadata_Plate", "Metadata_Well", "Metadata_InChIKey"]]
    trt = images.merge(trt_wells, on=["Metadata_Plate", "Metadata_Well"], how="inner")
    trt = trt.sort_values(["Metadata_InChIKey", "Metadata_Plate", "Metadata_CropIndex"], ignore_index=True)
    neg_wells = pm[pm["Metadata_ControlType"] == "negcon"][["Metadata_Plate", "Metadata_Well"]]
    dmso = images.merge(neg_wells, on=["Metadata_Plate", "Metadata_Well"], how="inner")
    return trt, dmso.sort_values(["Metadata_Plate", "Metadata_CropIndex"], ignore_index=True)


def _unpadded_cells(store: Store) -> pd.DataFrame:
    """Plate, well and crop row of every cell whose crop was not padded (``Metadata_CropPadded``)."""
    old = [p for p in store.table_files("cells") if "Metadata_CropPadded" not in pq.read_schema(p).names]
    if old:
        raise ValueError(f"cells table {old[0]} has no Metadata_CropPadded column (ingested before edge crops were "
                         f"padded); re-ingest its plate or train without exclude_padded_crops")
    cells = store.read("cells", ["Metadata_Plate", "Metadata_Well", "Metadata_CropIndex", "Metadata_CropPadded"])
    return cells.loc[~cells["Metadata_CropPadded"], ["Metadata_Plate", "Metadata_Well", "Metadata_CropIndex"]]


# --------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------
def _jitter(x: np.ndarray, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """Per crop and channel gain ``1 + jitter * N(0, 1)`` and offset ``jitter * N(0, 1)``."""
    if jitter <= 0:
        return x
    gain = 1 + jitter * rng.standard_normal((x.shape[0], x.shape[1], 1, 1)).astype(np.float32)
    bias = jitter * rng.standard_normal((x.shape[0], x.shape[1], 1, 1)).astype(np.float32)
    return x * gain + bias


class PairDataset(Dataset):
    """(graph, crops) pairs of treatment compounds.

    Parameters
    ----------
    store : Store
        The cmcl store.
    source : {'crops', 'tiles'}
        Train on single-cell crops (default) or on field tiles (see :func:`treatment_crops`).
    keys : sequence of str, optional
        InChIKeys to include (e.g. one split); default all treatment compounds with a graph.
    crops_per_sample : int
        K crops drawn (with replacement only when a compound has fewer than K) per item.
    augment : bool
        Flips, rotations, intensity jitter (training only).
    normalization : {plate: PlateNorm}, optional
        Reuse statistics (e.g. from a checkpoint); otherwise computed from DMSO crops at init
        (or from treatment crops on a plate without DMSO wells).
    seed : int
        Sampling is a pure function of (seed, epoch, index): ``set_epoch`` changes the draw, and
        the same item is identical in any worker or after a resume.
    exclude_padded_crops : bool
        Leave out crops whose box crossed the field's edge (zero-padded, flagged
        ``Metadata_CropPadded``; see :func:`treatment_crops`). Default False: they are kept.

    Item
    ----
    ``(Data, Tensor (K, C, S, S) float32)``.
    """

    def __init__(
        self,
        store: Store,
        *,
        source: CropSource = "crops",
        keys: Sequence[str] | None = None,
        crops_per_sample: int = 4,
        augment: bool = False,
        jitter: float = 0.05,
        normalization: Mapping[str, PlateNorm] | None = None,
        norm_crops: int = 1024,
        log1p: bool = True,
        cache_bytes: int = 128 * 2**20,
        seed: int = 0,
        exclude_padded_crops: bool = False,
    ) -> None:
        self.store = store
        if crops_per_sample < 1:
            raise ValueError(f"crops_per_sample must be >= 1, got {crops_per_sample}")
        self.crops_per_sample, self.augment, self.jitter, self.seed = crops_per_sample, augment, jitter, seed
        self.epoch = 0
        graphs_path = self.store.table_path("graphs")
        if not graphs_path.exists():
            raise FileNotFoundError(f"graphs table {graphs_path} is missing")
        graphs = graphs_from_arrow(pq.read_table(graphs_path))
        self.source = source
        trt, dmso = treatment_crops(self.store, source, exclude_padded=exclude_padded_crops)
        trt = trt[trt["Metadata_InChIKey"].isin(graphs.keys())]
        if keys is not None:
            trt = trt[trt["Metadata_InChIKey"].isin(set(keys))]
        if trt.empty:
            raise ValueError(f"no treatment {source} with graphs in store {self.store.root} (keys={None if keys is None else len(keys)})")
        self.plates: list[str] = sorted(trt["Metadata_Plate"].unique())
        plate_code = {p: j for j, p in enumerate(self.plates)}
        self.readers = {p: ChunkedCropReader(self.store.crops_zarr(p), cache_bytes=cache_bytes, array=source) for p in self.plates}
        self.keys: list[str] = sorted(trt["Metadata_InChIKey"].unique())
        self.graphs = [graphs[k] for k in self.keys]
        codes = trt["Metadata_Plate"].map(plate_code).to_numpy()
        rows = trt["Metadata_CropIndex"].to_numpy().astype(np.int64)
        wells = (trt["Metadata_Plate"] + "/" + trt["Metadata_Well"]).to_numpy()
        key_arr = trt["Metadata_InChIKey"].to_numpy()
        bounds = np.flatnonzero(np.r_[True, key_arr[1:] != key_arr[:-1], True])
        #: per compound: (n, 2) int64 array of (plate code, crop row), and well labels
        self.crops: list[np.ndarray] = []
        self.wells: list[np.ndarray] = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            self.crops.append(np.stack([codes[a:b], rows[a:b]], axis=1))
            self.wells.append(wells[a:b])
        if normalization is None:
            normalization = {}
            for p in self.plates:
                d = dmso.loc[dmso["Metadata_Plate"] == p, "Metadata_CropIndex"].to_numpy()
                if d.size == 0:
                    d = trt.loc[trt["Metadata_Plate"] == p, "Metadata_CropIndex"].to_numpy()
                normalization[p] = compute_normalization(
                    self.readers[p], d, max_crops=norm_crops, log1p=log1p, seed=seed
                )
                self.readers[p].clear_cache()  # DMSO chunks are not what training reads
        missing = [p for p in self.plates if p not in normalization]
        if missing:
            raise ValueError(f"normalization lacks plates {missing}")
        self.normalization: dict[str, PlateNorm] = {p: normalization[p] for p in self.plates}

    def __len__(self) -> int:
        return len(self.keys)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def read_crops(self, pairs: np.ndarray, *, rng: np.random.Generator | None = None) -> np.ndarray:
        """(k, 2) (plate code, row) -> (k, C, S, S) float32 normalised, in order.

        With ``rng`` each crop is also flipped and rotated: per crop, ``rng.random() < 0.5``
        flips columns, then ``rng.integers(4)`` quarter turns. The transforms are views of the
        uint16 crop that the normalisation table lookup reads, so augmentation costs no copy
        (normalisation is per pixel, so the order of the two does not change the result).
        """
        codes = pairs[:, 0]
        raw = None
        for code in np.unique(codes):
            sel = np.flatnonzero(codes == code)
            x = self.readers[self.plates[int(code)]].read(pairs[sel, 1])
            if raw is None:
                raw = np.empty((pairs.shape[0], *x.shape[1:]), x.dtype)
            raw[sel] = x
        out = np.empty(raw.shape, np.float32)
        for j in range(raw.shape[0]):
            crop = raw[j]
            if rng is not None:
                if rng.random() < 0.5:
                    crop = crop[:, :, ::-1]
                crop = np.rot90(crop, int(rng.integers(4)), axes=(1, 2))
            self.normalization[self.plates[int(codes[j])]].apply_into(crop, out[j])
        return out

    def __getitem__(self, index: int) -> tuple[Data, Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        pool = self.crops[index]
        k = self.crops_per_sample
        pick = rng.choice(len(pool), size=k, replace=len(pool) < k)
        if self.augment:
            x = _jitter(self.read_crops(pool[pick], rng=rng), rng, self.jitter)
        else:
            x = self.read_crops(pool[pick])
        return self.graphs[index], torch.from_numpy(np.ascontiguousarray(x))

    def well_crops(self, index: int, *, max_per_well: int = 16, seed: int = 0) -> list[Tensor]:
        """Un-augmented crops of compound ``index`` grouped by well: list of (n_w, C, S, S)."""
        rng = np.random.default_rng((seed, int(index)))
        out = []
        wells = self.wells[index]
        for w in np.unique(wells):
            sel = np.flatnonzero(wells == w)
            if sel.size > max_per_well:
                sel = np.sort(rng.choice(sel, size=max_per_well, replace=False))
            out.append(torch.from_numpy(self.read_crops(self.crops[index][sel])))
        return out

    def fingerprint(self) -> str:
        """SHA-256 over the compound keys and their crop assignments."""
        h = hashlib.sha256()
        for key, c in zip(self.keys, self.crops):
            h.update(key.encode())
            h.update(c.tobytes())
        return h.hexdigest()


# --------------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------------
@dataclass
class PairBatch:
    """A collated batch: ``graphs`` (PyG Batch of B molecules), ``crops`` (B, K, C, S, S)."""

    graphs: Batch
    crops: Tensor

    def to(self, device: torch.device | str) -> "PairBatch":
        return PairBatch(self.graphs.to(device), self.crops.to(device, non_blocking=True))

    def __len__(self) -> int:
        return self.crops.size(0)


def collate_pairs(items: Sequence[tuple[Data, Tensor]]) -> PairBatch:
    """List of dataset items -> :class:`PairBatch`."""
    graphs = Batch.from_data_list([g for g, _ in items])
    return PairBatch(graphs, torch.stack([c for _, c in items], 0))


class UniqueCompoundBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices in which no compound appears twice.

    Parameters
    ----------
    groups : sequence of hashable
        Compound of each dataset index (for :class:`PairDataset`, its keys).
    batch_size : int
    shuffle : bool
        Permute with ``(seed, epoch)``; call :meth:`set_epoch` every epoch.
    drop_last : bool
        Drop a final batch smaller than ``batch_size``.
    start_batch : int
        Skip this many batches of the current epoch (exact resume).
    """

    def __init__(
        self, groups: Sequence, batch_size: int, *, shuffle: bool = True, drop_last: bool = True, seed: int = 0
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.groups = list(groups)
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def batches(self) -> list[list[int]]:
        """All batches of the current epoch (deterministic in seed and epoch)."""
        n = len(self.groups)
        order = np.random.default_rng((self.seed, self.epoch)).permutation(n) if self.shuffle else np.arange(n)
        batches: list[list[int]] = []
        pending = [int(i) for i in order]
        while pending:
            batch, seen, rest = [], set(), []
            for i in pending:
                if len(batch) < self.batch_size and self.groups[i] not in seen:
                    batch.append(i)
                    seen.add(self.groups[i])
                else:
                    rest.append(i)
            batches.append(batch)
            pending = rest
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()[self.start_batch :]

    def __len__(self) -> int:
        return max(0, len(self.batches()) - self.start_batch)
