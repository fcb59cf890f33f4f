"""The scaffold split of a store's compounds: created once, extended as compounds arrive, never reshuffled.

``tables/split.parquet`` holds one row per compound (``Metadata_InChIKey``, ``Metadata_Scaffold``,
``Split`` in :data:`~cmcl_model.data.choices.SPLIT_NAMES`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline.store.paths import Store
from pipeline.store.schema import write_table

__all__ = ["scaffold_split", "extend_split", "load_or_create_split"]


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
