"""Write and read OME-Zarr v0.5 HCS plates (zarr v3).

Layout (NGFF HCS): plate group -> row group (``A``) -> column/well group (``3``) -> field image
group (``0``, ``1`` ...) holding one resolution level ``0`` of shape (c, y, x), uint16, one chunk per
channel, zstd-compressed (lossless). Labels (``nuclei``, ``cells``) live in ``<field>/labels``.
Metadata is written with ``ome_zarr.writer`` (FormatV05), so ``ome_zarr``/napari read the plate.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import zarr
from ome_zarr.format import FormatV05
from ome_zarr.writer import (
    write_label_metadata,
    write_multiscales_metadata,
    write_plate_metadata,
    write_well_metadata,
)
from zarr.codecs import BloscCodec

from pipeline.plates import split_well

__all__ = ["CHANNEL_COLORS", "PlateWriter", "field_path", "read_field", "read_labels", "open_plate"]

#: Display colours (hex) of the Cell Painting channels in OMERO metadata.
CHANNEL_COLORS = {"DNA": "0000FF", "ER": "00FF00", "RNA": "FFFF00", "AGP": "FF0000", "Mito": "FF00FF"}
_FMT = FormatV05()
_COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


def field_path(well: str, field_index: int) -> str:
    """Path of a field image inside the plate: ``field_path('B07', 0) == 'B/7/0'``."""
    row, col = split_well(well)
    return f"{row}/{col}/{field_index}"


def open_plate(path: str | os.PathLike, mode: str = "r") -> zarr.Group:
    """Open a plate group (zarr v3)."""
    return zarr.open_group(str(path), mode=mode, zarr_format=3)


class PlateWriter:
    """Write one HCS plate field by field (bounded memory).

    Parameters
    ----------
    path : path
        Where the plate group is created (``*.ome.zarr``); must not exist unless ``resume``.
    plate : str
        Plate name stored in the metadata.
    channels : sequence of str
        Channel names in the order of the images' first axis.
    resume : bool
        Open an existing group and keep its complete fields (see :meth:`has_field`).
    """

    def __init__(self, path: str | os.PathLike, *, plate: str, channels: tuple[str, ...], resume: bool = False) -> None:
        self.path = Path(path)
        self.plate = plate
        self.channels = tuple(channels)
        self.root = zarr.open_group(str(self.path), mode="a" if resume else "w-", zarr_format=3)

    def has_field(self, well: str, field_index: int) -> bool:
        """True when the field's image and its multiscales metadata (written last) exist."""
        try:
            grp = self.root[field_path(well, field_index)]
        except KeyError:
            return False
        return isinstance(grp, zarr.Group) and "multiscales" in grp.attrs.get("ome", {})

    def write_field(self, well: str, field_index: int, image: np.ndarray) -> str:
        """Write a (c, y, x) image losslessly; returns its path within the plate."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[0] != len(self.channels):
            raise ValueError(f"field image must be ({len(self.channels)}, y, x); got {image.shape}")
        path = field_path(well, field_index)
        grp = self.root.require_group(path)
        arr = grp.create_array("0", shape=image.shape, chunks=(1, *image.shape[1:]), dtype=image.dtype,
                               compressors=_COMPRESSOR, dimension_names=("c", "y", "x"), overwrite=True)
        arr[:] = image
        hi = int(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1
        omero = {"channels": [
            {"label": c, "color": CHANNEL_COLORS.get(c, "FFFFFF"), "active": True,
             "window": {"min": 0, "max": hi, "start": 0, "end": int(min(hi, np.percentile(image[k], 99.9) + 1))}}
            for k, c in enumerate(self.channels)]}
        write_multiscales_metadata(
            grp, [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]}],
            fmt=_FMT, axes=[{"name": "c", "type": "channel"}, {"name": "y", "type": "space"},
                            {"name": "x", "type": "space"}],
            name=f"{self.plate} {well} field {field_index}", metadata={"omero": omero})
        return path

    def write_labels(self, well: str, field_index: int, name: str, labels: np.ndarray) -> None:
        """Write a (y, x) integer label image under ``<field>/labels/<name>``."""
        labels = np.asarray(labels)
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a 2-D integer image; got {labels.shape} {labels.dtype}")
        field = self.root[field_path(well, field_index)]
        holder = field.require_group("labels")
        known = list(holder.attrs.get("ome", {}).get("labels", []))
        if name in known:  # rewriting: drop it so write_label_metadata lists it once
            known.remove(name)
        holder.attrs["ome"] = {"version": _FMT.version, "labels": known}
        grp = holder.require_group(name)
        arr = grp.create_array("0", shape=labels.shape, chunks=labels.shape, dtype=labels.dtype,
                               compressors=_COMPRESSOR, dimension_names=("y", "x"), overwrite=True)
        arr[:] = labels
        write_multiscales_metadata(
            grp, [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}],
            fmt=_FMT, axes=[{"name": "y", "type": "space"}, {"name": "x", "type": "space"}], name=name)
        write_label_metadata(holder, name, fmt=_FMT, **{"source": {"image": "../../"}})

    def finalize(self, fields: dict[str, list[int]]) -> None:
        """Write well and plate metadata for ``{well: [field indices]}`` (call once, at the end)."""
        wells = sorted(w for w, f in fields.items() if f)
        rows = sorted({split_well(w)[0] for w in wells}, key=lambda r: (len(r), r))
        cols = sorted({split_well(w)[1] for w in wells})
        for w in wells:
            r, c = split_well(w)
            write_well_metadata(self.root.require_group(f"{r}/{c}"),
                                [{"path": str(i), "acquisition": 0} for i in sorted(fields[w])], fmt=_FMT)
        write_plate_metadata(
            self.root, rows=rows, columns=[str(c) for c in cols],
            wells=[f"{split_well(w)[0]}/{split_well(w)[1]}" for w in wells], fmt=_FMT,
            acquisitions=[{"id": 0, "name": self.plate}],
            field_count=max((len(f) for f in fields.values()), default=0), name=self.plate)


def read_field(plate: zarr.Group, path: str) -> np.ndarray:
    """The full-resolution (c, y, x) image of the field at ``path`` (e.g. ``'A/1/0'``)."""
    return plate[f"{path}/0"][:]


def read_labels(plate: zarr.Group, path: str, name: str) -> np.ndarray:
    """The (y, x) label image ``name`` ('nuclei' or 'cells') of a field."""
    return plate[f"{path}/labels/{name}/0"][:]
