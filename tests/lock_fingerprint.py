"""Behaviour lock for the layout move (issue #26): build small stores through the ``cmcl`` CLI and
fingerprint what the stages wrote.

Only entry points that the move keeps are used: the ``cmcl`` CLI (:data:`flows.cli.app`, driven
in-process with typer's ``CliRunner`` as the tests in ``tests/flows`` do), the store layout in
``schemas/store.json`` and the files themselves (Zarr through ``zarr``, Parquet through pandas).
Nothing here imports ``pipeline`` or ``cmcl_model``.

Fingerprints (a JSON tree, one subtree per stage):

- integer arrays (raw pixels as stored, label images, crops): SHA-256 of their C-order bytes,
  shape and dtype, plus integer sums (per channel, per crop and channel, label count) that say
  where a mismatch is;
- float arrays (illumination functions): shape, dtype and 8 x 8 block means per channel,
  compared with a relative tolerance;
- tables: columns, row count, one SHA-256 per ``Metadata_*`` column over the rows sorted by all
  ``Metadata_*`` columns, exact sums of integer and boolean columns, ``[sum, sum of |x|, NaN
  count]`` per float column and ``[sum, sum of |x|]`` per row over the float columns; floats are
  compared with :data:`RTOL` relative to the sum of magnitudes (float32 carries ~7 digits;
  another CPU's SIMD or BLAS may change the last bits);
- array attributes that record what a stage decided (channel map, dark offsets, flatness).

Left out because they legitimately change run to run or once at the move: timestamps, absolute
paths, code fingerprints and provenance hashes (ledger ``Fingerprint``, ``UpdatedAt``, ``Source``;
quarantine ``File``; ``tables/profiles/state.json``; ``tables/compounds.fingerprint``), the crops'
``ingest_settings`` attribute (new settings may appear) and Prefect's run records.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

__all__ = ["REPO", "GOLDEN_DIR", "RTOL", "SCENARIOS", "Scenario", "build_store", "fingerprint_store", "compare",
           "golden_path", "load_golden", "write_golden"]

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
GOLDEN_DIR = DATA / "behaviour_lock"
#: Relative tolerance of every float comparison (relative to the magnitude summed).
RTOL = 1e-4
#: Columns that vary run to run or carry provenance, per table.
EXCLUDED_COLUMNS = {"ledger": {"Fingerprint", "UpdatedAt", "Source"}, "quarantine": {"File"}}
#: Attributes kept per array group (the rest are provenance or settings echoes).
KEPT_ATTRS = {"plates": ("channels", "channel_map", "channel_source", "pixel_size_um", "objective"),
              "illumination": ("channels", "method", "filter_fraction", "dark", "dark_estimated", "flatness",
                               "harmony_rms", "n_fields", "n_fields_used"),
              "crops": ("channels", "crop_size")}
#: Which stage wrote each table (what a mismatch message names).
TABLE_STAGES = {"ledger": "ingest", "platemap": "ingest", "quarantine": "ingest", "fields": "crops",
                "cells": "crops", "features": "features", "profiles_wells": "profiles",
                "profiles_selected": "profiles", "profiles_consensus": "profiles", "activity": "profiles",
                "compound_inputs": "compounds", "compounds": "compounds", "graphs": "compounds",
                "well_compounds": "compounds"}


@dataclass(frozen=True)
class Scenario:
    """One store built through the CLI: ``commands(workdir, store)`` lists the ``cmcl`` argument lists."""

    name: str
    description: str
    commands: Callable[[Path, Path], list[list[str]]] = field(repr=False)


def _lock_commands(workdir: Path, store: Path) -> list[list[str]]:
    inbox, s = workdir / "inbox", ["--store", str(store), "--crop-size", "32"]
    return [["--quiet", "synth", str(inbox), "--plate-id", "G1", "--wells", "6", "--sites", "2", "--size", "128",
             "--seed", "3"],
            ["--quiet", "ingest", str(inbox / "G1"), *s],
            ["--quiet", "ingest", str(DATA / "phenix_BR00121482"), *s],  # channel map from its Index.idx.xml
            ["--quiet", "ingest", str(DATA / "phenix_BR00143976_C03"), *s, "--channels", "DNA=5,ER=2,RNA=6,AGP=3,Mito=4"],
            ["--quiet", "compounds", "--store", str(store)],  # G1's plate map (the real fields have none)
            ["--quiet", "profile", "--store", str(store), "--null-size", "100"]]


#: One store holds both kinds of input, because feature selection and consensus run over the whole
#: store and the real fields alone cannot be profiled: each is one well of its own plate without a
#: negative control, so normalized against itself it is all zeros and selection keeps no feature.
SCENARIOS: dict[str, Scenario] = {
    "store": Scenario("store", "generated plate G1 (cmcl synth: 6 wells x 2 sites, 128 px, seed 3, ImageXpress) and "
                               "the two real Phenix fields of tests/data (BR00121482 A01 f1 with its Harmony index; "
                               "BR00143976 C03 f3 with --channels): 32 px crops, default features, compounds, profiles",
                      _lock_commands),
}


def build_store(scenario: Scenario, workdir: Path) -> Path:
    """Run the scenario's ``cmcl`` commands in-process; returns the store. Raises AssertionError
    naming the command and its output when one exits non-zero."""
    from typer.testing import CliRunner

    from flows.cli import app

    store = workdir / "store"
    runner = CliRunner()
    for args in scenario.commands(workdir, store):
        result = runner.invoke(app, args)
        if result.exit_code != 0:
            raise AssertionError(f"`cmcl {' '.join(args)}` exited {result.exit_code}:\n{result.output}\n"
                                 f"{result.exception!r}")
    return store


# ----------------------------------------------------------------------------------- fingerprints
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _int_array(a: np.ndarray) -> dict[str, Any]:
    """Hash + sums of an integer array: (C, Y, X) per channel, (N, C, S, S) per crop and channel,
    (Y, X) label images: number of labels and labelled pixels."""
    out: dict[str, Any] = {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": _sha(np.ascontiguousarray(a).tobytes())}
    if a.ndim == 4:
        out["sums"] = a.sum(axis=(2, 3), dtype=np.int64).tolist()
    elif a.ndim == 3:
        out["sums"] = a.sum(axis=(1, 2), dtype=np.int64).tolist()
    else:
        out["labels"] = int(np.unique(a[a > 0]).size)
        out["labelled_pixels"] = int(np.count_nonzero(a))
    return out


def _float_array(a: np.ndarray, *, grid: int = 8) -> dict[str, Any]:
    """(C, Y, X) float array: shape, dtype and ``grid`` x ``grid`` block means per channel."""
    a64 = a.astype(np.float64)
    ys = np.array_split(np.arange(a.shape[-2]), grid)
    xs = np.array_split(np.arange(a.shape[-1]), grid)
    blocks = [[_g(ch[np.ix_(y, x)].mean()) for y in ys for x in xs] for ch in a64.reshape(-1, *a.shape[-2:])]
    return {"shape": list(a.shape), "dtype": str(a.dtype), "block_means": blocks}


def _arrays(group_path: Path) -> dict[str, np.ndarray]:
    import zarr

    g = zarr.open_group(str(group_path), mode="r")
    return {name: a[...] for name, a in sorted(g.members(max_depth=None)) if isinstance(a, zarr.Array)}


def _attrs(group_path: Path, kind: str) -> dict[str, Any]:
    import zarr

    attrs = dict(zarr.open_group(str(group_path), mode="r").attrs)
    attrs = attrs.get("cmcl", attrs) if kind == "plates" else attrs
    return {k: attrs[k] for k in KEPT_ATTRS[kind] if k in attrs}


def _key_text(v: Any) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if isinstance(v, (list, tuple, np.ndarray)):
        return json.dumps(np.asarray(v).tolist() if isinstance(v, np.ndarray) else list(v), default=str)
    return str(v)


def _column_text(s: pd.Series) -> list[str]:
    return [_key_text(v.tolist() if isinstance(v, np.ndarray) else v) if v is not None else "None" for v in s]


def _g(x: float) -> float:
    """A float kept to 10 significant digits (the comparisons use 4)."""
    return float(f"{x:.10g}")


def table_fingerprint(df: pd.DataFrame, *, drop: set[str] = frozenset()) -> dict[str, Any]:
    """Fingerprint of one table; see the module docstring.

    ``kinds`` has one letter per column: ``k`` a ``Metadata_*`` key (its SHA-256 in ``keys``),
    ``i`` integer or boolean (exact sum in ``ints``), ``f`` float (``[sum, sum |x|, NaN count]``
    in ``floats``), ``t`` text or lists (SHA-256 in ``text``), each list in column order.
    """
    df = df[[c for c in df.columns if c not in drop]]
    meta = [c for c in df.columns if c.startswith("Metadata_")]
    if meta and len(df):
        order = sorted(range(len(df)), key=lambda i: tuple(_key_text(df[c].iloc[i]) for c in meta))
        df = df.iloc[order].reset_index(drop=True)
    out: dict[str, Any] = {"columns": list(df.columns), "rows": len(df), "kinds": "", "keys": [], "ints": [],
                           "floats": [], "text": []}
    floats = []
    for c in df.columns:
        s = df[c]
        if c in meta:
            kind, value = "k", _sha("\n".join(_column_text(s)).encode())[:16]
        elif pd.api.types.is_bool_dtype(s) or pd.api.types.is_integer_dtype(s):
            kind, value = "i", int(s.astype(np.int64).sum())
        elif pd.api.types.is_float_dtype(s):
            v = s.to_numpy(np.float64)
            kind, value = "f", [_g(np.nansum(v)), _g(np.nansum(np.abs(v))), int(np.isnan(v).sum())]
            floats.append(c)
        else:  # text, lists (graphs): exact
            kind, value = "t", _sha("\n".join(_column_text(s)).encode())[:16]
        out["kinds"] += kind
        out[{"k": "keys", "i": "ints", "f": "floats", "t": "text"}[kind]].append(value)
    if floats:
        m = df[floats].to_numpy(np.float64)
        out["row_sums"] = [[_g(s), _g(a)] for s, a in zip(np.nansum(m, axis=1), np.nansum(np.abs(m), axis=1))]
    return out


def _columns_of(table: dict[str, Any], kind: str) -> list[str]:
    return [c for c, k in zip(table["columns"], table["kinds"]) if k == kind]


def _store_paths() -> dict[str, str]:
    return {k: v["path"] for k, v in json.loads((REPO / "schemas" / "store.json").read_text())["paths"].items()}


def _plates(store: Path, paths: dict[str, str]) -> list[str]:
    prefix, suffix = paths["plates"].split("{plate}")
    return sorted(p.name[: -len(suffix.split("/")[-1])] for p in (store / prefix).glob("*" + suffix.split("/")[-1]))


def fingerprint_store(store: Path) -> dict[str, dict[str, Any]]:
    """Fingerprints of everything the stages wrote, grouped by stage, keyed by store-relative path."""
    paths = _store_paths()
    out: dict[str, dict[str, Any]] = {s: {} for s in ("ingest", "illumination", "segmentation", "crops", "features",
                                                      "profiles", "compounds")}
    for plate in _plates(store, paths):
        rel = paths["plates"].format(plate=plate)
        out["ingest"][rel + ":attrs"] = _attrs(store / rel, "plates")
        for name, a in _arrays(store / rel).items():
            out["segmentation" if "/labels/" in name else "ingest"][f"{rel}:{name}"] = _int_array(a)
        rel = paths["illumination"].format(plate=plate)
        out["illumination"][rel + ":attrs"] = _attrs(store / rel, "illumination")
        for name, a in _arrays(store / rel).items():
            out["illumination"][f"{rel}:{name}"] = _float_array(a)
        rel = paths["crops"].format(plate=plate)
        if (store / rel).exists():
            out["crops"][rel + ":attrs"] = _attrs(store / rel, "crops")
            for name, a in _arrays(store / rel).items():
                out["crops"][f"{rel}:{name}"] = _int_array(a)
    for table, stage in TABLE_STAGES.items():
        template = paths[table]
        files = sorted(store.glob(template.replace("{plate}", "*"))) if "{plate}" in template else [store / template]
        for f in files:
            if f.is_file():
                out[stage][str(f.relative_to(store))] = table_fingerprint(pd.read_parquet(f),
                                                                         drop=EXCLUDED_COLUMNS.get(table, set()))
    return out


# ------------------------------------------------------------------------------------- comparison
def _close(a: float, b: float, scale: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= RTOL * max(abs(scale), abs(a), abs(b)) + 1e-9


def _compare_table(where: str, got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    out = []
    if got["columns"] != want["columns"]:
        added = [c for c in got["columns"] if c not in want["columns"]]
        lost = [c for c in want["columns"] if c not in got["columns"]]
        out.append(f"{where}: columns changed (new {added[:5]}, gone {lost[:5]}, or reordered)")
    if got["rows"] != want["rows"]:
        return out + [f"{where}: {got['rows']} rows, golden {want['rows']}"]
    for kind, name in (("k", "keys"), ("i", "ints"), ("t", "text"), ("f", "floats")):
        have = dict(zip(_columns_of(got, kind), got[name]))
        for c, v in zip(_columns_of(want, kind), want[name]):
            if c not in have:
                if c in got["columns"]:
                    out.append(f"{where}: column {c!r} changed type")
                continue
            g = have[c]
            if kind == "k" and g != v:
                out.append(f"{where}: key column {c!r} holds other values")
            elif kind == "t" and g != v:
                out.append(f"{where}: column {c!r}: values differ")
            elif kind == "i" and g != v:
                out.append(f"{where}: column {c!r}: sum {g} != golden {v}")
            elif kind == "f" and (g[2] != v[2] or not _close(g[0], v[0], max(g[1], v[1])) or not _close(g[1], v[1], v[1])):
                out.append(f"{where}: column {c!r}: sum {g[0]:.9g} (|x| {g[1]:.9g}, {g[2]} NaN) != golden "
                           f"{v[0]:.9g} (|x| {v[1]:.9g}, {v[2]} NaN) at rtol {RTOL:g}")
    bad_rows = [i for i, (g, w) in enumerate(zip(got.get("row_sums", []), want.get("row_sums", [])))
                if not (_close(g[0], w[0], max(g[1], w[1])) and _close(g[1], w[1], w[1]))]
    if bad_rows:
        out.append(f"{where}: row sums differ in {len(bad_rows)} row(s) (sorted by Metadata_*: first {bad_rows[:5]})")
    return out


def _compare_value(where: str, got: Any, want: Any) -> list[str]:
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{where}: {got!r} != golden {want!r}"]
        out = [f"{where}.{k}: missing" for k in want if k not in got] + [f"{where}.{k}: new" for k in got if k not in want]
        return out + [m for k in want if k in got for m in _compare_value(f"{where}.{k}", got[k], want[k])]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{where}: length {len(got) if isinstance(got, list) else got!r} != golden {len(want)}"]
        out = [m for i, (g, w) in enumerate(zip(got, want)) for m in _compare_value(f"{where}[{i}]", g, w)]
        return out[:3] + ([f"{where}: {len(out) - 3} more"] if len(out) > 3 else [])
    if isinstance(want, float) and not isinstance(want, bool) and isinstance(got, (int, float)):
        return [] if _close(float(got), want, want) else [f"{where}: {got!r} != golden {want!r} at rtol {RTOL:g}"]
    return [] if got == want else [f"{where}: {got!r} != golden {want!r}"]


def _compare_int_array(where: str, got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    if (got["shape"], got["dtype"]) != (want["shape"], want["dtype"]):
        return [f"{where}: shape/dtype {got['shape']} {got['dtype']} != golden {want['shape']} {want['dtype']}"]
    if got["sha256"] == want["sha256"]:
        return []
    detail = [m for k in want if k not in ("shape", "dtype", "sha256") for m in _compare_value(k, got.get(k), want[k])]
    return [f"{where}: bytes differ (SHA-256){'; ' + '; '.join(detail) if detail else ''}"]


def compare(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> list[str]:
    """Every difference between two :func:`fingerprint_store` trees, as lines naming the stage,
    the array or table (store-relative path) and the column or attribute."""
    out = []
    for stage in want:
        g, w = got.get(stage, {}), want[stage]
        out += [f"[{stage}] {k}: missing (the golden store has it)" for k in w if k not in g]
        out += [f"[{stage}] {k}: new (not in the golden store)" for k in g if k not in w]
        for k in (k for k in w if k in g):
            where = f"[{stage}] {k}"
            if k.endswith(":attrs"):
                out += _compare_value(where, g[k], w[k])
            elif "sha256" in w[k]:
                out += _compare_int_array(where, g[k], w[k])
            elif "block_means" in w[k]:
                out += _compare_value(where, g[k], w[k])
            else:
                out += _compare_table(where, g[k], w[k])
    return out


def golden_path(name: str) -> Path:
    return GOLDEN_DIR / f"{name}.json"


def _tables(prints: dict[str, dict[str, Any]]):
    return (v for items in prints.values() for v in items.values() if isinstance(v, dict) and "kinds" in v)


def load_golden(name: str) -> dict[str, Any]:
    """The golden fingerprints of one scenario (``stages``), column lists expanded."""
    doc = json.loads(golden_path(name).read_text())
    for t in _tables(doc["stages"]):
        t["columns"] = doc["column_sets"][t["columns"]]
    return doc


def write_golden(name: str, prints: dict[str, dict[str, Any]], *, note: str) -> Path:
    """Write one scenario's golden fingerprints as compact JSON; tables with the same columns
    share one column list (``column_sets``)."""
    sets: dict[str, list[str]] = {}
    for t in _tables(prints):
        key = _sha("\n".join(t["columns"]).encode())[:12]
        sets[key] = t["columns"]
        t["columns"] = key
    doc = {"scenario": name, "description": SCENARIOS[name].description, "note": note, "column_sets": sets,
           "stages": prints}
    path = golden_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    compact = lambda v: json.dumps(v, separators=(",", ":"))  # noqa: E731
    lines = ["{", *(f" {compact(k)}:{compact(doc[k])}," for k in ("scenario", "description", "note")), ' "column_sets":{']
    lines += [f"  {compact(k)}:{compact(v)}," for k, v in sets.items()]
    lines[-1] = lines[-1].rstrip(",")
    lines += [" },", ' "stages":{']  # one line per array or table: a regeneration's diff says what changed
    for stage, items in prints.items():
        lines.append(f"  {compact(stage)}:{{")
        lines += [f"   {compact(k)}:{compact(v)}," for k, v in items.items()]
        lines[-1] = lines[-1].rstrip(",")
        lines.append("  },")
    lines[-1] = "  }"
    lines += [" }", "}"]
    path.write_text("\n".join(lines) + "\n")
    return path
