"""PerkinElmer/Revvity Phenix (Harmony export): ``r01c01f01p01-ch1sk1fk1fl1.tiff`` and the Harmony
metadata, ``Index.idx.xml`` (Harmony V5) or ``Index.xml`` (V6 and later), beside the images.

File names give row, column, field, plane and channel numbers. One focal plane is ingested per
field and channel: plane 1 (``p01``) where it exists, else the lowest-numbered plane exported for
it (an export of planes ``p02``-``p05`` ingests ``p02``); other planes are listed as ignored,
never quarantined.

The Harmony index gives plate id, wells, fields, per channel its name, excitation/emission
wavelengths and exposure, pixel size (m), objective magnification and NA, and Harmony's own
flat-field profile per channel (a polynomial, see :func:`flatfield_image`). Without the index,
Harmony V5 TIFFs name their channel in their own description (private tag 65500,
:func:`tiff_acquisition`); later versions (V7) write only the image's ids there: no channel name.
The index is authoritative: with one, ``layout='auto'`` reads the Phenix file names (a LoadData
CSV beside it may have been written on another machine, with paths of its own).
"""

from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from pipeline.plates.acquisition import Acquisition, AcquisitionError, ChannelInfo, auto_channel_map
from pipeline.plates.channel_maps import raw_channel
from pipeline.plates.vendors.base import FileListing, FileNameVendor, shallowest, tiffs
from pipeline.plates.wells import row_number, split_well, well_name

__all__ = ["Phenix", "VENDOR", "read_harmony_index", "flatfield_image", "HARMONY_TIFF_TAG", "tiff_channel_name",
           "tiff_acquisition"]

_PHENIX = re.compile(
    r"^r(?P<row>\d{2})c(?P<col>\d{2})f(?P<site>\d{2,3})p(?P<plane>\d{2,3})-ch(?P<channel>\d+)"
    r"sk\d+fk\d+fl\d+\.(?i:tiff?)$"
)
_INDEX_NAMES = ("index.idx.xml", "index.xml")


class Phenix(FileNameVendor):
    """Phenix file names; channel names from the Harmony index, else the TIFFs' descriptions."""

    name = "phenix"
    expects = "Phenix 'r01c01f01p01-ch1sk1fk1fl1.tiff'"

    def detect(self, root: Path) -> bool:
        """A Harmony index (``Index.idx.xml`` / ``Index.xml``) anywhere in the folder."""
        return self._index(root) is not None

    def read_metadata(self, root: Path) -> Acquisition | None:
        """The shallowest Harmony index under ``root`` (:func:`read_harmony_index`), or None."""
        found = self._index(root)
        return None if found is None else read_harmony_index(found)

    @staticmethod
    def _index(root: Path) -> Path | None:
        return shallowest(root, lambda p: p.name.lower() in _INDEX_NAMES)

    def image_name(self, plate: str, well: str, site: int, channel: int, *, guid: str = "") -> str:
        """``Images/r<row>c<col>f<site>p01-ch<channel>sk1fk1fl1.tiff`` (focal plane 1, two digits
        each), as a Harmony export writes them."""
        row, col = split_well(well)
        return f"Images/r{row_number(row):02d}c{col:02d}f{site:02d}p01-ch{channel}sk1fk1fl1.tiff"

    def list_files(self, root: Path, channel_map: dict[str, str] | None) -> FileListing:
        unmatched, ignored = [], []
        planes: dict[tuple[str, int, str], list[tuple[int, str]]] = {}
        for p in tiffs(root):
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
        return FileListing(plate=None, rows=rows, unmatched=unmatched, ignored=ignored)

    def channels_from_files(self, root: Path, files: FileListing, acquisition: Acquisition | None,
                            notes: list[str]) -> tuple[Acquisition | None, FileListing, dict[str, str] | None, str]:
        """A Phenix folder without a Harmony index that names channels: the channel names its
        TIFFs' Harmony descriptions (tag 65500) give, when every channel's file names one; else
        the raw listing and a note saying they name none."""
        first: dict[str, Path] = {}
        for r in files.rows:
            first.setdefault(r["Metadata_Channel"][2:], root / r["File"])
        acq = tiff_acquisition(first)
        if acq is None:
            notes.append(f"{root}: no Harmony index (Index.idx.xml / Index.xml), and the TIFFs' Harmony descriptions "
                         f"(tag 65500) name no channel")
            return None, files, None, "unresolved"
        cmap = auto_channel_map(acq)
        notes.append(f"{root}: no Harmony index; channel names read from the TIFFs' Harmony descriptions (tag 65500)")
        return acq, self.list_files(root, cmap), cmap, "metadata"


# ----------------------------------------------------------------------------- Harmony index
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


VENDOR = Phenix()
