"""Read the files of ``cmcl import-profiles``: profile tables, compound, column and name maps.

Profile tables, compound maps, column maps and feature name tables; the pure mapping is
:mod:`pipeline.profiles.imports`.

A compound map may be large (JUMP's 116,753 ``Metadata_JCP2022`` IDs): :func:`read_compound_map`
reads its header first and then only the identifier and structure columns, keeping only the
identifiers the profile table names.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tomllib
from collections.abc import Collection
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from pipeline.profiles.imports import ROLES, ProfileImportError, resolve_columns

__all__ = ["read_profile_table", "read_compound_map", "read_column_map", "read_name_table", "file_digest"]

_TEXT = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")


def _kind(p: Path) -> str:
    name = p.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(_TEXT):
        return "tsv" if ".tsv" in name or ".txt" in name else "csv"
    raise ProfileImportError(f"{p}: tables are .csv, .tsv, .txt (optionally .gz) or .parquet")


def _comment_lines(p: Path) -> int:
    """Leading lines starting with '!' (the Drug Repurposing Hub's header notes)."""
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    n = 0
    with opener(p, "rt", errors="replace") as fh:
        for line in fh:
            if not line.startswith("!"):
                break
            n += 1
    return n


def _read(p: Path, usecols: list[str] | None = None, nrows: int | None = None) -> pd.DataFrame:
    kind = _kind(p)
    try:
        if kind == "parquet":
            if nrows == 0:
                return pq.read_schema(p).empty_table().to_pandas()
            return pd.read_parquet(p, columns=usecols)
        sep, skip = "\t" if kind == "tsv" else ",", _comment_lines(p)
        if usecols is not None and nrows is None:  # a few columns of a large map: Arrow's multithreaded reader
            return pd.read_csv(p, sep=sep, skiprows=skip, usecols=usecols, engine="pyarrow")
        return pd.read_csv(p, sep=sep, skiprows=skip, usecols=usecols, nrows=nrows, low_memory=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ProfileImportError(f"{p}: not a readable table ({exc})") from None


def read_profile_table(path: str | os.PathLike) -> pd.DataFrame:
    """A profile table from ``.csv``/``.tsv``/``.txt`` (optionally ``.gz``) or ``.parquet``.

    Raises
    ------
    ProfileImportError
        Naming the file, for another suffix, an unreadable or an empty table.
    """
    p = Path(path)
    t = _read(p)
    if t.empty:
        raise ProfileImportError(f"{p}: no rows")
    return t


def read_compound_map(path: str | os.PathLike, *, ids: Collection[str] | None = None,
                      id_columns: Collection[str] = ()) -> tuple[pd.DataFrame, dict[str, str]]:
    """The columns of a compound map that a join needs, and their roles.

    Parameters
    ----------
    path : path
        CSV/TSV/Parquet with an identifier column and SMILES (JUMP's compound table, the Drug
        Repurposing Hub's samples file, a JUMP-Target metadata file).
    ids : collection of str, optional
        Identifiers to keep (rows whose identifier columns hold none of them, or whose first
        13 characters match none, are dropped while reading).
    id_columns : collection of str
        The profile table's candidate identifier columns: map columns named like them (with or
        without ``Metadata_``) are read.

    Returns
    -------
    table : DataFrame
    roles : dict
        ``{role: column}`` (``smiles``, ``inchi``, ``inchikey``, ``moa`` where present).

    Raises
    ------
    ProfileImportError
        If the map has no SMILES, InChI or InChIKey column.
    """
    p = Path(path)
    header = list(_read(p, nrows=0).columns)
    roles = {r: c for r, c in resolve_columns(header, what=f"compound map {p.name}").items()
             if r in ("smiles", "inchi", "inchikey", "moa")}
    if not {"smiles", "inchi", "inchikey"} & set(roles):
        raise ProfileImportError(f"{p}: compound map has no SMILES, InChI or InChIKey column (columns: {header[:12]})")
    wanted = {c.lower() for c in id_columns} | {c.lower().removeprefix("metadata_") for c in id_columns}
    hub = {"pert_id", "broad_id", "deprecated_broad_id"}
    keys = [c for c in header if c.lower() in wanted or c.lower() in hub]
    cols = list(dict.fromkeys(keys + list(roles.values())))
    table = _read(p, usecols=cols)
    if ids is not None and keys:
        want = {str(i) for i in ids}
        prefixes = {i[:13] for i in want}
        keep = pd.Series(False, index=table.index)
        for k in keys:
            v = table[k].astype(str)
            if k.lower() in hub:  # '|'-separated lists of Broad IDs, compared by pert_id
                keep |= v.str.split("|").explode().str[:13].isin(prefixes).groupby(level=0).any()
            else:
                keep |= v.isin(want)
        table = table[keep].reset_index(drop=True)
    return table, roles


def read_column_map(path: str | os.PathLike) -> tuple[dict[str, str], str | None]:
    """A ``--columns MAP.toml``: ``{file column: role}`` and the dose unit.

    The TOML holds ``"file column" = "role"`` pairs, at top level or under ``[columns]``, and
    optionally ``dose_unit = "uM"``. Roles: see :data:`pipeline.profiles.imports.ROLES`.

    Raises
    ------
    ProfileImportError
        Naming the file, for unreadable TOML or a value that is not a role.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProfileImportError(f"{p}: not a readable TOML column map ({exc})") from None
    unit = data.pop("dose_unit", None)
    cols = data.pop("columns", {})
    cols.update({k: v for k, v in data.items() if not isinstance(v, dict)})
    bad = {k: v for k, v in cols.items() if v not in ROLES}
    if bad:
        raise ProfileImportError(f"{p}: {bad} are not roles; roles are {', '.join(ROLES)}")
    return dict(cols), (str(unit) if unit is not None else None)


def read_name_table(path: str | os.PathLike) -> pd.DataFrame:
    """A feature name table: (numbered column, name) pairs, or one name per line in feature order
    (a one-column CSV with a header, or a ``.txt`` of names)."""
    p = Path(path)
    if p.name.lower().endswith((".txt", ".txt.gz")):
        opener = gzip.open if p.name.lower().endswith(".gz") else open
        with opener(p, "rt") as fh:
            return pd.DataFrame({"name": [ln.strip() for ln in fh if ln.strip()]})
    return _read(p)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
