"""Discover the images of a plate folder, in the layouts microscopes and CellProfiler users have.

Three layouts are understood:

``imagexpress``
    ``<plate>_<well>_s<site>_w<channel><GUID>.tif`` (Molecular Devices); ``_thumb`` previews ignored.
Extensions are matched case-insensitively (MetaXpress writes ``.TIF``). A folder whose images
follow two file-name layouts is refused with one message (``PlateLayoutError``): sort them into
one folder per layout, or pass the layout to ingest.

``phenix``
    ``r01c01f01p01-ch1sk1fk1fl1.tiff`` (PerkinElmer/Revvity Phenix, Harmony export), row, column,
    field, plane and channel numbers. One focal plane is ingested per field and channel: plane 1
    (``p01``) where it exists, else the lowest-numbered plane exported for it (an export of planes
    ``p02``-``p05`` ingests ``p02``); other planes are listed as ignored, never quarantined.
``loaddata``
    A CellProfiler LoadData CSV (``FileName_Orig<Ch>``, ``PathName_Orig<Ch>``, ``Metadata_Plate``,
    ``Metadata_Well``, ``Metadata_Site``), paths resolved relative to the CSV; a path that does
    not exist (written on another machine) is re-rooted by file name beside the CSV or in the
    plate folder.

:func:`discover_plate` returns an image listing (a DataFrame, one row per image file) that the
ingestion stage consumes; it never reads pixels.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from pipeline.plates.acquisition import (Acquisition, auto_channel_map, find_acquisition, loaddata_acquisition,
                                  tiff_acquisition)
from pipeline.store.paths import CHANNELS

__all__ = [
    "Layout",
    "LAYOUTS",
    "PlateListing",
    "PlateLayoutError",
    "CHANNEL_SOURCES",
    "raw_channel",
    "plate_channels",
    "raw_images",
    "parse_channel_map",
    "read_channel_map",
    "discover_plate",
    "read_platemap",
    "well_name",
    "PLATE_FORMATS",
    "plate_format_of",
    "split_well",
    "fingerprint_files",
]

Layout = Literal["imagexpress", "phenix", "loaddata"]
LAYOUTS: tuple[str, ...] = ("imagexpress", "phenix", "loaddata")

#: Default vendor channel number -> Cell Painting channel name.
DEFAULT_CHANNEL_MAP: dict[str, str] = {str(i + 1): name for i, name in enumerate(CHANNELS)}

_IMAGEXPRESS = re.compile(
    r"^(?P<plate>.+?)_(?P<well>[A-Pa-p]\d{1,2})_s(?P<site>\d+)_w(?P<channel>\d+)"
    r"(?P<guid>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})?\.(?i:tiff?)$"
)
_PHENIX = re.compile(
    r"^r(?P<row>\d{2})c(?P<col>\d{2})f(?P<site>\d{2,3})p(?P<plane>\d{2,3})-ch(?P<channel>\d+)"
    r"sk\d+fk\d+fl\d+\.(?i:tiff?)$"
)
_TIFF = re.compile(r"\.tiff?$", re.IGNORECASE)


class PlateLayoutError(ValueError):
    """A plate folder matches no known layout, or its files contradict each other."""


@dataclass(frozen=True)
class PlateListing:
    """What :func:`discover_plate` found in a plate folder.

    Attributes
    ----------
    plate : str
        Plate identifier.
    layout : str
        Detected layout.
    root : Path
        The plate folder.
    images : DataFrame
        One row per image file: ``Metadata_Well``, ``Metadata_Site`` (int), ``Metadata_Channel``
        (channel name), ``File`` (path relative to ``root``).
    unmatched : list of str
        Image files whose name matches no pattern of the layout (reported and quarantined).
    platemap : Path or None
        ``platemap.csv`` in the plate folder, if present.
    channels : tuple of str
        The Cell Painting channels the plate has, in :data:`CHANNELS` order (DNA always first).
    channel_map : dict
        Vendor channel id -> channel name actually used (given, or read from vendor metadata).
    acquisition : Acquisition or None
        Vendor metadata (Harmony index, HTD, LoadData metadata columns), if any.
    ignored : list of str
        Image files of channels the map does not name (brightfield, other focal planes):
        recorded, never read, never quarantined.
    refused : list of dict
        Images the listing names but refuses (quarantined by ingestion), each with the reason
        that applies: ``Metadata_Well``, ``Metadata_Site``, ``Metadata_Channel``, ``File`` (the
        resolved path) and ``Reason`` (a LoadData path outside the plate folder).
    channel_source : {'metadata', 'user', 'pixels', 'unresolved'}
        Where the channel map comes from: the instrument's metadata (Harmony index or TIFF
        descriptions, ``.HTD``, LoadData columns), the user (``--channels``), the pixels (DNA
        found by :mod:`pipeline.images.stain_detect`, the other channels unassigned), or nowhere yet
        (no metadata, no ``--channels``: every channel is listed raw as ``ch<N>`` until
        :func:`pipeline.plates.channel_check.check_channels` finds DNA from the pixels).
    notes : list of str
        One line each about how the listing was made (metadata that names no channel, LoadData
        paths re-rooted beside the CSV), for the run summary.
    """

    plate: str
    layout: str
    root: Path
    images: pd.DataFrame
    unmatched: list[str] = field(default_factory=list)
    platemap: Path | None = None
    channels: tuple[str, ...] = CHANNELS
    channel_map: dict[str, str] = field(default_factory=dict)
    acquisition: Acquisition | None = None
    ignored: list[str] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)
    channel_source: str = "metadata"
    notes: list[str] = field(default_factory=list)


#: Where a channel map may come from (:attr:`PlateListing.channel_source`).
CHANNEL_SOURCES = ("metadata", "user", "pixels", "unresolved")


def raw_channel(vendor_id: str) -> str:
    """The name of a channel no stain is assigned to: its vendor number, ``'5' -> 'ch5'``."""
    return f"ch{vendor_id}"


def plate_channels(names) -> tuple[str, ...]:
    """The plate's channels in store order: the Cell Painting stains in :data:`CHANNELS` order,
    then the unassigned ``ch<N>`` channels by number."""
    names = set(names)
    raw = sorted((n for n in names if n not in CHANNELS), key=lambda n: (len(n), n))
    return tuple(c for c in CHANNELS if c in names) + tuple(raw)


def well_name(row: int | str, col: int) -> str:
    """Well name with a zero-padded column: ``well_name(1, 3) == well_name('A', 3) == 'A03'``."""
    letter = row if isinstance(row, str) else chr(ord("A") + int(row) - 1)
    return f"{letter.upper()}{int(col):02d}"


def split_well(well: str) -> tuple[str, int]:
    """``'B07' -> ('B', 7)``; raises ValueError on a malformed well name."""
    m = re.fullmatch(r"([A-Za-z]{1,2})(\d{1,2})", well.strip())
    if not m:
        raise ValueError(f"not a well name: {well!r} (expected a row letter and a column number, e.g. 'B07')")
    return m.group(1).upper(), int(m.group(2))


_MAP_SUFFIXES = (".toml", ".yaml", ".yml")


def read_channel_map(path: str | os.PathLike) -> dict[str, str]:
    """Read a channel map file into ``{name: vendor channel}`` (not yet validated).

    TOML (stdlib ``tomllib``) or YAML (only if PyYAML is installed), either flat
    (``DNA = 1``) or under a ``channels`` table (``[channels]`` / ``channels:``).

    Raises
    ------
    ValueError
        Naming the file when it cannot be parsed, has an unknown suffix, or is not a table of
        names to channel numbers.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _MAP_SUFFIXES:
        raise ValueError(f"{path}: channel map files must be {', '.join(_MAP_SUFFIXES)}; got {suffix or 'no suffix'}")
    if suffix == ".toml":
        import tomllib as parser

        load = parser.loads
    else:
        try:
            import yaml as parser
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); use TOML instead") from None
        load = parser.safe_load
    try:
        data = load(path.read_text())
    except Exception as exc:  # noqa: BLE001 - OSError, TOMLDecodeError, yaml.YAMLError: re-raised naming the file
        raise ValueError(f"{path}: cannot read channel map: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("channels"), dict):
        data = data["channels"]
    if not isinstance(data, dict) or not data or not all(
            isinstance(v, (int, str)) and not isinstance(v, bool) for v in data.values()):
        raise ValueError(f"{path}: a channel map is a table NAME = NUMBER (e.g. DNA = 1); got {data!r}")
    return {str(k): str(v) for k, v in data.items()}


def parse_channel_map(spec: str | os.PathLike | dict[str, str] | None) -> dict[str, str]:
    """Parse ``"DNA=1,ER=2,RNA=3,AGP=4,Mito=5"`` into ``{"1": "DNA", ...}``.

    A map may name any subset of the five channels that contains DNA (``"DNA=1"``,
    ``"DNA=1,RNA=2,AGP=3"``); vendor channels it does not name are ignored at ingestion.
    ``None`` gives the default (w1..w5 = DNA, ER, RNA, AGP, Mito). A dict is taken as
    ``{vendor channel: name}`` already. A path (a ``Path``, or a string ending in ``.toml``,
    ``.yaml`` or ``.yml``) is read with :func:`read_channel_map`.

    Raises
    ------
    ValueError
        On malformed entries, unknown channel names or repeated vendor numbers (naming the file
        when the map came from one).
    """
    if spec is None:
        return dict(DEFAULT_CHANNEL_MAP)
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and spec.strip().lower().endswith(_MAP_SUFFIXES)):
        source = Path(spec)
        try:
            return parse_channel_map(",".join(f"{k}={v}" for k, v in read_channel_map(source).items()))
        except ValueError as exc:
            raise ValueError(str(exc) if str(source) in str(exc) else f"{source}: {exc}") from None
    if isinstance(spec, dict):
        mapping = {str(k): v for k, v in spec.items()}
    else:
        mapping = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if "=" not in part:
                raise ValueError(f"channel map entry {part!r} is not NAME=NUMBER (e.g. DNA=1)")
            name, num = (s.strip() for s in part.split("=", 1))
            if num in mapping:
                raise ValueError(f"channel map: vendor channel {num} given twice ({mapping[num]}, {name})")
            mapping[num] = name
    unknown = sorted(set(mapping.values()) - set(CHANNELS))
    if unknown:
        raise ValueError(f"channel map names {unknown} are not Cell Painting channels {list(CHANNELS)}")
    if "DNA" not in mapping.values():
        raise ValueError(f"channel map must name the DNA channel (nuclei are found on it); got {spec!r}")
    repeated = sorted({n for n in mapping.values() if list(mapping.values()).count(n) > 1})
    if repeated:
        raise ValueError(f"channel map names {repeated} more than once; got {spec!r}")
    return mapping


def raw_images(listing: PlateListing) -> pd.DataFrame:
    """Every image of an ImageXpress or Phenix listing's folder with its channel named raw
    (``ch<N>``), whatever the channel map (channels it ignores included); a LoadData listing's
    images as listed. Columns as :attr:`PlateListing.images`."""
    lister = {"imagexpress": _listing_imagexpress, "phenix": _listing_phenix}.get(listing.layout)
    if lister is None:
        return listing.images
    return pd.DataFrame(lister(listing.root, None)[1],
                        columns=["Metadata_Well", "Metadata_Site", "Metadata_Channel", "File"])


def _tiffs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and _TIFF.search(p.name))


def _refusal(well: str | None, site: int | None, channel: str | None, file: str, reason: str) -> dict:
    return dict(Metadata_Well=well, Metadata_Site=site, Metadata_Channel=channel, File=file, Reason=reason)


def _listing_imagexpress(root: Path, channel_map: dict[str, str] | None) -> tuple[str | None, list[dict], list[str], list[str], list[dict]]:
    rows, unmatched, ignored, plates = [], [], [], set()
    for p in _tiffs(root):
        if "_thumb" in p.name.lower():
            continue
        m = _IMAGEXPRESS.match(p.name)
        if not m:
            unmatched.append(str(p.relative_to(root)))
            continue
        if channel_map is not None and m["channel"] not in channel_map:
            ignored.append(f"{p.relative_to(root)}: channel w{m['channel']} is not in the channel map")
            continue
        plates.add(m["plate"])
        well = split_well(m["well"])
        name = channel_map[m["channel"]] if channel_map is not None else raw_channel(m["channel"])
        rows.append(dict(Metadata_Well=well_name(*well), Metadata_Site=int(m["site"]),
                         Metadata_Channel=name, File=str(p.relative_to(root))))
    if len(plates) > 1:
        raise PlateLayoutError(f"{root}: ImageXpress files name several plates {sorted(plates)}; one folder per plate")
    return (plates.pop() if plates else None), rows, unmatched, ignored, []


def _listing_phenix(root: Path, channel_map: dict[str, str] | None) -> tuple[str | None, list[dict], list[str], list[str], list[dict]]:
    unmatched, ignored = [], []
    planes: dict[tuple[str, int, str], list[tuple[int, str]]] = {}
    for p in _tiffs(root):
        m = _PHENIX.match(p.name)
        if not m:
            unmatched.append(str(p.relative_to(root)))
            continue
        if channel_map is not None and m["channel"] not in channel_map:
            ignored.append(f"{p.relative_to(root)}: channel ch{m['channel']} is not in the channel map")
            continue
        name = channel_map[m["channel"]] if channel_map is not None else raw_channel(m["channel"])
        key = (well_name(int(m["row"]), int(m["col"])), int(m["site"]), name)
        planes.setdefault(key, []).append((int(m["plane"]), str(p.relative_to(root))))
    rows = []
    for (well, site, channel), found in sorted(planes.items()):
        found.sort()
        first = found[0][0]  # one focal plane per field: plane 1, else the lowest exported
        rows += [dict(Metadata_Well=well, Metadata_Site=site, Metadata_Channel=channel, File=f)
                 for plane, f in found if plane == first]
        ignored += [f"{f}: focal plane {plane} (plane {first} of this field is ingested)"
                    for plane, f in found if plane != first]
    return None, rows, unmatched, ignored, []


def _listing_loaddata(root: Path, csv: Path, allow_outside: bool,
                      table: pd.DataFrame, notes: list[str] | None = None) -> tuple[str | None, list[dict], list[str], list[str], list[dict]]:
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
                refused.append(_refusal(well, int(site), c, str(path), f"{csv.name} row {i + 2}: path outside the plate "
                                                                  f"folder (use --allow-outside)"))
                continue
            rel = os.path.relpath(path, root_resolved)
            rows.append(dict(Metadata_Well=well, Metadata_Site=int(site), Metadata_Channel=c, File=rel))
    if notes is not None and moved.count:
        notes.append(moved.note())
    return plates.pop() if plates else None, rows, [], ignored, refused


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
                for p in _tiffs(self.root):
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


def _candidates(root: Path, layout: str, given: dict[str, str] | None, csvs: list[Path], harmony: Acquisition | None,
                *, allow_outside: bool, notes: list[str]) -> tuple[list[tuple], dict[str, str]]:
    """The listing of each layout :func:`discover_plate` tries, with its channel map and
    acquisition, and where each map comes from (:data:`CHANNEL_SOURCES`)."""
    candidates: list[tuple[str, str | None, list[dict], list[str], list[str], list[dict], dict, Acquisition | None]] = []
    sources: dict[str, str] = {}
    if layout == "loaddata" or (layout == "auto" and csvs and harmony is None):
        if not csvs:
            raise PlateLayoutError(f"{root}: no LoadData CSV (a .csv with FileName_Orig<Ch> columns) found")
        if len(csvs) > 1:
            raise PlateLayoutError(f"{root}: several LoadData CSVs {[c.name for c in csvs]}; keep one per plate")
        table = pd.read_csv(csvs[0])
        acq = loaddata_acquisition(table, source=csvs[0])
        listed = _listing_loaddata(root, csvs[0], allow_outside, table, notes)
        candidates.append(("loaddata", *listed, {c: c for c in CHANNELS if f"FileName_Orig{c}" in table.columns}, acq))
        sources["loaddata"] = "metadata"
    else:
        for name, lister in (("imagexpress", _listing_imagexpress), ("phenix", _listing_phenix)):
            if layout not in ("auto", name) or (name == "imagexpress" and harmony is not None):
                continue
            acq = harmony if name == "phenix" else find_acquisition(root, name)
            if given is not None:
                cmap, sources[name] = given, "user"
            elif acq is not None and acq.channels:
                cmap, sources[name] = auto_channel_map(acq), "metadata"
            else:  # no map: every channel listed raw (ch<N>) until the pixels find DNA
                cmap, sources[name] = None, "unresolved"
            listed = lister(root, cmap)
            if cmap is None and name == "phenix" and listed[1]:
                acq, listed, cmap, sources[name] = _from_tiff_descriptions(root, listed, notes)
            if cmap is None:
                cmap = {r["Metadata_Channel"][2:]: r["Metadata_Channel"] for r in listed[1]}
            candidates.append((name, *listed, cmap, acq))
    return candidates, sources


def discover_plate(
    plate_dir: str | os.PathLike,
    *,
    layout: Layout | Literal["auto"] = "auto",
    channel_map: str | os.PathLike | dict[str, str] | None = None,
    allow_outside: bool = False,
) -> PlateListing:
    """List the images of one plate folder.

    Parameters
    ----------
    plate_dir : path
        The plate folder (images, optionally ``platemap.csv`` and a LoadData CSV).
    layout : {'auto', 'imagexpress', 'phenix', 'loaddata'}
        ``'auto'`` reads the Phenix file names when a Harmony index (``Index.idx.xml`` /
        ``Index.xml``) is present, else a LoadData CSV if one is present, else the file-name
        layout that matches most TIFFs.
    channel_map : str or dict, optional
        Vendor channel number -> name (see :func:`parse_channel_map`; ``channel_source``
        'user'). When None, the map is read from the vendor metadata (Harmony index channel
        names, else the Harmony descriptions embedded in the TIFFs, ImageXpress ``.HTD`` wave
        names, see :func:`pipeline.plates.acquisition.auto_channel_map`; 'metadata'). With neither, no
        map is guessed: every channel is listed raw as ``ch<N>`` ('unresolved') until
        :func:`pipeline.plates.channel_check.check_channels` finds DNA from the pixels. Ignored for
        LoadData, whose columns name the channels ('metadata'). Channels the map does not name
        are listed in ``ignored``.
    allow_outside : bool
        LoadData only: accept image paths outside the plate folder.

    Returns
    -------
    PlateListing
        Its ``notes`` say how it was made (metadata that names no channel, LoadData paths
        re-rooted: a ``PathName/FileName`` that does not exist is looked for by file name beside
        the CSV, then anywhere in the plate folder). Images the listing refuses (see :attr:`PlateListing.refused`) are not in ``images``; a
        plate whose every image is refused is still a plate (with no image to ingest).

    Raises
    ------
    PlateLayoutError
        When nothing matches (the message lists what was seen), the plate's map has no DNA
        channel, or a moved LoadData file's name matches two files of the folder (naming both).
    AcquisitionError
        When vendor metadata cannot be read or its channel names cannot be mapped (two DNA
        stains, no DNA stain); the message names the file.
    """
    root = Path(plate_dir)
    if not root.is_dir():
        raise PlateLayoutError(f"plate folder {root} does not exist or is not a folder")
    if layout not in ("auto", *LAYOUTS):
        raise ValueError(f"layout {layout!r} is not one of 'auto', {', '.join(map(repr, LAYOUTS))}")
    given = None if channel_map is None else parse_channel_map(channel_map)
    csvs = sorted(p for p in root.glob("*.csv") if "FileName_Orig" in p.open().readline())
    # the instrument's own index is authoritative: with one, 'auto' reads the Phenix file names
    # (a LoadData CSV beside it may have been written on another machine, with paths of its own)
    harmony = find_acquisition(root, "phenix") if layout in ("auto", "phenix") else None
    notes: list[str] = []
    candidates, sources = _candidates(root, layout, given, csvs, harmony, allow_outside=allow_outside, notes=notes)
    found = [(c[0], len(c[2])) for c in candidates if c[2]]
    if layout == "auto" and len(found) > 1:
        counts = " and ".join(f"{n} {name} images" for name, n in found)
        raise PlateLayoutError(f"{root}: the folder mixes file-name layouts ({counts}); keep one layout per plate "
                               f"folder, or pass --layout {found[0][0]} to ingest only those")
    best = max(candidates, key=lambda c: (len(c[2]), len(c[5])))
    name, plate, rows, unmatched, ignored, refused, cmap, acq = best
    if not rows and not refused:
        seen = [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file()][:10]
        raise PlateLayoutError(
            f"{root}: no images matched layout {layout!r}. Expected ImageXpress "
            f"'<plate>_<well>_s<site>_w<channel><GUID>.tif', Phenix 'r01c01f01p01-ch1sk1fk1fl1.tiff' or a "
            f"LoadData CSV. First files seen: {seen or 'none'}"
        )
    images = pd.DataFrame(rows, columns=["Metadata_Well", "Metadata_Site", "Metadata_Channel", "File"]).sort_values(
        ["Metadata_Well", "Metadata_Site", "Metadata_Channel", "File"], ignore_index=True)
    # a TIFF beside the plate's images whose name fits no pattern may be a misnamed field (it is
    # quarantined); TIFFs in other folders (analysis output, previews) are recorded and skipped
    image_dirs = {str(Path(f).parent) for f in images["File"]}
    ignored = ignored + [f"{u}: not in a folder of the plate's images (file name matches no pattern)"
                         for u in unmatched if name != "loaddata" and str(Path(u).parent) not in image_dirs]
    unmatched = [u for u in unmatched if name == "loaddata" or str(Path(u).parent) in image_dirs]
    source = sources[name]
    channels = plate_channels(cmap.values()) if source == "unresolved" else tuple(
        c for c in CHANNELS if c in set(cmap.values()))
    if "DNA" not in channels and source != "unresolved":
        raise PlateLayoutError(f"{root}: the plate has no DNA channel (LoadData columns FileName_OrigDNA / "
                               f"PathName_OrigDNA, or DNA in the channel map)")
    platemap = root / "platemap.csv"
    plate = plate or (acq.plate if acq is not None else None)
    return PlateListing(plate=str(plate or root.name), layout=name, root=root, images=images,
                        unmatched=unmatched, platemap=platemap if platemap.is_file() else None,
                        channels=channels, channel_map=cmap, acquisition=acq, ignored=ignored, refused=refused,
                        channel_source=source, notes=notes)


def _from_tiff_descriptions(root: Path, listed: tuple, notes: list[str]) -> tuple:
    """A Phenix folder without its Harmony index: the channel names its TIFFs' Harmony
    descriptions (tag 65500) give, when every channel's file names one; else the raw listing
    and a note saying they name none. Returns (acquisition, listing, map or None, source)."""
    first: dict[str, Path] = {}
    for r in listed[1]:
        first.setdefault(r["Metadata_Channel"][2:], root / r["File"])
    acq = tiff_acquisition(first)
    if acq is None:
        notes.append(f"{root}: no Harmony index (Index.idx.xml / Index.xml), and the TIFFs' Harmony descriptions "
                     f"(tag 65500) name no channel")
        return None, listed, None, "unresolved"
    cmap = auto_channel_map(acq)
    notes.append(f"{root}: no Harmony index; channel names read from the TIFFs' Harmony descriptions (tag 65500)")
    return acq, _listing_phenix(root, cmap), cmap, "metadata"


#: Plate formats: wells -> (rows, columns).
PLATE_FORMATS: dict[int, tuple[int, int]] = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}


def _row_number(letters: str) -> int:
    """'A' -> 1, 'P' -> 16, 'AA' -> 27, 'AF' -> 32."""
    n = 0
    for ch in letters.upper():
        n = n * 26 + ord(ch) - ord("A") + 1
    return n


def plate_format_of(wells) -> int:
    """The smallest standard plate format (96, 384, 1536) holding every well of ``wells``.

    Raises
    ------
    ValueError
        If a well lies outside even a 1536-well plate.
    """
    need_r = need_c = 1
    for w in wells:
        r, c = split_well(w)
        need_r, need_c = max(need_r, _row_number(r)), max(need_c, c)
    for n, (rows, cols) in PLATE_FORMATS.items():
        if need_r <= rows and need_c <= cols:
            return n
    raise ValueError(f"wells up to row {need_r} and column {need_c} fit no plate format {list(PLATE_FORMATS)}")


def _format_text(n: int) -> str:
    rows, cols = PLATE_FORMATS[n]
    last = chr(ord("A") + rows - 1) if rows <= 26 else "A" + chr(ord("A") + rows - 27)
    return f"a {n}-well plate (rows A-{last}, columns 1-{cols})"


def read_platemap(path: str | os.PathLike, *, plate: str, plate_format: int | None = None) -> pd.DataFrame:
    """Read a ``platemap.csv`` into the ``platemap`` table layout (without ``Metadata_HasImages``).

    Required column: ``Metadata_Well``. Optional: ``Metadata_CompoundID``, ``Metadata_SMILES``,
    ``Metadata_Concentration``, ``Metadata_ControlType`` (also read from ``Metadata_control_type``,
    ``Control Type``, ``control_type`` or ``pert_type``, kept as written: ``negcon``, ``vehicle``, ...;
    where blank: 'trt' when a SMILES or a compound ID is given, else 'negcon'). A treatment well without SMILES is kept: the compound
    stage records it as a failed input with its reason.

    Parameters
    ----------
    plate_format : {96, 384, 1536}, optional
        The plate's format (e.g. :func:`plate_format_of` its imaged wells); a well outside it is
        an error. None checks against 1536 wells.

    Raises
    ------
    ValueError
        Naming the file (and the row, counting the header as row 1) when the well column is
        missing, a well name is malformed or outside the plate format, a well is listed twice,
        or the file holds no rows.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"Metadata_Well": str, "Metadata_CompoundID": str, "Metadata_SMILES": str})
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: plate map is empty (no header, no rows)") from None
    if "Metadata_Well" not in table.columns:
        raise ValueError(f"{path}: plate map has no Metadata_Well column (columns: {list(table.columns)})")
    if table.empty:
        raise ValueError(f"{path}: plate map is empty")
    fmt = plate_format or 1536
    rows, cols = PLATE_FORMATS[fmt]
    wells = []
    for i, w in enumerate(table["Metadata_Well"].astype(str)):
        try:
            r, c = split_well(w)
        except ValueError as exc:
            raise ValueError(f"{path} row {i + 2}: {exc}") from None
        if _row_number(r) > rows or not 1 <= c <= cols:
            raise ValueError(f"{path} row {i + 2}: well {w.strip()!r} is outside {_format_text(fmt)}; "
                             f"fix the well name")
        wells.append(well_name(r, c))
    table["Metadata_Well"] = wells
    dup = table["Metadata_Well"][table["Metadata_Well"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{path}: wells listed more than once: {dup}")
    out = pd.DataFrame({"Metadata_Plate": plate, "Metadata_Well": table["Metadata_Well"]})
    for c in ("Metadata_CompoundID", "Metadata_SMILES"):
        values = table[c] if c in table.columns else [None] * len(table)
        out[c] = [None if v is None or pd.isna(v) or str(v).strip() == "" else str(v).strip() for v in values]
    out["Metadata_Concentration"] = (
        pd.to_numeric(table["Metadata_Concentration"], errors="coerce") if "Metadata_Concentration" in table.columns
        else float("nan"))
    default = ["negcon" if pd.isna(s) and pd.isna(cid) else "trt"
               for s, cid in zip(out["Metadata_SMILES"], out["Metadata_CompoundID"])]
    squashed = {_squash(c): c for c in reversed(table.columns)}
    ccol = next((squashed[k] for k in _CONTROL_COLUMNS if k in squashed), None)
    if ccol is not None:  # the map's own words (negcon, vehicle, control, ...); pipeline.profiles.controls reads them
        given = table[ccol].astype("string").str.strip()
        out["Metadata_ControlType"] = [d if pd.isna(v) or v == "" else str(v) for v, d in zip(given, default)]
    else:
        out["Metadata_ControlType"] = default
    return out


#: Control-type columns of a platemap.csv, in priority order, compared without case, blanks and underscores.
_CONTROL_COLUMNS = ("metadatacontroltype", "controltype", "perttype", "metadataperttype")


def _squash(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def fingerprint_files(root: Path, files: list[str], *, extra: str = "") -> str:
    """SHA-256 over (relative name, size, mtime) of ``files`` under ``root``, plus ``extra``.

    Cheap (no pixel reads): a changed, added or removed file changes the fingerprint.
    """
    h = hashlib.sha256(extra.encode())
    for rel in sorted(files):
        try:
            st = (root / rel).stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            h.update(f"{rel}\0missing\n".encode())
    return h.hexdigest()
