"""Check a whole store against ``schemas/`` and against itself; optionally clear half-written leftovers.

:func:`verify_store` walks a store and reports every :class:`Problem` it finds:

* every table file validates against its declaration (:func:`pipeline.store.schema.read_table`);
* per plate, the crops array has exactly one crop per ``cells`` row, every
  ``Metadata_CropIndex`` indexes that array, and the ledger's ``N_Cells`` agrees;
* every ``fields`` row's ``Metadata_FieldPath`` exists in the plate's OME-Zarr with an image
  ``0`` and ``labels``;
* every plate the ledger holds as ``complete`` has its plate Zarr, crops Zarr and tables;
* no orphans: plate Zarr, crops, illumination or per-plate tables of a plate that is absent
  from the ledger or not complete;
* no half-written leftovers: ``.staging/*``, ``*.tmp`` files of atomic writes, ``runs/*``
  without ``config.json``;
* with ``deep=True``, every chunk of every complete plate's arrays decodes and matches its
  CRC32C checksum.

With ``repair=True`` the leftovers and the outputs of plates whose ledger row is not complete
are removed, so the next run redoes them; complete plates are never touched.
"""

from __future__ import annotations

import glob
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from pipeline.store.schema import SchemaError, read_table, table_names, table_schema
from pipeline.store.paths import Store

__all__ = ["Problem", "Rederive", "verify_store", "format_problems", "damaged_chunks", "deep_check", "rel_path"]

#: Per-plate tables whose files must exist for a complete plate (``tiles`` is optional).
_REQUIRED_PLATE_TABLES = ("platemap", "fields", "cells", "quarantine")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store: the offending path (relative to the store root where
    possible) and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


#: ``rederive(store, plate, found) -> problems left``: re-derive a complete plate's damaged
#: chunks (``found`` by kind, as :func:`deep_check` returns it); :func:`verify_store`'s repair.
Rederive = Callable[[Store, str, dict[str, list[Problem]]], list[Problem]]


def format_problems(problems: list[Problem]) -> str:
    """One line per problem, for a CLI to print."""
    return "\n".join(str(p) for p in problems)


def _per_plate_tables() -> list[str]:
    """Per-plate tables written by ingestion. Derived tables (``"derived": true``: profiles,
    rebuilt by ``cmcl profile``, also for imported plates the ledger does not hold) are not
    plate outputs."""
    return [n for n in table_names() if "{plate}" in table_schema(n)["path"] and not table_schema(n).get("derived")]


def rel_path(store: Store, path: Path) -> str:
    """``path`` relative to the store root where it lies inside it, else as it is."""
    try:
        return str(path.relative_to(store.root))
    except ValueError:
        return str(path)


def _plate_of(path: Path, suffix: str) -> str:
    return path.name[: -len(suffix)] if path.name.endswith(suffix) else path.name


def _crops_length(path: Path) -> int | None:
    """Length of ``crops`` in a crops Zarr group, read from its metadata (None if unreadable)."""
    meta = path / "crops" / "zarr.json"
    try:
        return int(json.loads(meta.read_text())["shape"][0])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def _field_ok(plate_zarr: Path, field_path: str) -> str | None:
    """None if ``field_path`` has an image ``0`` and ``labels`` in the plate, else what is missing."""
    field = plate_zarr / field_path
    if not (field / "zarr.json").is_file():
        return "field group missing"
    if not (field / "0" / "zarr.json").is_file():
        return "image '0' missing"
    if not (field / "labels" / "zarr.json").is_file():
        return "labels missing"
    return None


def _leftovers(store: Store) -> list[tuple[Path, str]]:
    """Half-written things: staging folders, temporary files of atomic writes, runs without config."""
    out: list[tuple[Path, str]] = []
    staging = store.root / ".staging"
    if staging.is_dir():
        out += [(p, "half-written staging output of an interrupted ingest") for p in sorted(staging.iterdir())]
    for p in sorted(store.root.rglob("*.tmp")):
        if staging in p.parents:
            continue
        out.append((p, "temporary file of an interrupted atomic write"))
    runs = store.root / "runs"
    if runs.is_dir():
        out += [(p, "run folder without config.json (interrupted before training started)")
                for p in sorted(runs.iterdir()) if p.is_dir() and not (p / "config.json").is_file()]
    return out


def _plate_outputs(store: Store, plate: str) -> list[Path]:
    """Every existing output path of ``plate`` (arrays, QC folder, per-plate tables)."""
    paths = [store.plate_zarr(plate), store.crops_zarr(plate), store.illumination_zarr(plate),
             store.root / "illumination" / plate]
    paths += [store.table_path(n, plate=plate) for n in _per_plate_tables()]
    return [p for p in paths if p.exists()]


def _plates_on_disk(store: Store) -> set[str]:
    plates = {_plate_of(Path(p), ".ome.zarr") for p in glob.glob(str(store.root / "plates" / "*.ome.zarr"))}
    plates |= {_plate_of(Path(p), ".zarr") for p in glob.glob(str(store.root / "crops" / "*.zarr"))}
    plates |= {_plate_of(Path(p), ".zarr") for p in glob.glob(str(store.root / "illumination" / "*.zarr"))}
    for name in _per_plate_tables():
        plates |= {_plate_of(p, ".parquet") for p in store.table_files(name)}
    return plates


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def verify_store(root: Store | str | Path, *, repair: bool = False, deep: bool = False,
                 rederive: Rederive | None = None) -> list[Problem]:
    """Check a store against ``schemas/`` and itself.

    Parameters
    ----------
    root : Store, str or Path
        The store (or its directory).
    repair : bool, default False
        Remove half-written leftovers (``.staging/*``, ``*.tmp``, runs without ``config.json``)
        and every output of plates whose ledger row is missing or not ``complete``, so the next
        run redoes them. Complete plates are never touched; problems repair cannot fix (a
        complete plate whose files disagree) are still returned. With ``deep`` and ``rederive``,
        damaged crops, labels and illumination functions are re-derived by
        ``rederive(store, plate, found)`` (:func:`pipeline.ingest.repair.repair_plate`: from the
        plate's images; damaged images are reported with the folder to re-ingest from).
    deep : bool, default False
        Also decode every chunk of every complete plate's arrays (images, labels, crops, tiles,
        illumination; each chunk carries a CRC32C checksum) and report each damaged chunk by
        plate, array and chunk index (:func:`deep_check`).
    rederive : callable, optional
        ``rederive(store, plate, found) -> problems left``: what ``repair`` does with a plate's
        damaged chunks (``found`` as :func:`deep_check` returns it); without it they are reported.

    Returns
    -------
    list of Problem
        What is wrong (after repair, what is still wrong); empty for a sound store.

    Raises
    ------
    NotADirectoryError
        If ``root`` is not a directory.
    """
    store = Store.of(root)
    if not store.root.is_dir():
        raise NotADirectoryError(f"store {str(store.root)!r} is not a directory")
    problems: list[Problem] = []

    def report(path: Path, message: str) -> None:
        problems.append(Problem(rel_path(store, path), message))

    # 1. half-written leftovers
    for path, why in _leftovers(store):
        if repair:
            _remove(path)
        else:
            report(path, why)

    # 2. every table file validates
    tables: dict[tuple[str, Path], pd.DataFrame] = {}
    for name in table_names():
        for path in store.table_files(name):
            try:
                tables[(name, path)] = read_table(name, path)
            except (SchemaError, OSError, ValueError) as exc:  # pyarrow's errors are OSError/ValueError
                report(path, f"does not match schemas/tables/{name}.json: {exc}")

    ledger_path = store.table_path("ledger")
    ledger = tables.get(("ledger", ledger_path))
    if ledger is None and ledger_path.exists():
        return problems  # unreadable ledger: nothing else can be judged (already reported)
    if ledger is None:
        ledger = pd.DataFrame(columns=["Metadata_Plate", "Status", "N_Cells"])
    dup = ledger["Metadata_Plate"][ledger["Metadata_Plate"].duplicated()].tolist()
    if dup:
        report(ledger_path, f"plates listed more than once: {sorted(set(dup))}")
    status = dict(zip(ledger["Metadata_Plate"], ledger["Status"]))
    complete = sorted(p for p, s in status.items() if s == "complete")

    # 3. orphans: outputs of plates absent from the ledger or not complete
    for plate in sorted(_plates_on_disk(store) - set(complete)):
        why = ("absent from the ledger" if plate not in status
               else f"ledger status {status[plate]!r}, not 'complete'")
        for path in _plate_outputs(store, plate):
            if repair:
                _remove(path)
            else:
                report(path, f"output of plate {plate!r}, {why}")

    # 4. complete plates: everything present and consistent
    rows = ledger.set_index("Metadata_Plate")
    for plate in complete:
        ledger_cells = rows.loc[plate, "N_Cells"]
        ledger_cells = int(ledger_cells.iloc[-1] if isinstance(ledger_cells, pd.Series) else ledger_cells)
        _check_complete_plate(store, plate, tables, ledger_cells=ledger_cells, report=report)
        if deep:
            found = deep_check(store, plate)
            damaged = [p for group in found.values() for p in group]
            if damaged and repair and rederive is not None:
                problems.extend(rederive(store, plate, found))
            else:
                problems.extend(damaged)
    return problems



def _check_complete_plate(store: Store, plate: str, tables: dict[tuple[str, Path], pd.DataFrame], *,
                          ledger_cells: int, report: Callable[[Path, str], None]) -> None:
    """Report what is missing or inconsistent in a plate the ledger holds as complete: its Zarr
    groups and tables present, one crop per cells row, crop indexes in range and unique, the
    ledger's cell count, every field's image and labels."""
    ledger_path = store.table_path("ledger")
    plate_zarr, crops_zarr = store.plate_zarr(plate), store.crops_zarr(plate)
    for path, what in ((plate_zarr, "plate OME-Zarr"), (crops_zarr, "crops Zarr")):
        if not path.is_dir():
            report(path, f"{what} of complete plate {plate!r} is missing")
    for name in _REQUIRED_PLATE_TABLES:
        path = store.table_path(name, plate=plate)
        if not path.is_file():
            report(path, f"{name} table of complete plate {plate!r} is missing")
    cells = tables.get(("cells", store.table_path("cells", plate=plate)))
    n_crops = _crops_length(crops_zarr) if crops_zarr.is_dir() else None
    if crops_zarr.is_dir() and n_crops is None:
        report(crops_zarr / "crops", "crops array metadata is missing or unreadable")
    if cells is not None:
        cpath = store.table_path("cells", plate=plate)
        if n_crops is not None:
            if n_crops != len(cells):
                report(crops_zarr, f"{n_crops} crops but {len(cells)} rows in the cells table")
            bad = cells["Metadata_CropIndex"][(cells["Metadata_CropIndex"] < 0)
                                              | (cells["Metadata_CropIndex"] >= n_crops)]
            if len(bad):
                report(cpath, f"{len(bad)} Metadata_CropIndex value(s) outside 0..{n_crops - 1} "
                              f"(first: {int(bad.iloc[0])})")
        if cells["Metadata_CropIndex"].duplicated().any():
            report(cpath, "duplicate Metadata_CropIndex values")
        if ledger_cells != len(cells):
            report(ledger_path, f"plate {plate!r}: N_Cells {ledger_cells} but {len(cells)} rows in the cells table")
        if (cells["Metadata_Plate"] != plate).any():
            report(cpath, f"rows of other plates than {plate!r}")
    fields = tables.get(("fields", store.table_path("fields", plate=plate)))
    if fields is not None and plate_zarr.is_dir():
        for fp in fields["Metadata_FieldPath"]:
            missing = _field_ok(plate_zarr, str(fp))
            if missing:
                report(plate_zarr / str(fp), f"fields row of plate {plate!r}: {missing}")


# --------------------------------------------------------------------------------------------
# deep: decode every chunk
# --------------------------------------------------------------------------------------------
def _chunk_slices(shape: tuple[int, ...], chunks: tuple[int, ...]):
    import itertools

    grids = [range(0, max(n, 1), c) if n else range(0) for n, c in zip(shape, chunks)]
    for starts in itertools.product(*grids):
        yield tuple(a // c for a, c in zip(starts, chunks)), tuple(slice(a, min(a + c, n)) for a, c, n in zip(starts, chunks, shape))


def damaged_chunks(array_path: str | Path) -> list[tuple[tuple[int, ...], str]]:
    """Decode every chunk of the zarr v3 array at ``array_path``; return (chunk index, error) of
    each chunk that fails (a checksum mismatch, a codec error, a truncated shard).

    Crop and tile arrays in the layout ingestion writes are read chunk by chunk with
    :class:`pipeline.store.crops.CropArrayReader` (checksums checked); other arrays through zarr.
    """
    import zarr

    from pipeline.store.crops import CropArrayReader

    path = Path(array_path)
    out: list[tuple[tuple[int, ...], str]] = []
    reader = CropArrayReader(path)
    if reader.direct:
        n_chunks = -(-reader.shape[0] // reader.chunk_len)
        for c in range(n_chunks):
            try:
                reader.read_chunk(c)
            except Exception as exc:  # noqa: BLE001 - any decoding failure is damage to report
                out.append(((c,), f"{type(exc).__name__}: {exc}"))
        return out
    arr = zarr.open_array(str(path), mode="r")
    for index, sl in _chunk_slices(arr.shape, arr.chunks):
        try:
            arr[sl]
        except Exception as exc:  # noqa: BLE001 - any decoding failure is damage to report
            out.append((index, f"{type(exc).__name__}: {exc}"))
    return out


def _arrays_of(group_dir: Path) -> list[Path]:
    """Every array (a folder whose zarr.json says node_type 'array') under ``group_dir``."""
    found = []
    for meta in sorted(group_dir.rglob("zarr.json")):
        try:
            if json.loads(meta.read_text()).get("node_type") == "array":
                found.append(meta.parent)
        except (OSError, ValueError):
            found.append(meta.parent)
    return found


def deep_check(store: Store, plate: str) -> dict[str, list[Problem]]:
    """Decode every chunk of a plate's arrays: ``{'plate': [...], 'crops': [...], 'illumination': [...]}``,
    one :class:`Problem` per damaged chunk naming the plate, the array and the chunk."""
    found: dict[str, list[Problem]] = {"plate": [], "crops": [], "illumination": []}
    roots = {"plate": store.plate_zarr(plate), "crops": store.crops_zarr(plate), "illumination": store.illumination_zarr(plate)}
    for kind, root in roots.items():
        if not root.is_dir():
            continue
        for arr in _arrays_of(root):
            try:
                bad = damaged_chunks(arr)
            except Exception as exc:  # noqa: BLE001 - unreadable metadata is damage too
                bad = [((), f"{type(exc).__name__}: {exc}")]
            for index, why in bad:
                found[kind].append(Problem(rel_path(store, arr), f"plate {plate!r}: chunk {'.'.join(map(str, index))} "
                                                             f"is damaged ({why})"))
    return found
