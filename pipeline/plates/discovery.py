"""Discover the images of a plate folder: which vendor layout it is, and one row per image.

The layouts are :mod:`pipeline.plates.vendors` (ImageXpress, Phenix/Harmony, CellProfiler
LoadData, and any registered one); :func:`discover_plate` asks them in their detection order
and returns a :class:`PlateListing` that the ingestion stage consumes; it never reads pixels.
A folder whose images follow two file-name layouts is refused with one message
(``PlateLayoutError``): sort them into one folder per layout, or pass the layout to ingest.
Also here: a folder's ``platemap.csv`` (:func:`read_platemap`) and the cheap fingerprint of
its files (:func:`fingerprint_files`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from pipeline.plates.acquisition import Acquisition
from pipeline.plates.channel_maps import ChannelSource, parse_channel_map, plate_channels
# LAYOUTS (and split_well, parse_channel_map, PlateLayoutError below) are also imported from here
# by other stages; their homes are pipeline.plates.vendors, .wells, .channel_maps, .vendors.base
from pipeline.plates.vendors import LAYOUTS, Layout, get_vendor, layout_names, vendors  # noqa: F401
from pipeline.plates.vendors.base import PlateLayoutError, Vendor, VendorListing
from pipeline.plates.wells import PLATE_FORMATS, describe_format, row_number, split_well, well_name
from pipeline.store.paths import CHANNELS

__all__ = [
    "PlateListing",
    "raw_images",
    "discover_plate",
    "read_platemap",
    "fingerprint_files",
]


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
    channel_source: ChannelSource = "metadata"
    notes: list[str] = field(default_factory=list)

def raw_images(listing: PlateListing) -> pd.DataFrame:
    """Every image of a file-name layout's folder (ImageXpress, Phenix) with its channel named
    raw (``ch<N>``), whatever the channel map (channels it ignores included); a LoadData
    listing's images as listed. Columns as :attr:`PlateListing.images`."""
    rows = get_vendor(listing.layout).raw_images(listing.root) if listing.layout in layout_names() else None
    if rows is None:
        return listing.images
    return pd.DataFrame(rows, columns=["Metadata_Well", "Metadata_Site", "Metadata_Channel", "File"])


def _vendors_to_try(root: Path, layout: str) -> list[Vendor]:
    """The vendor named by ``layout``; for ``'auto'``, the first (in detection order) whose own
    index the folder carries, else every vendor known by its file names."""
    if layout != "auto":
        return [get_vendor(layout)]
    every = vendors()
    claimed = next((v for v in every if v.detect(root)), None)
    return [claimed] if claimed is not None else [v for v in every if v.by_file_name]


def _expected() -> str:
    """``"ImageXpress '...', Phenix '...' or a LoadData CSV"``: what each vendor's images look like."""
    texts = [v.expects for v in vendors()]
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " or " + texts[-1]


def _pick(root: Path, layout: str, candidates: list[VendorListing]) -> VendorListing:
    """The listing that found most images (then most refused ones).

    Raises
    ------
    PlateLayoutError
        When ``'auto'`` found images of two layouts, or no listing found any image.
    """
    found = [(c.layout, len(c.files.rows)) for c in candidates if c.files.rows]
    if layout == "auto" and len(found) > 1:
        counts = " and ".join(f"{n} {name} images" for name, n in found)
        raise PlateLayoutError(f"{root}: the folder mixes file-name layouts ({counts}); keep one layout per plate "
                               f"folder, or pass --layout {found[0][0]} to ingest only those")
    best = max(candidates, key=lambda c: (len(c.files.rows), len(c.files.refused)))
    if not best.files.rows and not best.files.refused:
        seen = [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file()][:10]
        raise PlateLayoutError(
            f"{root}: no images matched layout {layout!r}. Expected {_expected()}. "
            f"First files seen: {seen or 'none'}"
        )
    return best


def discover_plate(
    plate_dir: str | os.PathLike,
    *,
    layout: Layout | Literal["auto"] | str = "auto",
    channel_map: str | os.PathLike | dict[str, str] | None = None,
    allow_outside: bool = False,
) -> PlateListing:
    """List the images of one plate folder.

    Parameters
    ----------
    plate_dir : path
        The plate folder (images, optionally ``platemap.csv`` and a LoadData CSV).
    layout : {'auto', 'imagexpress', 'phenix', 'loaddata'} or a registered layout
        A vendor layout of :mod:`pipeline.plates.vendors`. ``'auto'`` asks them in order: the
        first whose own index the folder carries reads it alone (the Phenix file names when a
        Harmony index, ``Index.idx.xml`` / ``Index.xml``, is present, else a LoadData CSV if one
        is present), else the file-name layout that matches most TIFFs.
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
    if layout not in ("auto", *layout_names()):
        raise ValueError(f"layout {layout!r} is not one of 'auto', {', '.join(map(repr, layout_names()))}")
    given = None if channel_map is None else parse_channel_map(channel_map)
    notes: list[str] = []
    candidates = [v.list_images(root, channel_map=given, allow_outside=allow_outside, notes=notes)
                  for v in _vendors_to_try(root, layout)]
    best = _pick(root, layout, candidates)
    cmap, acq, source = best.channel_map, best.acquisition, best.source
    images = pd.DataFrame(best.files.rows, columns=["Metadata_Well", "Metadata_Site", "Metadata_Channel", "File"]
                          ).sort_values(["Metadata_Well", "Metadata_Site", "Metadata_Channel", "File"], ignore_index=True)
    # a TIFF beside the plate's images whose name fits no pattern may be a misnamed field (it is
    # quarantined); TIFFs in other folders (analysis output, previews) are recorded and skipped
    image_dirs = {str(Path(f).parent) for f in images["File"]}
    unmatched = best.files.unmatched
    ignored = best.files.ignored + [f"{u}: not in a folder of the plate's images (file name matches no pattern)"
                                    for u in unmatched if str(Path(u).parent) not in image_dirs]
    unmatched = [u for u in unmatched if str(Path(u).parent) in image_dirs]
    channels = plate_channels(cmap.values()) if source == "unresolved" else tuple(
        c for c in CHANNELS if c in set(cmap.values()))
    if "DNA" not in channels and source != "unresolved":
        raise PlateLayoutError(f"{root}: the plate has no DNA channel (LoadData columns FileName_OrigDNA / "
                               f"PathName_OrigDNA, or DNA in the channel map)")
    platemap = root / "platemap.csv"
    plate = best.files.plate or (acq.plate if acq is not None else None)
    return PlateListing(plate=str(plate or root.name), layout=best.layout, root=root, images=images,
                        unmatched=unmatched, platemap=platemap if platemap.is_file() else None,
                        channels=channels, channel_map=cmap, acquisition=acq, ignored=ignored,
                        refused=best.files.refused, channel_source=source, notes=notes)


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
        if row_number(r) > rows or not 1 <= c <= cols:
            raise ValueError(f"{path} row {i + 2}: well {w.strip()!r} is outside {describe_format(fmt)}; "
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
