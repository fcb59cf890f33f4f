"""CellProfiler LoadData CSV (pe2loaddata style): the images a CSV names, and the metadata its
columns hold.

``FileName_Orig<Ch>``, ``PathName_Orig<Ch>``, ``Metadata_Plate``, ``Metadata_Well``,
``Metadata_Site``; paths resolved relative to the CSV; a path that does not exist (written on
another machine) is re-rooted by file name beside the CSV or in the plate folder. The columns
name the channels (a channel map is not used). Metadata: ``Metadata_ChannelName_Orig<X>``,
``Metadata_ImageResolutionX`` (m), wavelengths, objective magnification.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from pipeline.plates.acquisition import Acquisition, ChannelInfo
from pipeline.plates.vendors.base import FileListing, PlateLayoutError, Vendor, VendorListing, refusal, tiffs
from pipeline.plates.wells import split_well, well_name
from pipeline.store.paths import CHANNELS

__all__ = ["LoadData", "VENDOR", "loaddata_csvs", "loaddata_acquisition"]


def loaddata_csvs(root: Path) -> list[Path]:
    """The LoadData CSVs of a plate folder (a ``.csv`` whose header names ``FileName_Orig``), sorted."""
    return sorted(p for p in root.glob("*.csv") if "FileName_Orig" in p.open().readline())


class LoadData(Vendor):
    """A LoadData CSV in the plate folder; detected by the CSV, never by file names."""

    name = "loaddata"
    expects = "a LoadData CSV"
    by_file_name = False

    def detect(self, root: Path) -> bool:
        return bool(loaddata_csvs(root))

    def read_metadata(self, root: Path) -> Acquisition | None:
        """The metadata columns of the folder's one LoadData CSV, or None."""
        csvs = loaddata_csvs(root)
        return loaddata_acquisition(pd.read_csv(csvs[0]), source=csvs[0]) if len(csvs) == 1 else None

    def list_images(self, root: Path, *, channel_map: dict[str, str] | None, allow_outside: bool,
                    notes: list[str]) -> VendorListing:
        """The CSV's images (``channel_map`` is not used: the columns name the channels).

        Raises
        ------
        PlateLayoutError
            When the folder has no LoadData CSV or several, or the CSV lacks columns, names
            several plates, a malformed well or field, or a moved file matching two files.
        """
        csvs = loaddata_csvs(root)
        if not csvs:
            raise PlateLayoutError(f"{root}: no LoadData CSV (a .csv with FileName_Orig<Ch> columns) found")
        if len(csvs) > 1:
            raise PlateLayoutError(f"{root}: several LoadData CSVs {[c.name for c in csvs]}; keep one per plate")
        table = pd.read_csv(csvs[0])
        acq = loaddata_acquisition(table, source=csvs[0])
        files = _list_csv(root, csvs[0], allow_outside, table, notes)
        cmap = {c: c for c in CHANNELS if f"FileName_Orig{c}" in table.columns}
        return VendorListing(layout=self.name, files=files, channel_map=cmap, acquisition=acq, source="metadata")


def _list_csv(root: Path, csv: Path, allow_outside: bool, table: pd.DataFrame, notes: list[str]) -> FileListing:
    """The images a LoadData table names, re-rooted where their ``PathName`` does not exist."""
    present = [c for c in CHANNELS if f"FileName_Orig{c}" in table.columns]
    needed = [f"{k}_Orig{c}" for c in (present if "DNA" in present else CHANNELS) for k in ("FileName", "PathName")] + [
        "Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise PlateLayoutError(f"{csv}: LoadData CSV lacks columns {missing}; has {list(table.columns)}")
    plates = set(table["Metadata_Plate"].astype(str))
    if len(plates) > 1:
        raise PlateLayoutError(f"{csv}: LoadData CSV names several plates {sorted(plates)}; one CSV per plate")
    rows, refused = [], []
    base = csv.parent.resolve()
    root_resolved = root.resolve()
    extra = [c[len("FileName_Orig"):] for c in table.columns if c.startswith("FileName_Orig")
             and c[len("FileName_Orig"):] not in CHANNELS]
    ignored = [f"{csv.name}: column FileName_Orig{x} is not a Cell Painting channel" for x in extra]
    moved = _MovedFiles(root, csv)
    for i, rec in table.iterrows():
        where = f"{csv} row {i + 2}"  # the header is line 1
        try:
            well = well_name(*split_well(str(rec["Metadata_Well"])))
        except ValueError:
            raise PlateLayoutError(f"{where}: Metadata_Well {rec['Metadata_Well']!r} is not a well name "
                                   f"(a row letter and a column number, e.g. B07)") from None
        site = pd.to_numeric(pd.Series([rec["Metadata_Site"]]), errors="coerce").iloc[0]
        if pd.isna(site) or site != int(site):
            raise PlateLayoutError(f"{where}: Metadata_Site {'is blank' if pd.isna(rec['Metadata_Site']) else repr(rec['Metadata_Site']) + ' is not a field number'}; "
                                   f"give every row its field number (1, 2, ...)")
        for c in present:
            path = (base / str(rec[f"PathName_Orig{c}"]) / str(rec[f"FileName_Orig{c}"])).resolve()
            if not path.is_file():  # written on another machine: the file may be beside the CSV
                path = moved.find(path, str(rec[f"FileName_Orig{c}"]), pathname=str(rec[f"PathName_Orig{c}"]),
                                  where=f"{csv.name} row {i + 2}")
            if not allow_outside and not path.is_relative_to(root_resolved):
                refused.append(refusal(well, int(site), c, str(path), f"{csv.name} row {i + 2}: path outside the plate "
                                                                  f"folder (use --allow-outside)"))
                continue
            rel = os.path.relpath(path, root_resolved)
            rows.append(dict(Metadata_Well=well, Metadata_Site=int(site), Metadata_Channel=c, File=rel))
    if notes is not None and moved.count:
        notes.append(moved.note())
    return FileListing(plate=plates.pop() if plates else None, rows=rows, ignored=ignored, refused=refused)


class _MovedFiles:
    """Finds LoadData images whose ``PathName`` names another machine's folder: by file name,
    beside the CSV first, else anywhere in the plate folder (one match, or an error naming two)."""

    def __init__(self, root: Path, csv: Path) -> None:
        self.root, self.csv = root, csv
        self.count, self.old_dirs, self.new_dirs = 0, set(), set()
        self._index: dict[str, list[Path]] | None = None

    def find(self, path: Path, name: str, *, pathname: str, where: str) -> Path:
        """The moved file, or ``path`` unchanged when no file of that name is found.

        Raises
        ------
        PlateLayoutError
            When two files of the plate folder have that name (naming both).
        """
        beside = self.csv.parent / name
        if beside.is_file():
            found = [beside]
        else:
            if self._index is None:
                self._index = {}
                for p in tiffs(self.root):
                    self._index.setdefault(p.name, []).append(p)
            found = self._index.get(name, [])
        if len(found) > 1:
            raise PlateLayoutError(f"{where}: {path} does not exist and its file name matches two files of the "
                                   f"plate folder, {found[0]} and {found[1]}; fix PathName in {self.csv.name}")
        if not found:
            return path
        self.count += 1
        self.old_dirs.add(pathname)
        self.new_dirs.add(os.path.relpath(found[0].parent.resolve(), self.root.resolve()))
        return found[0].resolve()

    def note(self) -> str:
        here = os.path.relpath(self.csv.parent.resolve(), self.root.resolve())
        where = ("beside the CSV" if self.new_dirs == {here} else
                 f"in {', '.join(sorted(self.new_dirs))} of the plate folder")
        return (f"{self.csv.name}: {self.count} image path(s) re-rooted: PathName {', '.join(sorted(self.old_dirs))} "
                f"does not exist; the files were found {where}")


def loaddata_acquisition(table: pd.DataFrame, *, source: Path) -> Acquisition:
    """Channel names, wavelengths and pixel size from a LoadData table's metadata columns.

    Channels are the ``FileName_Orig<X>`` columns (id ``X``); their names come from
    ``Metadata_ChannelName_Orig<X>`` where present, else ``X`` itself.
    """
    ids = [c[len("FileName_Orig"):] for c in table.columns if c.startswith("FileName_Orig")]
    first = table.iloc[0] if len(table) else pd.Series(dtype=object)

    def value(col: str) -> float | None:
        v = pd.to_numeric(pd.Series([first.get(col)]), errors="coerce").iloc[0]
        return None if pd.isna(v) else float(v)

    channels = tuple(ChannelInfo(
        id=x, name=str(first.get(f"Metadata_ChannelName_Orig{x}", x)) if pd.notna(first.get(f"Metadata_ChannelName_Orig{x}", x)) else x,
        excitation_nm=value(f"Metadata_MainExcitationWavelength_Orig{x}"),
        emission_nm=value(f"Metadata_MainEmissionWavelength_Orig{x}")) for x in ids)
    px = None
    rx, ry = value("Metadata_ImageResolutionX"), value("Metadata_ImageResolutionY")
    if rx is not None:
        scale = 1e6 if rx < 1e-3 else 1.0  # pe2loaddata writes metres
        px = ((ry if ry is not None else rx) * scale, rx * scale)
    mag = value("Metadata_ObjectiveMagnification")
    na = value("Metadata_ObjectiveNA")
    objective = None if mag is None else f"{mag:g}x" + (f", NA {na:g}" if na is not None else "")
    return Acquisition(source=source, plate=str(first["Metadata_Plate"]) if "Metadata_Plate" in first else None,
                       channels=channels, pixel_size_um=px, objective=objective)


VENDOR = LoadData()
