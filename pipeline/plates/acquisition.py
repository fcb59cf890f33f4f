"""What the microscope wrote about a plate: channel names, wavelengths, pixel size, objective.

Readers for the metadata files that sit beside the images:

``Index.idx.xml`` / ``Index.xml`` (PerkinElmer/Revvity Harmony V5 and later)
    plate id, wells, fields, per channel its name, excitation/emission wavelengths and exposure,
    pixel size (m), objective magnification and NA, and Harmony's own flat-field profile per
    channel (a polynomial, see :func:`flatfield_image`).
``<plate>.HTD`` (Molecular Devices ImageXpress / MetaXpress)
    wavelength names (``"WaveName1", "DAPI"``), well and site layout.
a Harmony TIFF's own description (private tag 65500)
    Harmony V5 writes the measurement's records into every image; the image's ``RecordID`` and
    ``ChannelID`` select its channel's ``Name`` (:func:`tiff_acquisition`). Later versions
    (V7) write only the image's ids there: no channel name.
a CellProfiler LoadData CSV (pe2loaddata style)
    ``Metadata_ChannelName_Orig<X>``, ``Metadata_ImageResolutionX`` (m), wavelengths,
    objective magnification.

:func:`stain_role` maps a stain or dye name to its Cell Painting role (Hoechst/DAPI -> DNA,
ConA/Alexa 488 -> ER, SYTO 14/"488 long" -> RNA, phalloidin/WGA/Alexa 568 -> AGP,
MitoTracker/Alexa 647 -> Mito; brightfield and phase contrast -> ``None``, not a stain) and
:func:`auto_channel_map` builds a whole channel map from an :class:`Acquisition`.
Nothing here reads pixels.
"""

from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.store.paths import CHANNELS

__all__ = [
    "ChannelInfo",
    "Acquisition",
    "AcquisitionError",
    "stain_role",
    "auto_channel_map",
    "describe_channel_map",
    "read_harmony_index",
    "read_htd",
    "loaddata_acquisition",
    "find_acquisition",
    "flatfield_image",
    "tiff_channel_name",
    "tiff_acquisition",
]


class AcquisitionError(ValueError):
    """A metadata file cannot be read, or its channels cannot be mapped to Cell Painting roles."""


@dataclass(frozen=True)
class ChannelInfo:
    """One acquired channel as the instrument names it.

    Attributes
    ----------
    id : str
        The vendor channel number as it appears in file names (``ch5`` -> ``'5'``, ``w2`` ->
        ``'2'``) or, for LoadData, the column suffix (``OrigDNA`` -> ``'DNA'``).
    name : str
        Stain / channel name (``'HOECHST 33342'``, ``'Brightfield'``).
    excitation_nm, emission_nm : float or None
        Main excitation and emission wavelengths (nm).
    exposure_s : float or None
        Exposure time (s).
    """

    id: str
    name: str
    excitation_nm: float | None = None
    emission_nm: float | None = None
    exposure_s: float | None = None


@dataclass(frozen=True)
class Acquisition:
    """Acquisition metadata of one plate (every field optional but ``source``).

    Attributes
    ----------
    source : Path
        The file it was read from.
    plate : str or None
        Plate id / barcode.
    wells : tuple of str
        Wells imaged (``'A01'``).
    n_fields : int or None
        Fields per well (the largest field id seen).
    channels : tuple of ChannelInfo
        In vendor channel order.
    pixel_size_um : (float, float) or None
        (y, x) physical pixel size in micrometres.
    objective : str or None
        E.g. ``'20x, NA 1.0'``.
    flatfield : dict
        Vendor channel id -> Harmony flat-field profile (the parsed ``FlatfieldProfile`` dict).
    """

    source: Path
    plate: str | None = None
    wells: tuple[str, ...] = ()
    n_fields: int | None = None
    channels: tuple[ChannelInfo, ...] = ()
    pixel_size_um: tuple[float, float] | None = None
    objective: str | None = None
    flatfield: dict[str, dict] = field(default_factory=dict)

    def channel(self, vendor_id: str) -> ChannelInfo | None:
        return next((c for c in self.channels if c.id == str(vendor_id)), None)


# ----------------------------------------------------------------------------- stain names
# Checked in order; the first pattern that matches a (lower-cased) channel name decides. '488 long'
# (SYTO 14 through the long-pass filter) must be tested before plain 'alexa 488'.
_NOT_A_STAIN = re.compile(r"bright\s*field|\bbf\b|phase|\bdpc\b|transmi|\bdic\b")
_ROLE_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("DNA", re.compile(r"hoechst|dapi|draq\s*5|\bdna\b|origdna")),
    ("RNA", re.compile(r"syto|488\s*long|\brna\b|origrna")),
    ("ER", re.compile(r"concanavalin|\bcon\s*a\b|alexa\s*(fluor\s*)?488|\ber\b|origer")),
    ("AGP", re.compile(r"phalloidin|\bwga\b|wheat germ|alexa\s*(fluor\s*)?5(46|55|68|94)|\bagp\b|origagp|actin|golgi")),
    ("Mito", re.compile(r"mito|alexa\s*(fluor\s*)?6(33|47)|origmito")),
    # ImageXpress wave names are filter sets; Bray et al. 2016 (Nat. Protoc.) Cell Painting:
    # DAPI = Hoechst, FITC = ConA, Cy3 = SYTO 14, Texas Red = phalloidin + WGA, Cy5 = MitoTracker
    ("ER", re.compile(r"\bfitc\b|\bgfp\b")),
    ("RNA", re.compile(r"\bcy\s*3\b|\btritc\b")),
    ("AGP", re.compile(r"texas\s*red|\btx\s*red\b")),
    ("Mito", re.compile(r"\bcy\s*5\b")),
)


def stain_role(name: str) -> str | None:
    """The Cell Painting role of a stain or channel name, or None (brightfield, unknown).

    Examples
    --------
    >>> [stain_role(n) for n in ("HOECHST 33342", "488 long", "Alexa 488", "Alexa 568", "Alexa 647")]
    ['DNA', 'RNA', 'ER', 'AGP', 'Mito']
    >>> stain_role("Brightfield") is None
    True
    """
    s = name.strip().lower().replace("_", " ")
    if _NOT_A_STAIN.search(s):
        return None
    for role, pattern in _ROLE_PATTERNS:
        if pattern.search(s):
            return role
    return None


def auto_channel_map(acq: Acquisition) -> dict[str, str]:
    """``{vendor channel id: role}`` from the channel names of ``acq``.

    Channels whose name maps to no role (brightfield, digital phase, unknown dyes) are left out:
    the plate keeps the roles it has (DNA at least).

    Raises
    ------
    AcquisitionError
        When two channels map to the same role, or no channel is a DNA stain; the message names
        the file and lists the channel names so that ``--channels`` can be given instead.
    """
    mapping: dict[str, str] = {}
    seen: dict[str, str] = {}
    names = ", ".join(f"{c.id}={c.name!r}" for c in acq.channels)
    for c in acq.channels:
        role = stain_role(c.name)
        if role is None:
            continue
        if role in seen:
            raise AcquisitionError(f"{acq.source}: channels {seen[role]} and {c.id} both look like {role} "
                                   f"({names}); give --channels")
        seen[role] = c.id
        mapping[c.id] = role
    if "DNA" not in mapping.values():
        raise AcquisitionError(f"{acq.source}: no channel is a DNA stain (Hoechst, DAPI) among {names or 'none'}; "
                               f"give --channels")
    return mapping


#: How each channel-map source is said in a summary.
_SOURCE_TEXT = {"metadata": "the instrument's metadata", "user": "--channels",
                "pixels": "the pixels (DNA only; no metadata names the other stains)", "unresolved": "not yet known"}


def describe_channel_map(mapping: dict[str, str], acq: Acquisition | None = None, *, source: str | None = None) -> str:
    """One line: ``'DNA=ch5 (HOECHST 33342), ER=ch4 (Alexa 488), ...; ignored: ch6 (Brightfield)'``.

    Channels mapped to no stain (``ch<N>``, kept raw) are listed as ``unassigned``; with
    ``source`` (:data:`pipeline.plates.discovery.CHANNEL_SOURCES`) the line ends with where the map
    comes from (``'; source: the instrument's metadata'``). LoadData channels, named by their
    column, read ``OrigDNA``; vendor channel numbers read ``ch5``.
    """
    def label(vid: str) -> str:
        info = acq.channel(vid) if acq is not None else None
        return (f"ch{vid}" if vid.isdigit() else f"Orig{vid}") + (f" ({info.name})" if info is not None else "")

    by_role = {role: vid for vid, role in mapping.items()}
    parts = [f"{r}={label(by_role[r])}" for r in CHANNELS if r in by_role]
    raw = sorted((v for v, r in mapping.items() if r not in CHANNELS), key=lambda v: (len(v), v))
    ignored = [label(c.id) for c in (acq.channels if acq is not None else ()) if c.id not in mapping]
    return (", ".join(parts) + (f"; unassigned: {', '.join(label(v) for v in raw)}" if raw else "")
            + (f"; ignored: {', '.join(ignored)}" if ignored else "")
            + (f"; source: {_SOURCE_TEXT.get(source, source)}" if source else ""))


# ----------------------------------------------------------------------------- Harmony
def _strip_ns(root: ET.Element) -> ET.Element:
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    return root


def _float(el: ET.Element | None) -> float | None:
    if el is None or el.text is None or not el.text.strip():
        return None
    try:
        return float(el.text)
    except ValueError:
        return None


def _metres_to_um(el: ET.Element | None) -> float | None:
    v = _float(el)
    if v is None:
        return None
    unit = (el.get("Unit") or "m").strip()
    return v * {"m": 1e6, "mm": 1e3, "um": 1.0, "µm": 1.0, "nm": 1e-3}.get(unit, 1e6)


def _parse_profile(text: str) -> dict | None:
    """Harmony's ``FlatfieldProfile`` text (YAML-like flow mapping) into a dict, or None."""
    s = text.strip()
    if not s.startswith("{"):
        return None
    # quote bare keys and bare string values so the mapping is a Python literal
    s = re.sub(r"([{,]\s*)([A-Za-z][\w ]*?)\s*:", r"\1'\2':", s)
    def value(m: re.Match) -> str:
        v = m.group(1).strip()
        try:
            float(v)
            return f": {v}{m.group(2)}"
        except ValueError:
            return f": {v!r}{m.group(2)}"

    s = re.sub(r"'\s*:\s*([^,{}\[\]']+?)\s*([,}])", lambda m: "'" + value(m), s)
    try:
        out = ast.literal_eval(s)
    except (ValueError, SyntaxError):
        return None
    return out if isinstance(out, dict) else None


def read_harmony_index(path: str | os.PathLike) -> Acquisition:
    """Read a Harmony ``Index.idx.xml`` (V5) or ``Index.xml`` (V6 and later).

    Namespaces are ignored, so every Harmony version with ``Plates``/``Wells``/``Images``
    elements reads the same way. Channel names and wavelengths come from the ``Images`` entries
    (one per channel is enough) and, where present, the ``Maps`` entries.

    Raises
    ------
    AcquisitionError
        Naming the file when it is not XML or holds no image entries.
    """
    path = Path(path)
    try:
        root = _strip_ns(ET.parse(path).getroot())
    except (ET.ParseError, OSError) as exc:
        raise AcquisitionError(f"{path}: cannot read Harmony index: {exc}") from None
    images = root.findall("./Images/Image")
    if not images:
        raise AcquisitionError(f"{path}: Harmony index has no Images/Image entries")
    plate = root.findtext("./Plates/Plate/PlateID") or root.findtext("./Plates/Plate/Name")
    channels: dict[str, ChannelInfo] = {}
    wells: set[str] = set()
    n_fields = 0
    px = None
    mag = na = None
    for im in images:
        cid = (im.findtext("ChannelID") or "").strip()
        row, col = im.findtext("Row"), im.findtext("Col")
        if row and col:
            wells.add(f"{chr(ord('A') + int(row) - 1)}{int(col):02d}")
        n_fields = max(n_fields, int(im.findtext("FieldID") or 0))
        if px is None:
            y, x = _metres_to_um(im.find("ImageResolutionY")), _metres_to_um(im.find("ImageResolutionX"))
            if x is not None:
                px = (y if y is not None else x, x)
        mag = mag if mag is not None else _float(im.find("ObjectiveMagnification"))
        na = na if na is not None else _float(im.find("ObjectiveNA"))
        if cid and cid not in channels:
            channels[cid] = ChannelInfo(
                id=cid, name=(im.findtext("ChannelName") or f"channel {cid}").strip(),
                excitation_nm=_float(im.find("MainExcitationWavelength")),
                emission_nm=_float(im.find("MainEmissionWavelength")), exposure_s=_float(im.find("ExposureTime")))
    flatfield: dict[str, dict] = {}
    for entry in root.findall("./Maps/Map/Entry"):
        cid = entry.get("ChannelID")
        prof = entry.findtext("FlatfieldProfile")
        if cid and prof:
            parsed = _parse_profile(prof)
            if parsed is not None:
                flatfield[cid] = parsed
        name = entry.findtext("ChannelName")
        if cid and name and cid not in channels:
            channels[cid] = ChannelInfo(id=cid, name=name.strip())
    objective = None
    if mag is not None:
        objective = f"{mag:g}x" + (f", NA {na:g}" if na is not None else "")
    return Acquisition(source=path, plate=plate.strip() if plate else None, wells=tuple(sorted(wells)),
                       n_fields=n_fields or None,
                       channels=tuple(channels[k] for k in sorted(channels, key=lambda s: (len(s), s))),
                       pixel_size_um=px, objective=objective, flatfield=flatfield)


def flatfield_image(profile: dict, *, part: str = "Background", shape: tuple[int, int] | None = None) -> np.ndarray:
    """Evaluate a Harmony flat-field polynomial profile on the pixel grid.

    Harmony stores ``Profile: {Coefficients: [[c00], [c10, c01], [c20, c11, c02], ...], Dims,
    Origin, Scale, Type: Polynomial}``; row ``k`` holds the coefficients of the degree-``k``
    terms ``u^(k-j) v^j`` with ``u = (x - Origin[0]) * Scale[0]``, ``v = (y - Origin[1]) *
    Scale[1]`` (pixel column x, row y).

    Parameters
    ----------
    profile : dict
        One channel's parsed profile (:attr:`Acquisition.flatfield` value).
    part : {'Background', 'Foreground'}
    shape : (Y, X), optional
        Default: the profile's ``Dims`` (given as (X, Y)).

    Returns
    -------
    (Y, X) float32 ndarray, normalised to mean 1.

    Raises
    ------
    AcquisitionError
        If the profile is not a polynomial one.
    """
    p = (profile.get(part) or {}).get("Profile") or {}
    if p.get("Type") != "Polynomial" or "Coefficients" not in p:
        raise AcquisitionError(f"flat-field profile part {part!r} is not a polynomial profile: {p!r}")
    dims = p.get("Dims", [0, 0])
    ny, nx = shape if shape is not None else (int(dims[1]), int(dims[0]))
    ox, oy = p.get("Origin", [(nx - 1) / 2, (ny - 1) / 2])
    sx, sy = p.get("Scale", [1 / nx, 1 / ny])
    u = ((np.arange(nx) - ox) * sx)[None, :]
    v = ((np.arange(ny) - oy) * sy)[:, None]
    out = np.zeros((ny, nx), np.float64)
    for k, row in enumerate(p["Coefficients"]):
        for j, c in enumerate(row):
            out += float(c) * u ** (k - j) * v ** j
    return (out / out.mean()).astype(np.float32)


# ----------------------------------------------------------------------------- ImageXpress
def read_htd(path: str | os.PathLike) -> Acquisition:
    """Read a MetaXpress ``.HTD`` file (``"Key", value, ...`` lines): wavelength names, sites.

    Raises
    ------
    AcquisitionError
        Naming the file when it holds no ``WaveName`` entries.
    """
    path = Path(path)
    entries: dict[str, list[str]] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise AcquisitionError(f"{path}: cannot read HTD file: {exc}") from None
    for line in text.splitlines():
        parts = [p.strip().strip('"') for p in line.split(",")]
        if parts and parts[0]:
            entries[parts[0]] = parts[1:]
    waves = sorted((k for k in entries if re.fullmatch(r"WaveName\d+", k)), key=lambda k: int(k[8:]))
    if not waves:
        raise AcquisitionError(f"{path}: HTD file has no WaveName entries")
    channels = tuple(ChannelInfo(id=k[8:], name=entries[k][0] if entries[k] else f"w{k[8:]}") for k in waves)
    n_fields = None
    if entries.get("Sites", ["FALSE"])[0].upper() == "TRUE":
        try:
            n_fields = int(entries["XSites"][0]) * int(entries["YSites"][0])
        except (KeyError, ValueError, IndexError):
            n_fields = None
    return Acquisition(source=path, plate=None, channels=channels, n_fields=n_fields)


# ----------------------------------------------------------------------------- LoadData
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


def find_acquisition(root: str | os.PathLike, layout: str) -> Acquisition | None:
    """The vendor metadata of a plate folder for ``layout`` ('phenix': Harmony index,
    'imagexpress': .HTD), or None when there is none. Searched recursively; the shallowest wins.

    Raises
    ------
    AcquisitionError
        If the file found cannot be read.
    """
    root = Path(root)
    if layout == "phenix":
        found = [p for p in root.rglob("*") if p.is_file() and p.name.lower() in ("index.idx.xml", "index.xml")]
        reader = read_harmony_index
    elif layout == "imagexpress":
        found = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".htd"]
        reader = read_htd
    else:
        return None
    if not found:
        return None
    return reader(min(found, key=lambda p: (len(p.relative_to(root).parts), p.name)))


# ----------------------------------------------------------------------------- TIFF descriptions
#: The private TIFF tag in which Harmony writes each image's XML description.
HARMONY_TIFF_TAG = 65500


def tiff_channel_name(path: str | os.PathLike) -> str | None:
    """The channel name a Harmony TIFF's own description (tag 65500) gives, or None.

    Harmony V5 writes the measurement's records (``Record/Channels/Channel/Name``) into every
    image, and the image's ``Image/RecordID`` and ``Image/ChannelID``: the name is that
    record's channel. A description without records (Harmony V7 writes only the image's ids),
    an unreadable file or a TIFF without the tag gives None.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tag = tif.pages[0].tags.get(HARMONY_TIFF_TAG)
            value = tag.value if tag is not None else None
    except Exception:  # noqa: BLE001 - an unreadable file names nothing; ingestion quarantines it
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str) or "<" not in value:
        return None
    try:
        root = _strip_ns(ET.fromstring(value.strip()))
    except ET.ParseError:
        return None
    record_id, channel_id = root.findtext(".//Image/RecordID"), root.findtext(".//Image/ChannelID")
    records = [r for r in root.iter("Record") if r.find("./Channels/Channel") is not None]
    try:
        record = records[int(record_id) - 1]
        channel = record.findall("./Channels/Channel")[int(channel_id or 1) - 1]
    except (TypeError, ValueError, IndexError):
        return None
    name = channel.findtext("Name")
    return name.strip() if name and name.strip() else None


def tiff_acquisition(files: dict[str, Path]) -> Acquisition | None:
    """Channel names from Harmony TIFF descriptions, one file per vendor channel id.

    Returns an :class:`Acquisition` (source: the first file) when every file names its channel
    and no two name the same one; else None (the descriptions do not name the channels).
    """
    names = {vid: tiff_channel_name(f) for vid, f in files.items()}
    if not names or any(n is None for n in names.values()) or len(set(names.values())) < len(names):
        return None
    order = sorted(names, key=lambda v: (len(v), v))
    return Acquisition(source=Path(files[order[0]]), channels=tuple(ChannelInfo(id=v, name=names[v]) for v in order))
