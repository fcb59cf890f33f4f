"""Single-cell crops: fixed-size, all channels, centred on each nucleus.

Crops are cut from illumination-corrected fields and returned with a per-cell table. Nuclei that
touch the field's edge get no crop (CellProfiler's convention, :mod:`pipeline.images.borders`); a crop
whose box crosses the edge is zero-padded and flagged ``Metadata_CropPadded`` (``border='pad'``,
the default) or skipped (``border='skip'``). Writing and reading the crop arrays (and their
codec) is the store's: :mod:`pipeline.store.crops`.
"""

from __future__ import annotations

import numpy as np
from numba import njit
import pandas as pd
from scipy import ndimage as ndi

from pipeline.images.borders import PAD_VALUE, cut_windows, edge_labels, window_inside
from pipeline.images.choices import CROP_BORDERS, CropBorder

__all__ = ["crop_cells", "crop_counts", "field_tiles", "check_field_arrays"]


def check_field_arrays(image, nuclei, cells, channel_names) -> np.ndarray:
    """Check one field's image ``(C, Y, X)`` against its nuclei and cell labels ``(Y, X)`` and its
    ``C`` channel names; return the image as an array. Shared by crops and per-cell features.

    Raises
    ------
    ValueError
        On a non-3-D image, label shapes that differ from the image's, or a wrong number of names.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, Y, X); got shape {image.shape}")
    if nuclei.shape != image.shape[1:] or cells.shape != image.shape[1:]:
        raise ValueError(f"label shapes {nuclei.shape}, {cells.shape} differ from image {image.shape[1:]}")
    if len(channel_names) != image.shape[0]:
        raise ValueError(f"{len(channel_names)} channel names for {image.shape[0]} channels")
    return image


@njit(cache=True)
def _label_sums(nuclei, cells, image, n, width):
    nuc_count = np.zeros(n + 1, np.int64)
    cell_count = np.zeros(n + 1, np.int64)
    sum_y = np.zeros(n + 1, np.float64)
    sum_x = np.zeros(n + 1, np.float64)
    sums = np.zeros((image.shape[0], n + 1), np.float64)
    for p in range(nuclei.size):
        a = nuclei[p]
        if a > 0:
            nuc_count[a] += 1
            sum_y[a] += p // width
            sum_x[a] += p % width
        b = cells[p]
        if b > 0:
            cell_count[b] += 1
            for c in range(image.shape[0]):
                sums[c, b] += image[c, p]
    return nuc_count, sum_y, sum_x, cell_count, sums


def crop_cells(
    image: np.ndarray,
    nuclei: np.ndarray,
    cells: np.ndarray,
    *,
    crop_size: int = 64,
    border: CropBorder = "pad",
    exclude_edge: bool = True,
    channel_names: tuple[str, ...] = ("DNA", "ER", "RNA", "AGP", "Mito"),
) -> tuple[np.ndarray, pd.DataFrame]:
    """Cut one ``crop_size`` x ``crop_size`` crop per nucleus, centred on its centroid.

    Parameters
    ----------
    image : (C, Y, X) ndarray
        Illumination-corrected field.
    nuclei, cells : (Y, X) integer ndarray
        Label images; cell ``k`` belongs to nucleus ``k``.
    crop_size : int
        Edge length in pixels.
    border : {'pad', 'skip'}
        What to do with a nucleus whose crop box crosses the field's edge: ``'pad'`` (default)
        cuts it anyway, with the pixels outside the field set to
        :data:`pipeline.images.borders.PAD_VALUE` (0: no signal; mirror padding would invent cells),
        and flags its row ``Metadata_CropPadded``; ``'skip'`` leaves the nucleus out.
    exclude_edge : bool
        Leave out nuclei with a pixel in the field's first or last row or column (default, as
        CellProfiler discards objects touching the image border).
    channel_names : tuple of str
        Names of the C channels, for the ``Intensity_Mean_<name>`` columns.

    Returns
    -------
    crops : (N, C, crop_size, crop_size) uint16 ndarray
        Rounded and clipped to the uint16 range. A crop inside the field is exactly the field's
        (rounded) pixels; a padded one is those pixels inside the field and 0 outside.
    table : DataFrame
        N rows: ``Metadata_CellID``, ``Metadata_CropPadded`` (bool), ``Location_Center_Y/X``,
        ``Crop_CenterY/X`` (a nucleus pixel), ``BBox_Min/MaxY/X``, ``AreaShape_NucleusArea``,
        ``AreaShape_CellArea``, ``Intensity_Mean_<channel>`` (over the cell, measured on the
        whole field: padding never changes them), in label order. The centre pixel of each crop
        lies at ``(crop_size // 2, crop_size // 2)`` and is the rounded nucleus centroid.
    """
    image = check_field_arrays(image, nuclei, cells, channel_names)
    if border not in CROP_BORDERS:
        raise ValueError(f"border {border!r} is not one of {', '.join(map(repr, CROP_BORDERS))}")
    n = int(nuclei.max())
    columns = ["Metadata_CellID", "Metadata_CropPadded", "Location_Center_Y", "Location_Center_X", "Crop_CenterY",
               "Crop_CenterX", "BBox_MinY", "BBox_MinX", "BBox_MaxY", "BBox_MaxX", "AreaShape_NucleusArea", "AreaShape_CellArea",
               *[f"Intensity_Mean_{c}" for c in channel_names]]
    if n == 0:
        return np.zeros((0, image.shape[0], crop_size, crop_size), np.uint16), pd.DataFrame(columns=columns)
    # counts, centroids and mean intensities in one compiled pass over the pixels (the same sums,
    # in the same raster order, as weighted bincounts; ~10x cheaper than one bincount per quantity)
    nuc_count, sum_y, sum_x, cell_count, sums = _label_sums(np.ascontiguousarray(nuclei).ravel(),
                                                            np.ascontiguousarray(cells).ravel(),
                                                            np.ascontiguousarray(image).reshape(image.shape[0], -1),
                                                            max(n, int(cells.max())), nuclei.shape[1])
    ids = np.nonzero(nuc_count[1:])[0] + 1
    H, W = nuclei.shape
    nuc_area = nuc_count[ids]
    centroids = np.stack([sum_y[ids] / nuc_area, sum_x[ids] / nuc_area], axis=1).reshape(-1, 2)
    slices = ndi.find_objects(nuclei)
    cell_area = cell_count[ids]
    means = (sums[:, ids] / np.maximum(cell_area, 1)).T.reshape(-1, image.shape[0])
    means[cell_area == 0] = np.nan
    half = crop_size // 2
    cy = np.rint(centroids[:, 0]).astype(int)
    cx = np.rint(centroids[:, 1]).astype(int)
    # the rounded centroid of a non-convex nucleus can fall outside it: move it to the nearest nucleus pixel
    for i in np.nonzero(nuclei[cy, cx] != ids)[0]:
        lab = ids[i]
        sl = slices[lab - 1]
        yy_, xx_ = np.nonzero(nuclei[sl] == lab)
        k = np.argmin((yy_ + sl[0].start - centroids[i, 0]) ** 2 + (xx_ + sl[1].start - centroids[i, 1]) ** 2)
        cy[i], cx[i] = yy_[k] + sl[0].start, xx_[k] + sl[1].start
    y0, x0 = cy - half, cx - half
    inside = window_inside(y0, x0, crop_size, (H, W))
    keep = inside if border == "skip" else np.ones_like(inside)
    if exclude_edge:
        keep &= ~np.isin(ids, edge_labels(nuclei))
    sel = np.nonzero(keep)[0]
    crops = _cut(image, y0[sel], x0[sel], inside[sel], crop_size)
    bbox = np.array([[s[0].start, s[1].start, s[0].stop, s[1].stop] for s in (slices[i - 1] for i in ids)]).reshape(-1, 4)
    table = pd.DataFrame({
        "Metadata_CellID": ids[sel].astype(np.int32),
        "Metadata_CropPadded": ~inside[sel],
        "Location_Center_Y": centroids[sel, 0].astype(np.float32),
        "Location_Center_X": centroids[sel, 1].astype(np.float32),
        "Crop_CenterY": cy[sel].astype(np.int32), "Crop_CenterX": cx[sel].astype(np.int32),
        "BBox_MinY": bbox[sel, 0].astype(np.int32), "BBox_MinX": bbox[sel, 1].astype(np.int32),
        "BBox_MaxY": bbox[sel, 2].astype(np.int32), "BBox_MaxX": bbox[sel, 3].astype(np.int32),
        "AreaShape_NucleusArea": nuc_area[sel].astype(np.int32),
        "AreaShape_CellArea": cell_area[sel].astype(np.int32),
        **{f"Intensity_Mean_{c}": means[sel, k].astype(np.float32) for k, c in enumerate(channel_names)},
    })
    return crops, table


def crop_counts(nuclei: np.ndarray, table: pd.DataFrame) -> dict[str, int]:
    """Why a field's nuclei have or lack a cells-table row, for the fields (QC) table.

    Parameters
    ----------
    nuclei : (Y, X) integer ndarray
        The field's nucleus labels, 1..N.
    table : DataFrame
        What :func:`crop_cells` returned for them (``Metadata_CellID``, ``Metadata_CropPadded``).

    Returns
    -------
    dict
        ``Count_NucleiTouchingEdge`` (nuclei touching the field's edge, left out),
        ``Count_CropsSkipped`` (other nuclei left out because their crop crossed the edge:
        ``border='skip'`` only) and ``Count_CropsPadded`` (rows whose crop was padded); with
        ``Count_Crops = len(table)`` they add up to N.
    """
    edge = edge_labels(nuclei)
    ids = table["Metadata_CellID"].to_numpy()
    n_edge = len(edge) - int(np.isin(ids, edge).sum())
    return {"Count_NucleiTouchingEdge": n_edge,
            "Count_CropsSkipped": int(nuclei.max()) - len(table) - n_edge if nuclei.size else 0,
            "Count_CropsPadded": int(table["Metadata_CropPadded"].sum())}


def _cut(image: np.ndarray, y0: np.ndarray, x0: np.ndarray, inside: np.ndarray, size: int) -> np.ndarray:
    """(N, C, size, size) uint16 crops at corners ``(y0, x0)``: the ``inside`` ones gathered from a
    sliding-window view of the field (one copy of their pixels), the others cut with zero padding
    (:func:`pipeline.images.borders.cut_windows`). Rounding and clipping commute with cutting, so they
    are done on whichever is smaller: the field (dense fields, whose crops overlap) or the crops."""
    H, W = image.shape[1:]
    to_uint16 = lambda a: np.clip(np.rint(a), 0, np.iinfo(np.uint16).max).astype(np.uint16)  # noqa: E731
    round_first = len(y0) * size * size > H * W
    src = to_uint16(image) if round_first else image
    crops = np.empty((len(y0), image.shape[0], size, size), src.dtype)
    within = np.nonzero(inside)[0]
    if within.size:  # (a field smaller than one crop has no window inside it)
        windows = np.lib.stride_tricks.sliding_window_view(src, (size, size), axis=(1, 2))
        crops[within] = windows[:, y0[within], x0[within]].transpose(1, 0, 2, 3)
    crossing = np.nonzero(~inside)[0]
    if crossing.size:
        crops[crossing] = cut_windows(src, y0[crossing], x0[crossing], size, fill=PAD_VALUE)
    return crops if round_first else to_uint16(crops)


def field_tiles(image: np.ndarray, *, tile_size: int = 128) -> np.ndarray:
    """Non-overlapping ``tile_size`` tiles on a regular grid (remainders dropped).

    Returns
    -------
    (T, C, tile_size, tile_size) ndarray of ``image``'s dtype, row-major tile order.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, Y, X); got shape {image.shape}")
    c, h, w = image.shape
    ny, nx = h // tile_size, w // tile_size
    if ny == 0 or nx == 0:
        raise ValueError(f"field {h}x{w} is smaller than tile_size {tile_size}")
    t = image[:, : ny * tile_size, : nx * tile_size].reshape(c, ny, tile_size, nx, tile_size)
    return t.transpose(1, 3, 0, 2, 4).reshape(ny * nx, c, tile_size, tile_size)
