"""Read compound files as streams of input-record chunks.

Every reader yields :class:`pandas.DataFrame` chunks of at most ``chunksize`` rows with the
columns

* ``Metadata_Source``: the file name;
* ``Metadata_CompoundID``: the identifier from the file, or ``<file>:<record>`` (1-based
  record number) where the file gives none; a table's ID column is ``id_col`` when given,
  else the first of :data:`pipeline.chem.choices.ID_COLUMNS` it has (without case, blanks or punctuation);
* ``Input_SMILES``: the SMILES as given ('' when absent);
* ``Error``: None, or why the record could not be read (a broken SDF record); such rows are
  carried through :func:`pipeline.chem.standardize.standardize_table` as failed.

Supported formats (by suffix, optionally ``.gz`` for text formats): CSV (``.csv``), TSV
(``.tsv``, ``.tab``), SMILES (``.smi``, ``.smiles``: ``SMILES [whitespace ID]`` per line),
SD files (``.sdf``, ``.sd``, ``.mol``) and Parquet (``.parquet``, ``.pq``). Nothing reads a
whole file at once, so memory is bounded by the chunk size.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from rdkit import Chem

from pipeline.chem.choices import ID_COLUMNS
from pipeline.chem.rdkit_log import quiet_rdkit

__all__ = ["READER_COLUMNS", "SUFFIXES", "find_id_column", "read_compounds", "check_compound_file"]

#: Columns of every chunk the readers yield.
READER_COLUMNS: tuple[str, ...] = ("Metadata_Source", "Metadata_CompoundID", "Input_SMILES", "Error")

#: File suffix -> format.
SUFFIXES: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".smi": "smi",
    ".smiles": "smi",
    ".sdf": "sdf",
    ".sd": "sdf",
    ".mol": "sdf",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def _squash(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def find_id_column(columns: Iterable[str], *, exclude: Iterable[str] = ()) -> str | None:
    """The first of :data:`ID_COLUMNS` among ``columns``, as spelled in ``columns``; None when there
    is none. Names are compared without case, blanks and punctuation (``Compound Name`` is
    ``compound_name``); ``exclude`` (e.g. the SMILES column) never counts."""
    skip = {_squash(c) for c in exclude}
    by_key: dict[str, str] = {}
    for c in columns:
        by_key.setdefault(_squash(c), str(c))
    return next((by_key[_squash(k)] for k in ID_COLUMNS if _squash(k) in by_key and _squash(k) not in skip), None)


def _format(path: Path) -> tuple[str, bool]:
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    fmt = SUFFIXES.get(suffixes[-1]) if suffixes else None
    if fmt is None or (gz and fmt == "parquet"):
        raise ValueError(
            f"cannot tell the format of {str(path)!r}; known suffixes: "
            f"{', '.join(SUFFIXES)} (text formats may end in .gz)"
        )
    return fmt, gz


def _open_text(path: Path, gz: bool) -> io.TextIOBase:
    if gz:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace", newline="")


def _resolve(wanted: str, seen: list[str], path: Path, role: str) -> str:
    """Case-insensitive column lookup with an error listing the columns seen."""
    if wanted in seen:
        return wanted
    matches = [c for c in seen if c.lower() == wanted.lower()]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(f"{role} column {wanted!r} is ambiguous in {path.name}: {matches}")
    raise ValueError(f"{role} column {wanted!r} not found in {path.name}; columns seen: {seen}")


def _frame(source: str, ids: list[str], smiles: list[str], errors: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Metadata_Source": pd.array([source] * len(ids), dtype="string"),
            "Metadata_CompoundID": pd.array(ids, dtype="string"),
            "Input_SMILES": pd.array(smiles, dtype="string"),
            "Error": pd.array(errors, dtype="string"),
        }
    )


def _row_ids(source: str, start: int, n: int) -> list[str]:
    return [f"{source}:{i}" for i in range(start, start + n)]


def _tidy(values: pd.Series) -> list[str]:
    return values.fillna("").astype(str).str.strip().tolist()


def _with_ids(values: list[str], fallback: list[str]) -> list[str]:
    return [v if v else f for v, f in zip(values, fallback)]


def _table_header(path: Path, gz: bool, sep: str) -> list[str]:
    """Column names of a CSV/TSV; an empty file is a ``ValueError`` saying what it needs."""
    try:
        header = pd.read_csv(path, sep=sep, nrows=0, compression="gzip" if gz else None)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty; a compound table needs a header row naming its "
                         f"SMILES column (e.g. 'smiles') and one row per compound") from None
    return [str(c) for c in header.columns]


def check_compound_file(path: str | os.PathLike, *, smiles_col: str = "smiles", id_col: str | None = None) -> str:
    """Check, without reading its records, that :func:`read_compounds` can read ``path``, and say
    where its records' identifiers will come from.

    Cheap enough to run before any work: the file exists, its suffix names a known format, it
    is not empty, and a table's SMILES (and ID) columns exist.

    Returns
    -------
    str
        One line: ``"one.csv: IDs from column 'ID'"``, or, for a table without an ID column,
        that its records are numbered by file and row and that ``--id-col`` names one.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist, or is a folder (the message asks whether ``--store`` was meant).
    ValueError
        Naming the file: unknown format, empty file, or a named column absent (the message
        lists the columns seen).
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a folder, not a compound file; did you mean --store {path}?")
    if not path.is_file():
        raise FileNotFoundError(f"no compound file at {str(path)!r}")
    fmt, gz = _format(path)
    if fmt in ("csv", "tsv"):
        seen = _table_header(path, gz, "," if fmt == "csv" else "\t")
    elif fmt == "parquet":
        seen = pq.ParquetFile(path).schema_arrow.names
    else:
        if path.stat().st_size == 0:
            raise ValueError(f"{path}: the file is empty; it holds no compound record")
        if fmt == "smi":
            return f"{path.name}: IDs from the second field of each line (else numbered {path.name}:<line>)"
        return (f"{path.name}: IDs from " + (f"data item <{id_col}>" if id_col else "each record's title line")
                + f" (else numbered {path.name}:<record>)")
    scol = _resolve(smiles_col, seen, path, "SMILES")
    icol = _id_column(seen, path, scol, id_col)
    if icol is not None:
        return f"{path.name}: IDs from column {icol!r}"
    return (f"{path.name}: no ID column (looked for {', '.join(ID_COLUMNS[:4])}, ...): records are numbered "
            f"{path.name}:1, {path.name}:2, ...; name the ID column with --id-col")


def _id_column(seen: list[str], path: Path, scol: str, id_col: str | None) -> str | None:
    """``id_col`` resolved in ``seen``, or the first of :data:`ID_COLUMNS` (None: number the rows)."""
    if id_col is not None:
        return _resolve(id_col, seen, path, "ID")
    return find_id_column(seen, exclude=(scol,))


def _read_table(
    path: Path, gz: bool, sep: str, smiles_col: str, id_col: str | None, chunksize: int
) -> Iterator[pd.DataFrame]:
    source = path.name
    seen = _table_header(path, gz, sep)
    scol = _resolve(smiles_col, seen, path, "SMILES")
    icol = _id_column(seen, path, scol, id_col)
    usecols = [scol] if icol is None else [scol, icol]
    reader = pd.read_csv(
        path,
        sep=sep,
        usecols=usecols,
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        chunksize=chunksize,
        compression="gzip" if gz else None,
    )
    yield from _tabular_frames(source, reader, scol, icol)


def _tabular_frames(source: str, chunks: Iterable[pd.DataFrame], scol: str, icol: str | None) -> Iterator[pd.DataFrame]:
    """Record frames from column chunks of a table (CSV/TSV or Parquet), ids numbered from 1 when absent."""
    start = 1
    for chunk in chunks:
        n = len(chunk)
        ids = _row_ids(source, start, n)
        if icol is not None:
            ids = _with_ids(_tidy(chunk[icol]), ids)
        yield _frame(source, ids, _tidy(chunk[scol]), [None] * n)
        start += n


def _read_smi(path: Path, gz: bool, chunksize: int) -> Iterator[pd.DataFrame]:
    source = path.name
    ids: list[str] = []
    smiles: list[str] = []
    with _open_text(path, gz) as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.split(maxsplit=1)
            if lineno == 1 and parts[0].lower() == "smiles":
                continue  # header line
            smiles.append(parts[0])
            ids.append(parts[1].strip() if len(parts) > 1 else f"{source}:{lineno}")
            if len(ids) == chunksize:
                yield _frame(source, ids, smiles, [None] * len(ids))
                ids, smiles = [], []
    if ids:
        yield _frame(source, ids, smiles, [None] * len(ids))


def _sdf_records(fh: io.TextIOBase) -> Iterator[str]:
    lines: list[str] = []
    for line in fh:
        if line.startswith("$$$$"):
            yield "".join(lines)
            lines = []
        else:
            lines.append(line)
    if any(ln.strip() for ln in lines):
        yield "".join(lines)


def _sdf_property(block: str, name: str) -> str | None:
    """Value of data item ``name`` in an SD record (case-insensitive), parsed from text."""
    lines = block.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(">") and "<" in line and ">" in line[1:]:
            field = line[line.index("<") + 1 : line.rindex(">")]
            if field.lower() == name.lower() and i + 1 < len(lines):
                return lines[i + 1].strip()
    return None


def _sdf_record(block: str, recno: int, id_col: str | None, source: str) -> tuple[str, str, str | None]:
    """(id, SMILES, error) for one SD record; a broken record gives ('...', '', reason)."""
    title = block.splitlines()[0].strip() if block.strip() else ""
    ident = _sdf_property(block, id_col) if id_col is not None else title
    ident = ident or f"{source}:{recno}"
    with quiet_rdkit() as capture:
        mol = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False)
        if mol is None:
            lines = [ln.split("]", 1)[-1].strip() for ln in capture.messages.splitlines()]
            detail = next((ln for ln in reversed(lines) if ln), "")
            reason = f"unreadable SD record {recno}" + (f": {detail}" if detail else "")
            return ident, "", reason
        mol.UpdatePropertyCache(strict=False)
        return ident, Chem.MolToSmiles(mol), None


def _read_sdf(path: Path, gz: bool, id_col: str | None, chunksize: int) -> Iterator[pd.DataFrame]:
    source = path.name
    rows: list[tuple[str, str, str | None]] = []
    with _open_text(path, gz) as fh:
        for recno, block in enumerate(_sdf_records(fh), start=1):
            rows.append(_sdf_record(block, recno, id_col, source))
            if len(rows) == chunksize:
                yield _frame(source, *map(list, zip(*rows)))
                rows = []
    if rows:
        yield _frame(source, *map(list, zip(*rows)))


def _read_parquet(path: Path, smiles_col: str, id_col: str | None, chunksize: int) -> Iterator[pd.DataFrame]:
    source = path.name
    pf = pq.ParquetFile(path)
    seen = pf.schema_arrow.names
    scol = _resolve(smiles_col, seen, path, "SMILES")
    icol = _id_column(seen, path, scol, id_col)
    batches = pf.iter_batches(batch_size=chunksize, columns=[scol] if icol is None else [scol, icol])
    yield from _tabular_frames(source, (b.to_pandas() for b in batches), scol, icol)


def read_compounds(
    path: str | os.PathLike,
    *,
    smiles_col: str = "smiles",
    id_col: str | None = None,
    chunksize: int = 10_000,
) -> Iterator[pd.DataFrame]:
    """Stream the compound records of one file in chunks.

    Parameters
    ----------
    path : str or os.PathLike
        A CSV, TSV, SMILES, SD or Parquet file (format from the suffix).
    smiles_col : str, default 'smiles'
        SMILES column of CSV/TSV/Parquet files, matched case-insensitively.
    id_col : str, optional
        Identifier column (CSV/TSV/Parquet) or SD data item; matched case-insensitively.
        If None: the second field of ``.smi`` lines, the title line of SD records, and for
        tables the first of :data:`ID_COLUMNS` present, else the record number
        (``<file>:<n>``, 1-based). Records with an empty identifier also get ``<file>:<n>``.
    chunksize : int, default 10000
        Most rows per yielded chunk.

    Yields
    ------
    pandas.DataFrame
        Chunks with the columns :data:`READER_COLUMNS` (string dtype). A broken SD record
        gives a row with ``Input_SMILES`` '' and the reason, including its record number, in
        ``Error``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the format is unknown, ``chunksize`` < 1, or a named column is absent (the message
        lists the columns seen).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no compound file at {str(path)!r}")
    if not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"chunksize must be a positive int, got {chunksize!r}")
    fmt, gz = _format(path)
    if fmt in ("csv", "tsv"):
        yield from _read_table(path, gz, "," if fmt == "csv" else "\t", smiles_col, id_col, chunksize)
    elif fmt == "smi":
        yield from _read_smi(path, gz, chunksize)
    elif fmt == "sdf":
        yield from _read_sdf(path, gz, id_col, chunksize)
    else:
        yield from _read_parquet(path, smiles_col, id_col, chunksize)
