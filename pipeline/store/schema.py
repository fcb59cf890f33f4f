"""Load the declarations in ``schemas/`` and enforce them on tables.

Every Parquet table cmcl writes goes through :func:`write_table`, which validates the frame
against its declaration (columns, types, nullability) and writes atomically (temporary file,
then rename), so a reader never sees half a table.
"""

from __future__ import annotations

import json
import os
import re
from functools import cache
from importlib.resources import files
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store.atomic import atomic_path

__all__ = [
    "SchemaError",
    "table_schema",
    "array_schema",
    "store_layout",
    "table_names",
    "arrow_schema",
    "validate_table",
    "validate_array",
    "conform",
    "write_table",
    "read_table",
]

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "list<string>": pa.list_(pa.string()),
    "list<int16>": pa.list_(pa.int16()),
    "list<int32>": pa.list_(pa.int32()),
    "list<float32>": pa.list_(pa.float32()),
}


class SchemaError(ValueError):
    """A table does not match its declaration in ``schemas/``."""


def _load(relpath: str) -> dict[str, Any]:
    return json.loads(files("schemas").joinpath(relpath).read_text())


@cache
def table_schema(name: str) -> dict[str, Any]:
    """Return the declaration of table ``name`` (``schemas/tables/<name>.json``).

    Raises
    ------
    KeyError
        If no such table is declared; the message lists the declared ones.
    """
    if name not in table_names():
        raise KeyError(f"no table {name!r} in schemas/tables; declared: {', '.join(table_names())}")
    return _load(f"tables/{name}.json")


@cache
def array_schema(name: str) -> dict[str, Any]:
    """Return the declaration of array group ``name`` (``schemas/arrays/<name>.json``)."""
    return _load(f"arrays/{name}.json")


@cache
def store_layout() -> dict[str, Any]:
    """Return ``schemas/store.json``: which path of a store holds what."""
    return _load("store.json")


@cache
def table_names() -> tuple[str, ...]:
    """Names of all declared tables."""
    root = files("schemas").joinpath("tables")
    return tuple(sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json")))


def _pattern_field(name: str, column: str) -> pa.Field | None:
    """The field of ``column`` when it matches one of the table's declared column patterns
    (``"column_patterns"``: tables whose feature columns depend on the feature set), else None."""
    for spec in table_schema(name).get("column_patterns", []):
        if re.match(spec["pattern"], column):
            return pa.field(column, _ARROW_TYPES[spec["type"]], nullable=spec["nullable"])
    return None


def arrow_schema(name: str, columns: Sequence[str] | None = None) -> pa.Schema:
    """The ``pyarrow.Schema`` of table ``name``, in declared column order, or of its
    ``columns`` only, in that order. Columns matching one of the table's ``column_patterns``
    are accepted among ``columns`` and typed as the pattern declares.

    Raises
    ------
    SchemaError
        If one of ``columns`` is not declared.
    """
    fields = [pa.field(c["name"], _ARROW_TYPES[c["type"]], nullable=c["nullable"]) for c in table_schema(name)["columns"]]
    schema = pa.schema(fields)
    if columns is None:
        return schema
    out, unknown = [], []
    for c in columns:
        f = schema.field(c) if c in schema.names else _pattern_field(name, c)
        if f is None:
            unknown.append(c)
        else:
            out.append(f)
    if unknown:
        raise SchemaError(f"table {name!r}: columns {unknown} are not declared")
    return pa.schema(out)


def _declared_rows(spec: str | None) -> int | None:
    """The leading integer of a declared chunk shape such as ``"(16, c, y, x)"``, else None."""
    if not spec:
        return None
    head = spec.strip("() ").split(",")[0].strip()
    return int(head) if head.isdigit() else None


def validate_array(array: Any, group: str, path: str) -> None:
    """Check an open zarr array against ``schemas/arrays/<group>.json`` entry ``path``.

    Checks the dtype, the dimension names, and the chunk and shard lengths along the first
    axis where the declaration fixes them (``"(16, c, y, x)"``).

    Raises
    ------
    SchemaError
        Naming the array and every mismatch.
    KeyError
        If ``path`` is not declared in ``group``.
    """
    decl = {a["path"]: a for a in array_schema(group)["arrays"]}
    if path not in decl:
        raise KeyError(f"array {path!r} is not declared in schemas/arrays/{group}.json; declared: {sorted(decl)}")
    d = decl[path]
    problems = []
    if str(array.dtype) != d["dtype"]:
        problems.append(f"dtype {array.dtype} (declared {d['dtype']})")
    dims = list(getattr(array.metadata, "dimension_names", None) or [])
    if dims != d["dims"]:
        problems.append(f"dimension names {dims} (declared {d['dims']})")
    shards = getattr(array, "shards", None)
    for what, have, spec in (("chunk", array.chunks, d.get("chunks")), ("shard", shards, d.get("shards"))):
        want = _declared_rows(spec)
        if want is not None and (have is None or int(have[0]) != want):
            problems.append(f"{what} rows {None if have is None else have[0]} (declared {want})")
    if problems:
        raise SchemaError(f"array {group}/{path} ({getattr(array, 'store_path', '')}): " + "; ".join(problems))


def validate_table(table: pd.DataFrame | pa.Table, name: str) -> None:
    """Check ``table`` against the declaration of ``name``.

    The columns must be exactly the declared ones (order aside), each castable to its declared
    type without loss, and non-nullable columns must hold no nulls.

    Raises
    ------
    SchemaError
        Naming the table and every offending column.
    """
    conform(table, name)


def conform(table: pd.DataFrame | pa.Table, name: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Return ``table`` as a ``pyarrow.Table`` with exactly the declared schema of ``name``
    (or of its ``columns`` only, in that order: a projection read back from disk).

    Raises
    ------
    SchemaError
        On missing or extra columns, impossible casts or nulls in non-nullable columns.
    """
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    if columns is None and table_schema(name).get("column_patterns"):
        declared = arrow_schema(name).names
        columns = declared + [c for c in table.column_names if c not in declared and _pattern_field(name, c) is not None]
    schema = arrow_schema(name, columns)
    have, want = set(table.column_names), set(schema.names)
    problems = []
    if want - have:
        problems.append(f"missing columns {sorted(want - have)}")
    if have - want:
        problems.append(f"undeclared columns {sorted(have - want)}")
    if problems:
        raise SchemaError(f"table {name!r}: " + "; ".join(problems))
    arrays = []
    for f in schema:
        col = table.column(f.name)
        if col.type != f.type:
            if pa.types.is_null(col.type):
                col = pa.nulls(len(col), f.type)
            else:
                try:
                    col = col.cast(f.type, safe=True)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    problems.append(f"column {f.name!r}: cannot store {col.type} as {f.type} ({exc})")
                    continue
        if not f.nullable and col.null_count:
            problems.append(f"column {f.name!r}: {col.null_count} null value(s) in a non-nullable column")
        arrays.append(col)
    if problems:
        raise SchemaError(f"table {name!r}: " + "; ".join(problems))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_table(table: pd.DataFrame | pa.Table, name: str, path: str | os.PathLike) -> Path:
    """Validate ``table`` against ``name`` and write it to ``path`` atomically.

    The file appears under its final name only once completely written, so a crash never
    leaves a truncated table; an existing file is replaced (reruns never duplicate rows).
    """
    out = conform(table, name)
    with atomic_path(path) as tmp:
        pq.write_table(out, tmp, compression="zstd")
    return Path(path)


def read_table(name: str, path: str | os.PathLike, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read one Parquet file of table ``name``, validated against its declaration.

    ``columns`` reads only those (declared) columns: a per-cell table of millions of rows is
    then loaded at the width the caller needs, not at full width.
    """
    schema = arrow_schema(name, columns)  # an undeclared column fails here, naming the table
    # one open file: a path lets pyarrow open the file again for the data after
    # reading its footer, and a writer's os.replace in between (another process updating the
    # ledger) then mixes the old footer with the new pages ("Page was smaller than expected")
    with pa.OSFile(str(path)) as source:
        tbl = pq.read_table(source, columns=schema.names if columns is not None else None)
    if columns is None and table_schema(name).get("column_patterns"):
        # the pattern columns stay in the file's order, after the declared ones
        declared = schema.names
        columns = declared + [c for c in tbl.column_names if c not in declared]
    return conform(tbl, name, columns).to_pandas()
