"""Plate maps as the field writes them: JUMP / LINCS (Broad) style, beside cmcl's ``platemap.csv``.

A Broad-style plate map is three tables:

* the plate map itself, one row per well: ``well_position``, ``broad_sample`` (empty for solvent
  wells), optionally ``mmoles_per_liter``, ``solvent``, ``plate_map_name``;
* the compound metadata, one row per ``broad_sample``: ``smiles``, ``InChIKey``,
  ``pert_type`` (``trt`` / ``control``), ``control_type`` (``negcon``, ``poscon_*``);
* ``barcode_platemap.csv``: ``Assay_Plate_Barcode`` -> ``Plate_Map_Name`` (which map each plate
  uses; the map is then ``<Plate_Map_Name>.txt`` / ``.tsv`` / ``.csv`` in the plate-map folder).

Column map (role -> the first column found among these names; override any of them with
``[columns]`` in the config):

=================  ============================================================================
role               columns tried
=================  ============================================================================
``well``           ``well_position``, ``Metadata_Well``, ``Metadata_well_position``, ``well``
``compound_id``    ``broad_sample``, ``Metadata_broad_sample``, ``Metadata_CompoundID``,
                   ``compound_id``, ``pert_id``
``smiles``         ``smiles``, ``SMILES``, ``Metadata_SMILES``, ``canonical_smiles``
``concentration``  ``mmoles_per_liter`` (mM, stored x 1000 as uM), ``Metadata_mmoles_per_liter``,
                   ``concentration_uM``, ``Metadata_Concentration`` (uM)
``control_type``   ``control_type``, ``Metadata_control_type``
``pert_type``      ``pert_type``, ``Metadata_pert_type``
``map_name``       ``plate_map_name``, ``Plate_Map_Name``
=================  ============================================================================

Control types: a well without a compound id is a solvent (DMSO) well, ``negcon``; a compound
whose ``control_type`` is ``negcon`` is ``negcon``, ``poscon*`` is ``poscon``; everything else is
``trt``. The result is the ``platemap`` table (``schemas/tables/platemap.json``) less
``Metadata_HasImages``.

A small TOML config names the files (relative paths are taken from the config's folder)::

    platemap = "platemaps"                  # a plate-map file, or the folder of <Plate_Map_Name>.txt
    compound_metadata = "JUMP-Target-2_compound_metadata.tsv"
    barcode_platemap = "barcode_platemap.csv"   # optional
    [columns]                               # optional overrides of the column map
    compound_id = "broad_sample"
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.plates.wells import split_well, well_name

__all__ = ["COLUMN_MAP", "PlatemapConfig", "read_platemap_config", "broad_platemap", "load_platemap"]

#: Role -> column names tried, in order (see the module docstring).
COLUMN_MAP: dict[str, tuple[str, ...]] = {
    "well": ("well_position", "Metadata_Well", "Metadata_well_position", "well"),
    "compound_id": ("broad_sample", "Metadata_broad_sample", "Metadata_CompoundID", "compound_id", "pert_id"),
    "smiles": ("smiles", "SMILES", "Metadata_SMILES", "canonical_smiles"),
    "concentration": ("mmoles_per_liter", "Metadata_mmoles_per_liter", "concentration_uM", "Metadata_Concentration"),
    "control_type": ("control_type", "Metadata_control_type"),
    "pert_type": ("pert_type", "Metadata_pert_type"),
    "map_name": ("plate_map_name", "Plate_Map_Name"),
}
_MILLIMOLAR = ("mmoles_per_liter", "Metadata_mmoles_per_liter")


@dataclass(frozen=True)
class PlatemapConfig:
    """Where a plate's map comes from.

    Attributes
    ----------
    platemap : Path
        A plate-map file, or a folder holding ``<Plate_Map_Name>.txt`` (``.tsv``, ``.csv``).
    compound_metadata : Path or None
        Compound table keyed by the compound id (SMILES, InChIKey, control type).
    barcode_platemap : Path or None
        ``Assay_Plate_Barcode,Plate_Map_Name`` table.
    columns : dict
        Role -> column name overrides of :data:`COLUMN_MAP`.
    """

    platemap: Path
    compound_metadata: Path | None = None
    barcode_platemap: Path | None = None
    columns: dict[str, str] = field(default_factory=dict)

    def files(self) -> list[Path]:
        """Every file the config reads (for fingerprints)."""
        out = [p for p in (self.compound_metadata, self.barcode_platemap) if p is not None]
        if self.platemap.is_dir():
            out += sorted(p for p in self.platemap.iterdir() if p.suffix.lower() in (".txt", ".tsv", ".csv"))
        else:
            out.append(self.platemap)
        return out

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in self.files():
            h.update(str(p.name).encode() + b"\0" + (p.read_bytes() if p.is_file() else b"missing"))
        return h.hexdigest()


def read_platemap_config(path: str | os.PathLike) -> PlatemapConfig:
    """A :class:`PlatemapConfig` from a TOML file, or from a plate-map file given directly.

    Raises
    ------
    ValueError
        Naming the file when the TOML is malformed, names unknown keys or files that do not exist.
    """
    path = Path(path)
    if path.suffix.lower() != ".toml":
        if not path.exists():
            raise ValueError(f"plate map {path} does not exist")
        return PlatemapConfig(platemap=path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: cannot read plate map config: {exc}") from None
    data = data.get("platemap", data) if isinstance(data.get("platemap"), dict) else data
    unknown = sorted(set(data) - {"platemap", "compound_metadata", "barcode_platemap", "columns"})
    if unknown or "platemap" not in data:
        raise ValueError(f"{path}: a plate map config has keys platemap (required), compound_metadata, "
                         f"barcode_platemap, [columns]; got {sorted(data)}")
    bad_roles = sorted(set(data.get("columns", {})) - set(COLUMN_MAP))
    if bad_roles:
        raise ValueError(f"{path}: [columns] roles {bad_roles} are not among {sorted(COLUMN_MAP)}")

    def resolve(key: str) -> Path | None:
        if data.get(key) is None:
            return None
        p = Path(data[key])
        p = p if p.is_absolute() else path.parent / p
        if not p.exists():
            raise ValueError(f"{path}: {key} {p} does not exist")
        return p

    return PlatemapConfig(platemap=resolve("platemap"), compound_metadata=resolve("compound_metadata"),
                          barcode_platemap=resolve("barcode_platemap"),
                          columns={k: str(v) for k, v in data.get("columns", {}).items()})


def _read(path: Path) -> pd.DataFrame:
    """A CSV or tab-separated table (JUMP writes ``.txt`` and ``.tsv`` with tabs), all strings."""
    with path.open() as fh:
        head = fh.readline()
    sep = "\t" if "\t" in head else ","
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty table") from None


def _column(table: pd.DataFrame, role: str, columns: dict[str, str], *, source: Path,
            required: bool = False) -> str | None:
    names = (columns[role],) if role in columns else COLUMN_MAP[role]
    found = next((c for c in names if c in table.columns), None)
    if found is None and required:
        raise ValueError(f"{source}: no {role} column (tried {list(names)}; columns: {list(table.columns)})")
    return found


def _blank(v: object) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() in ("", "NA", "nan", "NaN", "None")


def broad_platemap(platemap: pd.DataFrame, metadata: pd.DataFrame | None, *, plate: str,
                   columns: dict[str, str] | None = None, source: Path = Path("platemap"),
                   metadata_source: Path = Path("compound metadata")) -> pd.DataFrame:
    """A Broad-style plate map (and its compound metadata) as the ``platemap`` table.

    Parameters
    ----------
    platemap : DataFrame
        One row per well (strings); see :data:`COLUMN_MAP` for the columns read.
    metadata : DataFrame or None
        One row per compound id; SMILES and control types come from here when the plate map
        lacks them. Repeated ids keep their first row.
    plate : str
        Plate id written into ``Metadata_Plate``.

    Returns
    -------
    DataFrame
        ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_CompoundID``, ``Metadata_SMILES``,
        ``Metadata_Concentration`` (uM), ``Metadata_ControlType``, one row per well.

    Raises
    ------
    ValueError
        Naming the file: missing well column, malformed or repeated wells, compound ids absent
        from the metadata.
    """
    cols = dict(columns or {})
    wcol = _column(platemap, "well", cols, source=source, required=True)
    idcol = _column(platemap, "compound_id", cols, source=source, required=True)
    try:
        wells = [well_name(*split_well(w)) for w in platemap[wcol]]
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    dup = sorted({w for w in wells if wells.count(w) > 1})
    if dup:
        raise ValueError(f"{source}: wells listed more than once: {dup[:10]}")
    ids = [None if _blank(v) else str(v).strip() for v in platemap[idcol]]
    info: dict[str, dict] = {}
    if metadata is not None:
        mid = _column(metadata, "compound_id", cols, source=metadata_source, required=True)
        keep = [c for c in (_column(metadata, r, cols, source=metadata_source) for r in
                            ("smiles", "control_type", "pert_type")) if c is not None]
        meta = metadata.drop_duplicates(mid).set_index(mid)[keep]
        info = {k: {c: (None if _blank(v) else str(v)) for c, v in row.items()} for k, row in meta.iterrows()}
        missing = sorted({i for i in ids if i is not None and i not in info})
        if missing:
            raise ValueError(f"{source}: {len(missing)} compound id(s) are not in {metadata_source}, e.g. {missing[:5]}")
    scol = _column(metadata if metadata is not None else platemap, "smiles", cols, source=source)
    pm_smiles = _column(platemap, "smiles", cols, source=source)
    ccol = _column(platemap, "concentration", cols, source=source)
    mct = _column(metadata, "control_type", cols, source=metadata_source) if metadata is not None else None
    pct = _column(platemap, "control_type", cols, source=source)
    smiles, control = [], []
    for k, cid in enumerate(ids):
        rec = info.get(cid, {}) if cid is not None else {}
        s = platemap[pm_smiles].iloc[k] if pm_smiles is not None else rec.get(scol)
        smiles.append(None if cid is None or _blank(s) else str(s).strip())
        ct = (platemap[pct].iloc[k] if pct is not None else None) or (rec.get(mct) if mct else None)
        ct = "" if _blank(ct) else str(ct).strip().lower()
        control.append("negcon" if cid is None or ct == "negcon" else "poscon" if ct.startswith("poscon") else "trt")
    conc = (pd.to_numeric(platemap[ccol].replace("", np.nan), errors="coerce").to_numpy(float)
            if ccol is not None else np.full(len(ids), np.nan))
    if ccol in _MILLIMOLAR:
        conc = conc * 1000.0
    return pd.DataFrame({"Metadata_Plate": plate, "Metadata_Well": wells, "Metadata_CompoundID": ids,
                         "Metadata_SMILES": smiles, "Metadata_Concentration": conc,
                         "Metadata_ControlType": control})


def load_platemap(config: PlatemapConfig, *, plate: str) -> pd.DataFrame:
    """The ``platemap`` rows of ``plate`` from ``config`` (see :func:`broad_platemap`).

    With ``barcode_platemap`` the plate's ``Plate_Map_Name`` picks the map file (from the
    plate-map folder, or checked against the file's ``plate_map_name`` column).

    Raises
    ------
    ValueError
        Naming the file when the plate's barcode is not listed, its map file is missing, or a
        table is malformed.
    """
    name = None
    if config.barcode_platemap is not None:
        bp = _read(config.barcode_platemap)
        if not {"Assay_Plate_Barcode", "Plate_Map_Name"} <= set(bp.columns):
            raise ValueError(f"{config.barcode_platemap}: needs columns Assay_Plate_Barcode, Plate_Map_Name; "
                             f"has {list(bp.columns)}")
        hit = bp.loc[bp["Assay_Plate_Barcode"].str.strip() == plate, "Plate_Map_Name"]
        if hit.empty:
            raise ValueError(f"{config.barcode_platemap}: plate {plate!r} is not listed (barcodes: "
                             f"{sorted(bp['Assay_Plate_Barcode'])[:10]})")
        name = hit.iloc[0].strip()
    if config.platemap.is_dir():
        if name is None:
            raise ValueError(f"{config.platemap} is a folder of plate maps: give barcode_platemap to pick one")
        found = [config.platemap / f"{name}{ext}" for ext in (".txt", ".tsv", ".csv")]
        path = next((p for p in found if p.is_file()), None)
        if path is None:
            raise ValueError(f"{config.platemap}: no plate map {name}.txt/.tsv/.csv for plate {plate}")
    else:
        path = config.platemap
    table = _read(path)
    mcol = _column(table, "map_name", config.columns, source=path)
    if name is not None and mcol is not None:
        table = table[table[mcol].str.strip() == name]
        if table.empty:
            raise ValueError(f"{path}: no rows with {mcol} == {name!r} (plate {plate})")
    metadata = _read(config.compound_metadata) if config.compound_metadata is not None else None
    return broad_platemap(table, metadata, plate=plate, columns=config.columns, source=path,
                          metadata_source=config.compound_metadata or Path("compound metadata"))
