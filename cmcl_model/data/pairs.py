"""Training data from a cmcl store: (molecular graph, K single-cell crops) pairs.

One sample per *treatment* compound (plate-map ``Metadata_ControlType == 'trt'``; DMSO and
positive controls are never paired). Crops are read lazily from ``crops/<plate>.zarr`` through a
small LRU cache of decoded chunks; the whole crop array is never loaded. Crops are normalised per
plate and channel with statistics of DMSO crops (``log1p``, then ``(x - mean) / std``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler
from torch_geometric.data import Batch, Data

from pipeline.chem.graphs import graphs_to_data
from pipeline.store.schema import write_table
from pipeline.store.paths import CHANNELS, Store
from pipeline.images.crops import CropArrayReader

__all__ = [
    "graphs_from_arrow",
    "scaffold_split",
    "load_or_create_split",
    "extend_split",
    "treatment_crops",
    "REQUIRED_CHANNELS",
    "require_channels",
    "current_well_compounds",
    "ChunkedCropReader",
    "PlateNorm",
    "compute_normalization",
    "PairDataset",
    "PairBatch",
    "collate_pairs",
    "UniqueCompoundBatchSampler",
]

SplitName = Literal["train", "val", "test"]


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
# split
# --------------------------------------------------------------------------------------------
def scaffold_split(
    compounds: pd.DataFrame, *, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> pd.DataFrame:
    """Balanced scaffold split (chemprop-style), deterministic in ``seed``.

    Compounds sharing a Bemis-Murcko scaffold (acyclic ones share ``''``) always land in the same
    split. Scaffold groups larger than half the validation target go to train first (largest
    first), the rest are shuffled with ``seed``; groups fill train, then val, then test.

    Parameters
    ----------
    compounds : DataFrame
        Columns ``Metadata_InChIKey`` (unique) and ``Metadata_Scaffold``.
    fractions : (train, val, test), summing to 1.

    Returns
    -------
    DataFrame conforming to the ``split`` table, sorted by InChIKey.

    Raises
    ------
    ValueError
        On missing columns, duplicate keys or fractions that do not sum to 1.
    """
    need = {"Metadata_InChIKey", "Metadata_Scaffold"}
    if not need <= set(compounds.columns):
        raise ValueError(f"scaffold_split needs columns {sorted(need)}, got {list(compounds.columns)}")
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    df = compounds[["Metadata_InChIKey", "Metadata_Scaffold"]].copy()
    df["Metadata_Scaffold"] = df["Metadata_Scaffold"].fillna("").astype(str)
    if df["Metadata_InChIKey"].duplicated().any():
        raise ValueError("scaffold_split: duplicate Metadata_InChIKey values")
    n = len(df)
    n_train, n_val = fractions[0] * n, fractions[1] * n
    groups = df.groupby("Metadata_Scaffold", sort=True)["Metadata_InChIKey"].apply(lambda s: sorted(s))
    names = list(groups.index)
    sizes = {s: len(groups[s]) for s in names}
    big = sorted((s for s in names if sizes[s] > n_val / 2), key=lambda s: (-sizes[s], s))
    small = [s for s in names if sizes[s] <= n_val / 2]
    rng = np.random.default_rng(seed)
    small = [small[j] for j in rng.permutation(len(small))]
    assign: dict[str, str] = {}
    counts = {"train": 0, "val": 0, "test": 0}
    for s in big + small:
        if counts["train"] + sizes[s] <= n_train:
            part = "train"
        elif counts["val"] + sizes[s] <= n_val:
            part = "val"
        else:
            part = "test"
        counts[part] += sizes[s]
        for key in groups[s]:
            assign[key] = part
    df["Split"] = df["Metadata_InChIKey"].map(assign)
    return df.sort_values("Metadata_InChIKey", ignore_index=True)


def extend_split(
    split: pd.DataFrame, compounds: pd.DataFrame, *, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> pd.DataFrame:
    """Add the compounds ``split`` lacks, never moving one it holds.

    A new compound whose scaffold the split already holds joins that scaffold's split (no
    scaffold ever straddles two splits). New scaffolds are assigned group by group, largest
    first, ties in an order fixed by ``seed``, each to the split furthest below its target
    ``fractions`` of the enlarged total: deterministic, and balanced by the fractions.

    Parameters
    ----------
    split : DataFrame
        An existing ``split`` table.
    compounds : DataFrame
        ``Metadata_InChIKey`` and ``Metadata_Scaffold`` of every compound to be split (old and new).
    fractions : (train, val, test), summing to 1.

    Returns
    -------
    DataFrame conforming to the ``split`` table (old rows unchanged), sorted by InChIKey.

    Raises
    ------
    ValueError
        On missing columns or bad fractions (as :func:`scaffold_split`).
    """
    need = {"Metadata_InChIKey", "Metadata_Scaffold"}
    if not need <= set(compounds.columns):
        raise ValueError(f"extend_split needs columns {sorted(need)}, got {list(compounds.columns)}")
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    old = split[["Metadata_InChIKey", "Metadata_Scaffold", "Split"]].copy()
    new = compounds[~compounds["Metadata_InChIKey"].isin(set(old["Metadata_InChIKey"]))][
        ["Metadata_InChIKey", "Metadata_Scaffold"]].drop_duplicates("Metadata_InChIKey").copy()
    if new.empty:
        return old.sort_values("Metadata_InChIKey", ignore_index=True)
    new["Metadata_Scaffold"] = new["Metadata_Scaffold"].fillna("").astype(str)
    known = old.groupby("Metadata_Scaffold")["Split"].agg(lambda v: v.value_counts().index[0]).to_dict()
    new["Split"] = new["Metadata_Scaffold"].map(known)
    parts = ("train", "val", "test")
    counts = {k: int((old["Split"] == k).sum()) + int((new["Split"] == k).sum()) for k in parts}
    fresh = new[new["Split"].isna()]
    groups = fresh.groupby("Metadata_Scaffold", sort=True).size()
    names = list(groups.index)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    ranked = sorted(range(len(names)), key=lambda i: (-int(groups.iloc[i]), int(order[i])))
    total = len(old) + len(new)
    assign: dict[str, str] = {}
    for i in ranked:
        size = int(groups.iloc[i])
        part = max(parts, key=lambda k: (fractions[parts.index(k)] * total - counts[k], -parts.index(k)))
        counts[part] += size
        assign[names[i]] = part
    new.loc[new["Split"].isna(), "Split"] = fresh["Metadata_Scaffold"].map(assign)
    out = pd.concat([old, new], ignore_index=True)
    return out.sort_values("Metadata_InChIKey", ignore_index=True)


def load_or_create_split(
    store: Store, compounds: pd.DataFrame, *, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> pd.DataFrame:
    """The store's split, created or extended to cover ``compounds``.

    Without ``tables/split.parquet`` it is :func:`scaffold_split` of ``compounds``. With one, a
    compound keeps its split forever and the compounds it lacks are added by
    :func:`extend_split` (``fractions`` then apply to new scaffolds only); the table is
    rewritten only when it grew."""
    path = store.table_path("split")
    if not path.exists():
        split = scaffold_split(compounds, fractions=fractions, seed=seed)
        write_table(split, "split", path)
        return split
    split = store.read("split")
    grown = extend_split(split, compounds, fractions=fractions, seed=seed)
    if len(grown) != len(split):
        write_table(grown, "split", path)
    return grown


# --------------------------------------------------------------------------------------------
# which crops belong to which compound
# --------------------------------------------------------------------------------------------
ImageSource = Literal["crops", "tiles"]

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


def treatment_crops(store: Store, source: ImageSource = "crops", *,
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
    pm = store.read("platemap")
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
# lazy crop reading
# --------------------------------------------------------------------------------------------
class ChunkedCropReader:
    """Read rows of ``crops/<plate>.zarr/<array>`` through an LRU cache of decoded chunks.

    Only whole chunks along the first axis are ever read (:class:`pipeline.images.crops.CropArrayReader`),
    and at most ``cache_bytes`` of decoded chunks are kept. With the sharded layout ingestion
    writes (16-row chunks inside 1024-row shards) a crop costs reading and decoding 16 rows by
    byte range from its shard file; older unsharded stores read through zarr. The array is
    opened lazily, so the reader pickles cheaply into DataLoader workers.

    Attributes
    ----------
    rows_read : int
        Rows decoded so far (for tests and benchmarks).
    max_rows_per_read : int
        Largest single read, in rows (never more than the chunk length).
    """

    def __init__(self, path: str | Path, *, cache_bytes: int = 128 * 2**20, array: str = "crops") -> None:
        self.path = Path(path)
        self.array_name = array
        self.cache_bytes = int(cache_bytes)
        self._rows: CropArrayReader | None = None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self.rows_read = 0
        self.max_rows_per_read = 0

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_rows"] = None
        state["_cache"] = OrderedDict()
        state["_cached_bytes"] = 0
        return state

    @property
    def rows(self) -> CropArrayReader:
        """The underlying chunk reader (opened on first use)."""
        if self._rows is None:
            self._rows = CropArrayReader(self.path / self.array_name)  # FileNotFoundError naming it
        return self._rows

    @property
    def shape(self) -> tuple[int, ...]:
        return self.rows.shape

    @property
    def chunk_len(self) -> int:
        return self.rows.chunk_len

    def _chunk(self, c: int) -> np.ndarray:
        hit = self._cache.get(c)
        if hit is not None:
            self._cache.move_to_end(c)
            return hit
        block = self.rows.read_chunk(c)
        self.rows_read += block.shape[0]
        self.max_rows_per_read = max(self.max_rows_per_read, block.shape[0])
        self._cache[c] = block
        self._cached_bytes += block.nbytes
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.nbytes
        return block

    def clear_cache(self) -> None:
        """Drop every cached chunk."""
        self._cache.clear()
        self._cached_bytes = 0

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (k,) int -> (k, C, S, S) uint16, in the given order.

        Raises
        ------
        IndexError
            If a row is outside the array, naming the range and the file.
        """
        rows = np.asarray(rows, dtype=np.int64)
        shape = self.rows.shape
        n = shape[0]
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"crop rows out of range [0, {n}) in {self.path}: {rows.min()}..{rows.max()}")
        L = self.chunk_len
        out = np.empty((rows.size, *shape[1:]), dtype=self.rows.dtype)
        chunk_ids = rows // L
        for c in np.unique(chunk_ids):
            sel = np.flatnonzero(chunk_ids == c)
            out[sel] = self._chunk(int(c))[rows[sel] - c * L]
        return out


# --------------------------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlateNorm:
    """Per-channel statistics of one plate's DMSO crops (after ``log1p`` when ``log1p``)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    log1p: bool = True

    def _compute(self, x: np.ndarray, trailing: int) -> np.ndarray:
        """The normalisation itself, in place on float32 ``x`` whose channel axis is followed
        by ``trailing`` axes ((k, C, S, S): 2; (C, values): 1)."""
        if self.log1p:
            np.log1p(x, out=x)
        shape = (-1,) + (1,) * trailing
        m = np.asarray(self.mean, np.float32).reshape(shape)
        s = np.asarray(self.std, np.float32).reshape(shape)
        return (x - m) / s

    @cached_property
    def lut(self) -> np.ndarray:
        """(C, 65536) float32: the normalised value of every uint16 intensity per channel,
        computed with the same float32 operations, so looking up equals computing bit for bit."""
        values = np.broadcast_to(np.arange(65536, dtype=np.float32), (len(self.mean), 65536)).copy()
        return np.ascontiguousarray(self._compute(values, 1), dtype=np.float32)

    def apply(self, crops: np.ndarray) -> np.ndarray:
        """(k, C, S, S) uint16 -> float32 normalised (a table lookup for uint16: ~5x faster
        than ``log1p`` per pixel, which made normalisation the data loader's largest cost)."""
        if crops.dtype == np.uint16 and crops.ndim == 4 and crops.shape[1] == len(self.mean):
            out = np.empty(crops.shape, np.float32)
            for k in range(crops.shape[0]):
                self.apply_into(crops[k], out[k])
            return out
        return self._compute(crops.astype(np.float32), 2)

    def apply_into(self, crop: np.ndarray, out: np.ndarray) -> None:
        """Normalise one uint16 crop (C, S, S), any strides (e.g. a flipped view), into the
        float32 array ``out`` (C, S, S)."""
        if crop.dtype != np.uint16:
            out[...] = self._compute(crop.astype(np.float32), 2)
            return
        lut = self.lut
        for c in range(crop.shape[0]):
            np.take(lut[c], crop[c], out=out[c])

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "log1p": self.log1p}

    @classmethod
    def from_dict(cls, d: Mapping) -> "PlateNorm":
        return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]), bool(d["log1p"]))


def compute_normalization(
    reader: ChunkedCropReader, rows: np.ndarray, *, max_crops: int = 1024, log1p: bool = True, seed: int = 0
) -> PlateNorm:
    """Mean/std per channel over at most ``max_crops`` of ``rows`` (DMSO crops), read chunk by chunk.

    To bound I/O the sample is taken from at most ``ceil(max_crops / chunk_len) + 1`` randomly
    chosen chunks among those holding ``rows``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        raise ValueError(f"no crops to compute normalisation from in {reader.path}")
    rng = np.random.default_rng(seed)
    L = reader.chunk_len
    chunks = np.unique(rows // L)
    keep = rng.choice(chunks, size=min(len(chunks), -(-max_crops // L) + 1), replace=False)
    cand = rows[np.isin(rows // L, keep)]
    sample = np.sort(rng.choice(cand, size=min(max_crops, cand.size), replace=False))
    x = reader.read(sample).astype(np.float64)
    if log1p:
        x = np.log1p(x)
    mean = x.mean(axis=(0, 2, 3))
    std = np.maximum(x.std(axis=(0, 2, 3)), 1e-6)
    return PlateNorm(tuple(map(float, mean)), tuple(map(float, std)), log1p)


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
    store_root : path
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
        store_root: str | Path,
        *,
        source: ImageSource = "crops",
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
        self.store = Store(Path(store_root))
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
