"""Negative controls: which wells a plate is normalized and scored against.

Plate maps name their negative controls differently: a solvent well with no compound, a compound
ID ``DMSO``, a control type ``negcon`` (JUMP), ``vehicle``, ``Negative`` (IDR0133's ``Control Type``).
The plate-map readers keep the map's own control type in ``Metadata_ControlType``; this module
decides, from a list of labels the user can set (``cmcl profile --negcon``), which wells are
negative controls, and which plates have none.

A well is a negative control when its ``Metadata_ControlType`` or its ``Metadata_CompoundID``
equals one of the labels, case-insensitively (surrounding blanks ignored).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.profiles.choices import DEFAULT_NEGCON

if TYPE_CHECKING:
    from pipeline.store.paths import Store

__all__ = ["NegconError", "parse_negcon", "negcon_mask", "mark_negcon", "plates_without_negcon",
           "normalized_to", "plates_normalized_to_all", "store_negcon", "record_negcon",
           "negcon_key"]

class NegconError(ValueError):
    """A malformed list of negative-control labels."""


def parse_negcon(labels: str | Iterable[str] | None) -> tuple[str, ...]:
    """Negative-control labels from ``'DMSO,negcon,vehicle'`` (or a sequence of labels).

    Returns
    -------
    tuple of str
        The labels, stripped, in the given order, without duplicates (compared
        case-insensitively); :data:`pipeline.profiles.choices.DEFAULT_NEGCON` for None.

    Raises
    ------
    NegconError
        When no label is left (e.g. ``--negcon ','``).
    """
    if labels is None:
        return DEFAULT_NEGCON
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    out: list[str] = []
    for item in items:
        s = str(item).strip()
        if s and s.lower() not in {o.lower() for o in out}:
            out.append(s)
    if not out:
        raise NegconError(f"--negcon {labels!r} names no label; give e.g. --negcon {','.join(DEFAULT_NEGCON)}")
    return tuple(out)


def negcon_key(labels: Iterable[str]) -> str:
    """``labels`` as cache keys and comparisons see them: order and case do not matter."""
    return "negcon=" + ",".join(sorted(s.lower() for s in labels))


def store_negcon(store: "Store") -> tuple[str, ...]:
    """The negative-control labels ``store`` uses: the ones last given to it (``cmcl profile
    --negcon`` or ``cmcl run --negcon``, kept in its ``profiles_negcon`` file), else
    :data:`pipeline.profiles.choices.DEFAULT_NEGCON`.

    Profiling, training (which crops are controls) and evaluation all read them here, so a
    store's later runs, its ``cmcl serve`` ticks included, agree on which wells are controls.
    """
    import json

    path = store.path("profiles_negcon")
    return parse_negcon(json.loads(path.read_text())["negcon"]) if path.is_file() else DEFAULT_NEGCON


def record_negcon(store: "Store", labels: str | Iterable[str] | None) -> tuple[str, ...]:
    """Labels for ``store``: ``labels`` parsed (:func:`parse_negcon`) and kept as the store's own
    for later runs; None keeps the store's current ones (:func:`store_negcon`)."""
    import json

    from pipeline.store.atomic import write_text_atomic

    if labels is None:
        return store_negcon(store)
    parsed = parse_negcon(labels)
    if parsed != store_negcon(store) or not store.path("profiles_negcon").is_file():
        write_text_atomic(json.dumps({"negcon": list(parsed)}, indent=1), store.path("profiles_negcon"))
    return parsed


def negcon_mask(table: pd.DataFrame, labels: Sequence[str] = DEFAULT_NEGCON) -> np.ndarray:
    """Which rows of ``table`` are negative controls.

    Parameters
    ----------
    table : DataFrame
        With ``Metadata_ControlType`` and/or ``Metadata_CompoundID`` (either may be missing).
    labels : sequence of str
        Labels, compared case-insensitively with both columns.

    Returns
    -------
    (n_rows,) bool ndarray
    """
    wanted = {str(s).strip().lower() for s in labels}
    mask = np.zeros(len(table), dtype=bool)
    for col in ("Metadata_ControlType", "Metadata_CompoundID"):
        if col in table.columns:
            values = table[col].astype("string").str.strip().str.lower()
            mask |= values.isin(wanted).fillna(False).to_numpy(dtype=bool)
    return mask


def mark_negcon(table: pd.DataFrame, labels: Sequence[str] = DEFAULT_NEGCON) -> pd.DataFrame:
    """A copy of ``table`` whose ``Metadata_ControlType`` is ``'negcon'`` exactly on the rows of
    :func:`negcon_mask`; a row the map called ``negcon`` that no label matches becomes ``'trt'``
    (the labels are the definition). Other control types (``poscon``, ``unmapped``) are kept."""
    out = table.copy()
    mask = negcon_mask(out, labels)
    ct = out["Metadata_ControlType"].to_numpy(dtype=object).copy()
    was_negcon = np.array([isinstance(v, str) and v.strip().lower() == "negcon" for v in ct], dtype=bool)
    ct[was_negcon & ~mask] = "trt"
    ct[mask] = "negcon"
    out["Metadata_ControlType"] = ct
    return out


def plates_without_negcon(table: pd.DataFrame) -> list[str]:
    """Plates of ``table`` (``Metadata_Plate``, ``Metadata_ControlType``) with no ``'negcon'`` row, sorted."""
    has = table["Metadata_ControlType"].eq("negcon").groupby(table["Metadata_Plate"]).any()
    return sorted(str(p) for p in has.index[~has])


def normalized_to(values: pd.Series) -> str | None:
    """One label for a group of wells' ``Metadata_NormalizedTo``: ``'negcon'``, ``'all'`` (no
    negative control on the plate) or both (``'all,negcon'``); None when none is recorded."""
    return ",".join(sorted(set(values.dropna().astype(str)))) or None


def plates_normalized_to_all(store: "Store") -> list[str]:
    """Plates whose well profiles in ``store`` (``profiles_wells``, written by ``cmcl profile``)
    were normalized against all their wells for want of a negative control, sorted."""
    from pipeline.store.schema import read_table

    out: set[str] = set()
    for path in store.table_files("profiles_wells"):
        df = read_table("profiles_wells", path, ["Metadata_Plate", "Metadata_NormalizedTo"])
        out |= set(df.loc[df["Metadata_NormalizedTo"] == "all", "Metadata_Plate"].astype(str))
    return sorted(out)
