"""Molecular Devices ImageXpress / MetaXpress: ``<plate>_<well>_s<site>_w<channel><GUID>.tif`` and
the ``<plate>.HTD`` file beside the images (wavelength names, sites).

Extensions are matched case-insensitively (MetaXpress writes ``.TIF``); ``_thumb`` previews
are skipped. The plate id comes from the file names; one folder holds one plate.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pipeline.plates.acquisition import Acquisition, AcquisitionError, ChannelInfo
from pipeline.plates.channel_maps import raw_channel
from pipeline.plates.vendors.base import FileListing, FileNameVendor, PlateLayoutError, shallowest, tiffs
from pipeline.plates.wells import split_well, well_name

__all__ = ["ImageXpress", "VENDOR", "read_htd"]

_IMAGEXPRESS = re.compile(
    r"^(?P<plate>.+?)_(?P<well>[A-Pa-p]\d{1,2})_s(?P<site>\d+)_w(?P<channel>\d+)"
    r"(?P<guid>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})?\.(?i:tiff?)$"
)


class ImageXpress(FileNameVendor):
    """ImageXpress file names; channel names from the ``.HTD`` wave names."""

    name = "imagexpress"
    expects = "ImageXpress '<plate>_<well>_s<site>_w<channel><GUID>.tif'"

    def read_metadata(self, root: Path) -> Acquisition | None:
        """The shallowest ``.HTD`` file under ``root`` (:func:`read_htd`), or None."""
        found = shallowest(root, lambda p: p.suffix.lower() == ".htd")
        return None if found is None else read_htd(found)

    def image_name(self, plate: str, well: str, site: int, channel: int, *, guid: str = "") -> str:
        """``<plate>_<well>_s<site>_w<channel><GUID>.tif``."""
        return f"{plate}_{well}_s{site}_w{channel}{guid}.tif"

    def list_files(self, root: Path, channel_map: dict[str, str] | None) -> FileListing:
        rows, unmatched, ignored, plates = [], [], [], set()
        for p in tiffs(root):
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
        return FileListing(plate=plates.pop() if plates else None, rows=rows, unmatched=unmatched, ignored=ignored)


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



VENDOR = ImageXpress()
