"""Profile-mode training data: (molecular graph, K CellProfiler well profiles) pairs.

The image side of profile-mode pre-training (``TrainConfig(image_source='profiles')``) is a
table of well (or consensus) profiles rather than crops: cmcl's own (``cmcl profile`` writes
``tables/profiles/wells/<plate>.parquet``), imported ones (``cmcl import-profiles`` writes
``tables/profiles/imported/<id>.parquet``, with the lab/batch in ``Metadata_Batch``), or both.
Each treatment well is tied to a parent compound (its ``Metadata_InChIKey`` when the graphs
table holds it, else its ``Metadata_CompoundID`` through the compound stage's
``compound_inputs``), one sample per (compound, dose), and features are standardized per
batch (``Metadata_Source`` x ``Metadata_Plate``): median and MAD of the batch's DMSO wells (all
its wells when it has fewer than :data:`MIN_REFERENCE_WELLS`), clipped to +-:data:`CLIP`;
features a source lacks are 0 (the batch's centre).

The feature matrix is float32, filled file by file from Parquet (no float64 copy of the
table), so a JUMP-sized table (116k compounds x 5 replicates x 750 features) fits in ~1.8 GB.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler
from torch_geometric.data import Data

from cmcl_model.data.choices import NEGATIVES, Negatives, ProfileSource
from cmcl_model.data.pairs import UniqueCompoundBatchSampler, graphs_from_arrow
from pipeline.store.paths import Store

__all__ = [
    "MIN_REFERENCE_WELLS",
    "CLIP",
    "ProfileDataError",
    "ProfileNorm",
    "ProfileTable",
    "read_profile_tables",
    "store_profile_table",
    "parent_keys",
    "standardize_batches",
    "ProfileDataset",
    "StratifiedBatchSampler",
]

#: A batch's DMSO wells are its reference when it has at least this many, else all its wells.
MIN_REFERENCE_WELLS = 4
#: Standardized features are clipped to [-CLIP, CLIP].
CLIP = 10.0


#: CellProfiler-named features, and numbered ones (JUMP's X_1…, harmony_0…) as imported
_FEATURE = re.compile(r"^((Cells|Cytoplasm|Nuclei|Image)_|(?!Metadata_)[A-Za-z][A-Za-z0-9]*_[0-9]+$)")
_META = ["Metadata_Plate", "Metadata_Well", "Metadata_CompoundID", "Metadata_InChIKey", "Metadata_Concentration",
         "Metadata_ControlType", "Metadata_Source"]


class ProfileDataError(ValueError):
    """A profile table that cannot be used for profile-mode training (names the file or store)."""


@dataclass(frozen=True)
class ProfileNorm:
    """Per-batch standardization ``clip((x - center) / scale, -CLIP, CLIP)`` over ``features``.

    Attributes
    ----------
    features : tuple of str
        The feature columns, in matrix order (shared by every batch of a dataset).
    center, scale : (F,) float32
        Median and 1.4826 x MAD of the batch's reference wells (scale 1 where the MAD is 0 or
        undefined; center 0 for features the batch lacks).
    """

    features: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, features: Sequence[str]) -> "ProfileNorm":
        """Robust statistics of reference rows ``x`` (n, F) float32 (NaN = missing)."""
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                center = np.nanmedian(x, axis=0)
                mad = np.nanmedian(np.abs(x - center), axis=0) * 1.4826
        center = np.where(np.isfinite(center), center, 0).astype(np.float32)
        scale = np.where(np.isfinite(mad) & (mad > 1e-12), mad, 1).astype(np.float32)
        return cls(tuple(features), center, scale)

    def apply_(self, x: np.ndarray) -> np.ndarray:
        """Standardize (n, F) float32 ``x`` in place (NaN -> 0) and return it."""
        x -= self.center
        x /= self.scale
        np.nan_to_num(x, copy=False, nan=0.0, posinf=CLIP, neginf=-CLIP)
        np.clip(x, -CLIP, CLIP, out=x)
        return x

    def to_dict(self) -> dict:
        return {"features": list(self.features), "center": torch.from_numpy(self.center.copy()),
                "scale": torch.from_numpy(self.scale.copy())}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ProfileNorm":
        return cls(tuple(d["features"]), np.asarray(d["center"], np.float32), np.asarray(d["scale"], np.float32))


@dataclass
class ProfileTable:
    """Profiles in memory: ``meta`` (one row per profile) and ``x`` (n, F) float32, row-aligned.

    ``meta`` holds :data:`_META` columns plus ``Metadata_Batch`` (``<source>|<plate>``, the unit
    of standardization) and ``Metadata_Stratum`` (the source negatives are drawn within).
    """

    meta: pd.DataFrame
    x: np.ndarray
    features: tuple[str, ...]


def _feature_names(schema: pa.Schema) -> list[str]:
    return [n for n in schema.names if _FEATURE.match(n)]


def read_profile_tables(files: Sequence[str | Path], *, sources: ProfileSource = "all") -> ProfileTable:
    """Read well-profile Parquet files (``profiles_wells`` layout) into one float32 matrix.

    Two passes: metadata columns of every file first (to size the matrix and the feature
    union), then each file's features cast to float32 straight into its rows; peak memory is
    the matrix plus one file's table.

    Parameters
    ----------
    files : sequence of paths
        Parquet files with :data:`_META` columns (``Metadata_Concentration`` optional) and
        CellProfiler-named features. An optional ``Metadata_Batch`` column names the lab or
        batch (e.g. JUMP's source); otherwise ``Metadata_Source`` is the stratum.
    sources : {'all', 'cmcl', 'imported'}
        Keep cmcl's own profiles (``Metadata_Source == 'cmcl'``), imported ones, or both.

    Returns
    -------
    ProfileTable
        Rows in file order; features unstandardized (NaN where a source lacks a feature).

    Raises
    ------
    ProfileDataError
        Naming the file, when it lacks a metadata column or has no feature columns.
    """
    if sources not in ("all", "cmcl", "imported"):
        raise ProfileDataError(f"profile sources {sources!r} is not one of 'all', 'cmcl', 'imported'")
    metas, names, keep = [], {}, []
    for f in files:
        pf = pq.ParquetFile(f)
        schema = pf.schema_arrow
        missing = [c for c in _META if c not in schema.names and c != "Metadata_Concentration"]
        feats = _feature_names(schema)
        if missing or not feats:
            raise ProfileDataError(f"{f}: profile table lacks {missing or 'feature columns (Cells_/Cytoplasm_/Nuclei_)'}")
        cols = [c for c in [*_META, "Metadata_Batch"] if c in schema.names]
        m = pf.read(columns=cols).to_pandas()
        if "Metadata_Concentration" not in m.columns:
            m["Metadata_Concentration"] = np.nan
        sel = np.ones(len(m), bool)
        if sources == "cmcl":
            sel = (m["Metadata_Source"] == "cmcl").to_numpy()
        elif sources == "imported":
            sel = (m["Metadata_Source"] != "cmcl").to_numpy()
        m = m[sel].reset_index(drop=True)
        m["Metadata_Stratum"] = (m["Metadata_Batch"] if "Metadata_Batch" in m.columns else m["Metadata_Source"]).astype(str)
        m["Metadata_Batch"] = m["Metadata_Source"].astype(str) + "|" + m["Metadata_Plate"].astype(str)
        metas.append(m)
        keep.append(sel)
        for n in feats:
            names.setdefault(n, len(names))
    features = tuple(names)
    n = sum(len(m) for m in metas)
    x = np.full((n, len(features)), np.nan, np.float32)
    start = 0
    for f, m, sel in zip(files, metas, keep):
        if not len(m):
            continue
        pf = pq.ParquetFile(f)
        rows = np.flatnonzero(sel)
        feats = _feature_names(pf.schema_arrow)
        part = pf.read(columns=feats)
        for j, n_ in enumerate(feats):
            col = part.column(j).to_numpy(zero_copy_only=False)
            x[start : start + len(m), names[n_]] = col[rows]
        del part
        start += len(m)
    meta = pd.concat(metas, ignore_index=True) if metas else pd.DataFrame(columns=[*_META, "Metadata_Batch", "Metadata_Stratum"])
    return ProfileTable(meta, x, features)


def store_profile_table(store: Store, *, sources: ProfileSource = "all") -> ProfileTable:
    """:func:`read_profile_tables` of the store's own well profiles (``profiles_wells``, written by
    ``cmcl profile``) and its imported profiles (``profiles_imported``, ``cmcl import-profiles``).

    Raises
    ------
    ProfileDataError
        When the store holds no well profiles (naming what to run).
    """
    files = store.table_files("profiles_wells") + store.table_files("profiles_imported")
    if not files:
        raise ProfileDataError(f"store {store.root} has no profiles (tables/profiles/wells/ or imported/); run `cmcl "
                               "profile` on ingested plates or `cmcl import-profiles FILE` first")
    return read_profile_tables(files, sources=sources)


def parent_keys(store: Store, meta: pd.DataFrame, graph_keys: set[str]) -> pd.Series:
    """Parent InChIKey of each profile row (None where none is known or it has no graph).

    A row's ``Metadata_InChIKey`` is used when the graphs table holds it (cmcl's own and
    already-standardized imports); otherwise its ``Metadata_CompoundID`` is looked up among
    the compound stage's accepted inputs (``compound_inputs``: source ID -> parent).
    """
    key = meta["Metadata_InChIKey"].where(meta["Metadata_InChIKey"].isin(graph_keys))
    if key.isna().any() and store.table_path("compound_inputs").is_file():
        ci = store.read("compound_inputs", ["Metadata_CompoundID", "Status", "Metadata_InChIKey"])
        ci = ci[(ci["Status"] == "ok") & ci["Metadata_InChIKey"].isin(graph_keys)]
        by_id = ci.drop_duplicates("Metadata_CompoundID").set_index("Metadata_CompoundID")["Metadata_InChIKey"]
        key = key.fillna(meta["Metadata_CompoundID"].map(by_id))
    return key.astype(object).where(key.notna(), None)


def standardize_batches(table: ProfileTable, normalization: Mapping[str, ProfileNorm] | None = None) -> dict[str, ProfileNorm]:
    """Standardize ``table.x`` in place per ``Metadata_Batch``; returns the statistics used.

    ``normalization`` (e.g. from a checkpoint) is reused for the batches it holds; the others
    are fitted on their DMSO wells (or all wells, see the module docstring).
    """
    out: dict[str, ProfileNorm] = {}
    batches = table.meta["Metadata_Batch"].to_numpy()
    neg = (table.meta["Metadata_ControlType"] == "negcon").to_numpy()
    order = np.argsort(batches, kind="stable")
    bounds = np.flatnonzero(np.r_[True, batches[order][1:] != batches[order][:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        rows = np.sort(order[a:b])
        name = str(batches[rows[0]])
        norm = (normalization or {}).get(name)
        if norm is None or tuple(norm.features) != table.features:
            ref = rows[neg[rows]] if neg[rows].sum() >= MIN_REFERENCE_WELLS else rows
            norm = ProfileNorm.fit(table.x[ref], table.features)
        table.x[rows] = norm.apply_(table.x[rows])
        out[name] = norm
    return out


class ProfileDataset(Dataset):
    """(graph, K profiles) pairs: one item per (parent compound, dose[, stratum]).

    Parameters
    ----------
    store : Store
        The cmcl store (graphs table and well profiles).
    sources : {'all', 'cmcl', 'imported'}
        Which profiles to pair (see :func:`read_profile_tables`).
    profiles_per_sample : int
        K profiles drawn per item (with replacement only when the item has fewer).
    negatives : {'any', 'within_source'}
        With ``'within_source'`` an item's profiles all come from one stratum (``Metadata_Batch``
        column when the table has one, else ``Metadata_Source``), and :meth:`batch_sampler`
        fills each batch from one stratum, so a model cannot tell pairs apart by their lab.
    normalization : {batch: ProfileNorm}, optional
        Reuse per-batch statistics (a checkpoint's); missing batches are fitted.
    augment : bool
        Add ``jitter`` x N(0, 1) to each standardized feature (training only).
    seed : int
        Sampling is a pure function of (seed, epoch, index).

    Attributes
    ----------
    keys : list of str
        Sorted parent InChIKeys of the compounds present (the split's unit).
    groups : list of str
        Parent key of each item (no compound twice in a batch).
    n_features : int

    Item
    ----
    ``(Data, Tensor (K, F) float32)``.

    Raises
    ------
    ProfileDataError
        When no treatment profile joins to a compound with a graph (naming what to run).
    """

    def __init__(
        self,
        store: Store,
        *,
        sources: ProfileSource = "all",
        keys: Sequence[str] | None = None,
        profiles_per_sample: int = 4,
        negatives: Negatives = "any",
        normalization: Mapping[str, ProfileNorm] | None = None,
        augment: bool = False,
        jitter: float = 0.05,
        seed: int = 0,
        table: ProfileTable | None = None,
    ) -> None:
        if negatives not in NEGATIVES:
            raise ProfileDataError(f"negatives={negatives!r} is not one of {', '.join(map(repr, NEGATIVES))}")
        if profiles_per_sample < 1:
            raise ProfileDataError(f"profiles_per_sample must be >= 1, got {profiles_per_sample}")
        gpath = store.table_path("graphs")
        if not gpath.exists():
            raise ProfileDataError(f"graphs table {gpath} is missing; run `cmcl compounds --store {store.root}` first")
        graphs = graphs_from_arrow(pq.read_table(gpath))
        t = store_profile_table(store, sources=sources) if table is None else table
        self.normalization = standardize_batches(t, normalization)
        meta = t.meta
        meta["Metadata_Parent"] = parent_keys(store, meta, set(graphs))
        self.store, self.features, self.x, self.meta = store, t.features, t.x, meta
        self.negatives, self.profiles_per_sample, self.augment, self.jitter, self.seed = (
            negatives, profiles_per_sample, augment, jitter, seed)
        self.epoch = 0
        self._graph_of = graphs
        self._build_items(keys)

    def _build_items(self, keys: Sequence[str] | None) -> None:
        m = self.meta
        ok = (m["Metadata_ControlType"] == "trt").to_numpy() & m["Metadata_Parent"].notna().to_numpy()
        if keys is not None:
            ok &= m["Metadata_Parent"].isin(set(keys)).to_numpy()
        rows = np.flatnonzero(ok)
        if rows.size == 0:
            raise ProfileDataError(
                f"no treatment profile in store {self.store.root} joins to a compound with a graph"
                f"{'' if keys is None else f' among {len(keys)} requested compounds'}; run `cmcl compounds --store "
                f"{self.store.root}` after importing profiles")
        sub = m.iloc[rows]
        unit = [sub["Metadata_Parent"].astype(str), sub["Metadata_Concentration"].round(9).astype(str)]
        if self.negatives == "within_source":
            unit.append(sub["Metadata_Stratum"].astype(str))
        labels = pd.Series(list(zip(*unit)), index=sub.index)
        codes, uniques = pd.factorize(labels, sort=True)
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.r_[True, codes[order][1:] != codes[order][:-1], True])
        #: per item: rows of ``x`` holding its profiles
        self.rows: list[np.ndarray] = [rows[order[a:b]] for a, b in zip(bounds[:-1], bounds[1:])]
        self.groups: list[str] = [u[0] for u in uniques]
        self.strata: list[str] = [str(self.meta["Metadata_Stratum"].iat[r[0]]) for r in self.rows]
        self.keys: list[str] = sorted(set(self.groups))
        self.graphs = [self._graph_of[k] for k in self.keys]  # compound order (evaluation)
        self._item_graph = [self._graph_of[g] for g in self.groups]
        index = {k: j for j, k in enumerate(self.keys)}
        #: per compound (``keys`` order): every row of its profiles, all doses and strata
        self.compound_rows: list[np.ndarray] = [np.empty(0, np.int64) for _ in self.keys]
        for g, r in zip(self.groups, self.rows):
            j = index[g]
            self.compound_rows[j] = np.sort(np.r_[self.compound_rows[j], r])

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def plates(self) -> list[str]:
        return sorted(set(self.meta["Metadata_Plate"].astype(str)))

    def subset(self, keys: Sequence[str], *, augment: bool = False) -> "ProfileDataset":
        """The items of compounds ``keys``, sharing this dataset's matrix (no copy)."""
        out = object.__new__(ProfileDataset)
        out.__dict__.update(self.__dict__)
        out.augment = augment
        out._build_items(keys)
        return out

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> tuple[Data, Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        pool = self.rows[index]
        k = self.profiles_per_sample
        x = self.x[np.sort(rng.choice(pool, size=k, replace=pool.size < k))]
        if self.augment and self.jitter > 0:
            x = x + self.jitter * rng.standard_normal(x.shape).astype(np.float32)
        return self._item_graph[index], torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def compound_profiles(self, index: int) -> Tensor:
        """Every standardized profile of compound ``keys[index]``: (n, F) float32."""
        return torch.from_numpy(self.x[self.compound_rows[index]])

    def batch_sampler(self, batch_size: int, *, shuffle: bool = True, drop_last: bool = True, seed: int = 0) -> Sampler:
        """Batches with no compound twice; with ``negatives='within_source'`` each from one stratum."""
        if self.negatives == "within_source":
            return StratifiedBatchSampler(self.groups, self.strata, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)
        return UniqueCompoundBatchSampler(self.groups, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)

    def fingerprint(self) -> str:
        """SHA-256 over the items (compound, rows) and the features."""
        h = hashlib.sha256("\n".join(self.features).encode())
        for g, r in zip(self.groups, self.rows):
            h.update(g.encode())
            h.update(r.tobytes())
        return h.hexdigest()


class StratifiedBatchSampler(Sampler[list[int]]):
    """Batches drawn within one stratum each (e.g. one lab), no compound twice in a batch.

    Each stratum is batched by :class:`~cmcl_model.data.pairs.UniqueCompoundBatchSampler` (same seed
    and epoch rules); with ``drop_last`` a stratum's final batch is kept when it holds at least
    half a batch (a small stratum would otherwise never be seen). The batches of all strata are
    then shuffled together with ``(seed, epoch)``. :meth:`set_epoch` takes ``start_batch`` for
    an exact resume, like the unstratified sampler.
    """

    def __init__(self, groups: Sequence[str], strata: Sequence[str], batch_size: int, *, shuffle: bool = True,
                 drop_last: bool = True, seed: int = 0) -> None:
        if len(groups) != len(strata):
            raise ValueError(f"groups ({len(groups)}) and strata ({len(strata)}) differ in length")
        self.groups, self.strata = list(groups), list(strata)
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def batches(self) -> list[list[int]]:
        out: list[list[int]] = []
        strata = np.asarray(self.strata, dtype=object)
        for s in sorted(set(self.strata)):
            idx = np.flatnonzero(strata == s)
            inner = UniqueCompoundBatchSampler([self.groups[i] for i in idx], self.batch_size, shuffle=self.shuffle,
                                               drop_last=False, seed=self.seed)
            inner.set_epoch(self.epoch)
            for b in inner.batches():
                if len(b) >= 2 and (not self.drop_last or len(b) >= max(2, self.batch_size // 2)):
                    out.append([int(idx[i]) for i in b])
        if self.shuffle:
            perm = np.random.default_rng((self.seed, self.epoch, 1)).permutation(len(out))
            out = [out[i] for i in perm]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()[self.start_batch :]

    def __len__(self) -> int:
        return max(0, len(self.batches()) - self.start_batch)
