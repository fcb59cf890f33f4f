"""What a vendor layout is: :class:`Vendor` (detect a plate folder, read its metadata, list its
images) and :class:`FileNameVendor`, the base of layouts whose file names say well, field and
channel; plus the pieces every lister shares (:func:`tiffs`, :func:`refusal`, :func:`list_matching`).

A vendor module defines one subclass and one instance, ``VENDOR``; :mod:`pipeline.plates.vendors`
registers it (see ``docs/add-a-vendor.md``).
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.plates.acquisition import Acquisition, auto_channel_map
from pipeline.plates.channel_maps import ChannelSource, raw_channel
from pipeline.plates.wells import split_well, well_name

__all__ = ["PlateLayoutError", "FileListing", "VendorListing", "Vendor", "FileNameVendor", "tiffs", "refusal",
           "list_matching", "shallowest"]

_TIFF = re.compile(r"\.tiff?$", re.IGNORECASE)


class PlateLayoutError(ValueError):
    """A plate folder matches no known layout, or its files contradict each other."""


@dataclass(frozen=True)
class FileListing:
    """What a vendor's lister found in a plate folder.

    Attributes
    ----------
    plate : str or None
        The plate id the file names give, if they give one.
    rows : list of dict
        One per image: ``Metadata_Well`` (``'A01'``), ``Metadata_Site`` (int), ``Metadata_Channel``
        (the channel map's name, or ``ch<N>`` without a map) and ``File`` (relative to the folder).
    unmatched : list of str
        Image files whose name matches no pattern of the layout.
    ignored : list of str
        ``'<file>: <why>'`` for images recorded but never read (channels the map does not
        name, other focal planes).
    refused : list of dict
        Images listed but refused, as :func:`refusal` writes them.
    """

    plate: str | None
    rows: list[dict]
    unmatched: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class VendorListing:
    """One vendor's reading of a plate folder: its files, the channel map used, the vendor
    metadata and where the map comes from (:data:`pipeline.plates.channel_maps.CHANNEL_SOURCES`)."""

    layout: str
    files: FileListing
    channel_map: dict[str, str]
    acquisition: Acquisition | None
    source: ChannelSource


class Vendor(abc.ABC):
    """A vendor layout: how one kind of instrument (or CellProfiler) writes a plate folder.

    Attributes
    ----------
    name : str
        The layout name (``--layout``), lower case.
    expects : str
        How its images look, for the message of a folder that matches no layout
        (``"ImageXpress '<plate>_<well>_s<site>_w<channel><GUID>.tif'"``).
    by_file_name : bool
        Whether ``layout='auto'`` tries it on any folder (its file names alone identify its
        images); a layout that needs an index file (LoadData) says False and :meth:`detect`.
    """

    name: str
    expects: str
    by_file_name: bool = True

    def detect(self, root: Path) -> bool:
        """Whether the folder carries this vendor's own index (a Harmony ``Index.xml``, a
        LoadData CSV): ``layout='auto'`` then reads the folder with this vendor alone. The
        first registered vendor that detects a folder wins. Default: never."""
        return False

    @abc.abstractmethod
    def read_metadata(self, root: Path) -> Acquisition | None:
        """The vendor metadata of the plate folder, or None when there is none.

        Raises
        ------
        AcquisitionError
            If a metadata file is found but cannot be read (naming it).
        """

    @abc.abstractmethod
    def list_images(self, root: Path, *, channel_map: dict[str, str] | None, allow_outside: bool,
                    notes: list[str]) -> VendorListing:
        """List the folder's images with the user's ``channel_map`` (None: from the metadata,
        else raw ``ch<N>``), appending a line to ``notes`` about anything done on the way.

        Raises
        ------
        PlateLayoutError
            When the folder's files contradict each other (naming them).
        """

    def raw_images(self, root: Path) -> list[dict] | None:
        """Every image of the folder with its channel named raw (``ch<N>``), whatever the
        channel map; None when the layout's channels have no vendor numbers (LoadData)."""
        return None

    def image_name(self, plate: str, well: str, site: int, channel: int, *, guid: str = "") -> str:
        """The path (relative to the plate folder) the instrument writes the image of ``well``
        (``'B07'``), field ``site`` and vendor channel number ``channel`` to: the inverse of the
        lister, used by :mod:`pipeline.synthetic` to write plates in this layout. ``guid`` is a
        per-channel identifier for layouts whose names carry one.

        Raises
        ------
        NotImplementedError
            For a layout whose file names follow no rule (LoadData: the CSV names them).
        """
        raise NotImplementedError(f"the {self.name} layout has no file-name rule")


class FileNameVendor(Vendor):
    """A layout whose file names say well, field and channel number. A subclass gives
    :meth:`list_files` and :meth:`read_metadata`; the channel map is resolved here: the user's,
    else the one the metadata's stain names give (:func:`~pipeline.plates.acquisition.auto_channel_map`),
    else :meth:`channels_from_files`, else every channel raw (``ch<N>``) until the pixels find DNA."""

    @abc.abstractmethod
    def list_files(self, root: Path, channel_map: dict[str, str] | None) -> FileListing:
        """List the folder's images named by ``channel_map`` (vendor channel number -> name;
        None: raw ``ch<N>``); channels the map does not name go to ``ignored``."""

    def channels_from_files(self, root: Path, files: FileListing, acquisition: Acquisition | None,
                            notes: list[str]) -> tuple[Acquisition | None, FileListing, dict[str, str] | None, str]:
        """Neither the user nor the metadata names the channels: a vendor whose files describe
        themselves reads them here. Returns (acquisition, listing, map or None, source).
        Default: nothing more to read (``'unresolved'``)."""
        return acquisition, files, None, "unresolved"

    def list_images(self, root: Path, *, channel_map: dict[str, str] | None, allow_outside: bool,
                    notes: list[str]) -> VendorListing:
        acq = self.read_metadata(root)
        if channel_map is not None:
            cmap, source = channel_map, "user"
        elif acq is not None and acq.channels:
            cmap, source = auto_channel_map(acq), "metadata"
        else:  # no map: every channel listed raw (ch<N>) until the pixels find DNA
            cmap, source = None, "unresolved"
        files = self.list_files(root, cmap)
        if cmap is None and files.rows:
            acq, files, cmap, source = self.channels_from_files(root, files, acq, notes)
        if cmap is None:
            cmap = {r["Metadata_Channel"][2:]: r["Metadata_Channel"] for r in files.rows}
        return VendorListing(layout=self.name, files=files, channel_map=cmap, acquisition=acq, source=source)

    def raw_images(self, root: Path) -> list[dict]:
        return self.list_files(root, None).rows


def tiffs(root: Path) -> list[Path]:
    """Every TIFF (``.tif``/``.tiff``, any case) under ``root``, sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file() and _TIFF.search(p.name))


def refusal(well: str | None, site: int | None, channel: str | None, file: str, reason: str) -> dict:
    """A refused image as :attr:`FileListing.refused` holds it."""
    return dict(Metadata_Well=well, Metadata_Site=site, Metadata_Channel=channel, File=file, Reason=reason)


def list_matching(root: Path, pattern: re.Pattern, channel_map: dict[str, str] | None) -> FileListing:
    """The listing of a simple file-name layout: every TIFF whose name ``pattern`` matches in
    full, with named groups ``well`` (``'B07'``) or ``row`` and ``col`` (numbers), ``site`` and
    ``channel`` (the vendor channel number)."""
    rows, unmatched, ignored = [], [], []
    for p in tiffs(root):
        m = pattern.fullmatch(p.name)
        if not m:
            unmatched.append(str(p.relative_to(root)))
            continue
        if channel_map is not None and m["channel"] not in channel_map:
            ignored.append(f"{p.relative_to(root)}: channel {m['channel']} is not in the channel map")
            continue
        groups = m.groupdict()
        well = (well_name(*split_well(groups["well"])) if groups.get("well")
                else well_name(int(groups["row"]), int(groups["col"])))
        name = channel_map[m["channel"]] if channel_map is not None else raw_channel(m["channel"])
        rows.append(dict(Metadata_Well=well, Metadata_Site=int(m["site"]), Metadata_Channel=name,
                         File=str(p.relative_to(root))))
    return FileListing(plate=None, rows=rows, unmatched=unmatched, ignored=ignored)


def shallowest(root: Path, match) -> Path | None:
    """The file under ``root`` (searched recursively) for which ``match(path)`` is true that
    lies shallowest (then first by name), or None."""
    found = [p for p in root.rglob("*") if p.is_file() and match(p)]
    return min(found, key=lambda p: (len(p.relative_to(root).parts), p.name)) if found else None
