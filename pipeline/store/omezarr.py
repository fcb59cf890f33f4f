"""Write and read OME-Zarr v0.5 HCS plates (zarr v3).

Layout (NGFF HCS): plate group -> row group (``A``) -> column/well group (``3``) -> field image
group (``0``, ``1`` ...) holding one resolution level ``0`` of shape (c, y, x), uint16, one chunk per
channel, LZ4-compressed with bit shuffling (lossless) with a CRC32C checksum per chunk. Labels
(``nuclei``, ``cells``) live in ``<field>/labels``.
Plate and well metadata are written with ``ome_zarr.writer`` (FormatV05); each image group's
metadata is written in one piece (multiscales, omero, image-label), which is what keeps writing
fast. ``ome_zarr`` and napari read the plate.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from pipeline.images.histo import int_percentiles
from pipeline.plates.discovery import split_well

__all__ = ["CHANNEL_COLORS", "PlateWriter", "field_path", "preload_metadata_writer", "read_field", "read_labels",
           "open_plate"]

#: Display colours (hex) of the Cell Painting channels in OMERO metadata.
CHANNEL_COLORS = {"DNA": "0000FF", "ER": "00FF00", "RNA": "FFFF00", "AGP": "FF0000", "Mito": "FF00FF"}
#: NGFF version written (ome-zarr's FormatV05; ome_zarr itself is imported only to write plate
#: and well metadata, so worker processes that write fields do not pay its ~0.5 s import)
_NGFF_VERSION = "0.5"
_AXES_CYX = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
_AXES_YX = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
#: LZ4 (level 5) with bit shuffling: on a real Phenix field (5 x 1080^2) 1.64x smaller against
#: 1.76x for zstd level 1, for a third of its encoding and decoding time (~10 against ~28 ms to
#: encode a field, ~5 against ~16 to decode it, one thread): every field is encoded once and
#: decoded at least once more (segmentation) on the ingestion's critical path.
_COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
#: Every chunk is stored, even one equal to the fill value: zarr otherwise compares each chunk
#: with it before encoding (``write_empty_chunks=False``), which cost more than the encoding
#: itself (~25 of 45 ms per real 5 x 1080^2 field, ~20 ms per field's labels). Reads are the
#: same either way; a field without cells then stores its zero labels chunk.
_WRITE_CONFIG = {"write_empty_chunks": True}
#: Every chunk (image channel, label image) carries a CRC32C checksum: corruption is detected, not decoded.
_COMPRESSORS = (_COMPRESSOR, Crc32cCodec())


def _percentile(plane: np.ndarray, q: float) -> float:
    """``np.percentile(plane, q)`` (linear interpolation); for 8/16-bit images from a histogram,
    the same value ~10x faster than a partition of every pixel."""
    if plane.dtype not in (np.uint8, np.uint16) or plane.size == 0:
        return float(np.percentile(plane, q))
    return float(int_percentiles(plane, q)[0, 0])


def _import_metadata_writer() -> None:
    import ome_zarr.format  # noqa: F401
    import ome_zarr.writer  # noqa: F401


def preload_metadata_writer() -> None:
    """Import ``ome_zarr``'s writer (~1 s: pydantic models) in a background thread, so that
    :meth:`PlateWriter.finalize` finds it loaded: a process that waits for its workers anyway
    starts this before them. Imports are serialised by Python's import lock, so a finalize that
    comes first simply waits for it."""
    threading.Thread(target=_import_metadata_writer, name="cmcl-import-ome-zarr", daemon=True).start()


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
    pixel_size_um : (float, float), optional
        Physical (y, x) pixel size in micrometres: written as the ``scale`` of every image and
        label, with ``"unit": "micrometer"`` on the spatial axes. None: scale 1, no unit.
    stains : dict, optional
        Channel name -> ``{"stain": str, "excitation_wavelength": nm, "emission_wavelength": nm}``
        (any key optional), added to that channel's ``omero`` entry.
    """

    def __init__(self, path: str | os.PathLike, *, plate: str, channels: tuple[str, ...], resume: bool = False,
                 pixel_size_um: tuple[float, float] | None = None, stains: dict[str, dict] | None = None) -> None:
        self.path = Path(path)
        self.plate = plate
        self.channels = tuple(channels)
        self.pixel_size_um = None if pixel_size_um is None else (float(pixel_size_um[0]), float(pixel_size_um[1]))
        self.stains = dict(stains or {})
        self.root = zarr.open_group(str(self.path), mode="a" if resume else "w-", zarr_format=3)

    def _axes(self, axes: list[dict]) -> list[dict]:
        if self.pixel_size_um is None:
            return axes
        return [dict(a, unit="micrometer") if a["type"] == "space" else a for a in axes]

    def _scale(self, ndim: int) -> list[float]:
        if self.pixel_size_um is None:
            return [1.0] * ndim
        return [1.0] * (ndim - 2) + list(self.pixel_size_um)

    def has_field(self, well: str, field_index: int) -> bool:
        """True when the field's image and its multiscales metadata (written last) exist."""
        try:
            grp = self.root[field_path(well, field_index)]
        except KeyError:
            return False
        return isinstance(grp, zarr.Group) and "multiscales" in grp.attrs.get("ome", {})

    def _image_group(self, path: str, data: np.ndarray, axes: list[dict], attrs: dict, *, name: str) -> None:
        """Create an NGFF image group at ``path`` with one level ``0`` holding ``data``.

        Metadata goes into the group's ``zarr.json`` in one write (multiscales written last, so
        a group with multiscales metadata is complete: see :meth:`has_field`).
        """
        parent, _, leaf = path.rpartition("/")
        holder = self.root.require_group(parent) if parent else self.root
        grp = holder.create_group(leaf, overwrite=True)
        grp.create_array("0", data=data, chunks=(1, *data.shape[1:]) if data.ndim == 3 else data.shape,
                         compressors=_COMPRESSORS, dimension_names=tuple(a["name"] for a in axes),
                         config=_WRITE_CONFIG)
        multiscales = [{"name": name, "axes": self._axes(axes), "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": self._scale(data.ndim)}]}]}]
        grp.attrs.put({"ome": {"version": _NGFF_VERSION, **attrs, "multiscales": multiscales}})

    def write_field(self, well: str, field_index: int, image: np.ndarray) -> str:
        """Write a (c, y, x) image losslessly; returns its path within the plate."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[0] != len(self.channels):
            raise ValueError(f"field image must be ({len(self.channels)}, y, x); got {image.shape}")
        path = field_path(well, field_index)
        hi = int(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1
        omero = {"channels": [
            {"label": c, "color": CHANNEL_COLORS.get(c, "FFFFFF"), "active": True,
             "window": {"min": 0, "max": hi, "start": 0, "end": int(min(hi, _percentile(image[k], 99.9) + 1))},
             **self.stains.get(c, {})}
            for k, c in enumerate(self.channels)]}
        self._image_group(path, image, _AXES_CYX, {"omero": omero}, name=f"{self.plate} {well} field {field_index}")
        return path

    def write_labels(self, well: str, field_index: int, labels: dict[str, np.ndarray]) -> None:
        """Write (y, x) integer label images ``{name: labels}`` under ``<field>/labels/<name>``."""
        for name, lab in labels.items():
            lab = np.asarray(lab)
            if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
                raise ValueError(f"labels {name!r} must be a 2-D integer image; got {lab.shape} {lab.dtype}")
        field = self.root[field_path(well, field_index)]
        holder = field.create_group("labels", overwrite=True)
        holder.attrs.put({"ome": {"version": _NGFF_VERSION, "labels": list(labels)}})
        base = f"{field_path(well, field_index)}/labels"
        for name, lab in labels.items():
            self._image_group(f"{base}/{name}", np.asarray(lab), _AXES_YX,
                              {"image-label": {"version": _NGFF_VERSION, "source": {"image": "../../"}}}, name=name)

    def finalize(self, fields: dict[str, list[int]], *, acquisition: dict | None = None) -> None:
        """Write well and plate metadata for ``{well: [field indices]}`` (call once, at the end).

        ``acquisition``: a JSON-able record of where the plate came from (channel map, ignored
        files, vendor metadata), stored as the plate group's ``cmcl`` attribute. With no field
        at all the group only records the plate's name (NGFF plate metadata needs a well).
        """
        from ome_zarr.format import FormatV05
        from ome_zarr.writer import write_plate_metadata, write_well_metadata

        _FMT = FormatV05()
        wells = sorted(w for w, f in fields.items() if f)
        if not wells:  # a plate without a good field: NGFF plate metadata needs a well, so none is written
            self.root.attrs.put({"ome": {"version": _NGFF_VERSION}, "cmcl": {**(acquisition or {}), "plate": self.plate,
                                                                             "fields": 0}})
            return
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
        if acquisition is not None:
            self.root.attrs["cmcl"] = acquisition


def read_field(plate: zarr.Group, path: str) -> np.ndarray:
    """The full-resolution (c, y, x) image of the field at ``path`` (e.g. ``'A/1/0'``)."""
    return plate[f"{path}/0"][:]


def read_labels(plate: zarr.Group, path: str, name: str) -> np.ndarray:
    """The (y, x) label image ``name`` ('nuclei' or 'cells') of a field."""
    return plate[f"{path}/labels/{name}/0"][:]
