"""Single-cell crops: fixed-size, all channels, centred on each nucleus.

Crops are cut from illumination-corrected fields and returned with a per-cell table. A crop whose
box would leave the field is skipped (``border='skip'``, the default) or zero-padded
(``border='pad'``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

__all__ = ["crop_cells", "field_tiles"]


def crop_cells(
    image: np.ndarray,
    nuclei: np.ndarray,
    cells: np.ndarray,
    *,
    crop_size: int = 64,
    border: Literal["skip", "pad"] = "skip",
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
    border : {'skip', 'pad'}
        What to do with nuclei whose crop leaves the field.
    channel_names : tuple of str
        Names of the C channels, for the ``Intensity_Mean_<name>`` columns.

    Returns
    -------
    crops : (N, C, crop_size, crop_size) uint16 ndarray
        Rounded and clipped to the uint16 range.
    table : DataFrame
        N rows: ``Metadata_CellID``, ``Location_Center_Y/X``, ``Crop_CenterY/X`` (a nucleus pixel), ``BBox_Min/MaxY/X``,
        ``AreaShape_NucleusArea``, ``AreaShape_CellArea``, ``Intensity_Mean_<channel>`` (over the
        cell), in label order. The centre pixel of each crop lies at
        ``(crop_size // 2, crop_size // 2)`` and is the rounded nucleus centroid.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, Y, X); got shape {image.shape}")
    if nuclei.shape != image.shape[1:] or cells.shape != image.shape[1:]:
        raise ValueError(f"label shapes {nuclei.shape}, {cells.shape} differ from image {image.shape[1:]}")
    if len(channel_names) != image.shape[0]:
        raise ValueError(f"{len(channel_names)} channel names for {image.shape[0]} channels")
    if border not in ("skip", "pad"):
        raise ValueError(f"border {border!r} is not one of 'skip', 'pad'")
    n = int(nuclei.max())
    columns = ["Metadata_CellID", "Location_Center_Y", "Location_Center_X", "Crop_CenterY", "Crop_CenterX", "BBox_MinY", "BBox_MinX",
               "BBox_MaxY", "BBox_MaxX", "AreaShape_NucleusArea", "AreaShape_CellArea",
               *[f"Intensity_Mean_{c}" for c in channel_names]]
    if n == 0:
        return np.zeros((0, image.shape[0], crop_size, crop_size), np.uint16), pd.DataFrame(columns=columns)
    ids = np.arange(1, n + 1)
    present = np.bincount(nuclei.ravel(), minlength=n + 1)[1:] > 0
    ids = ids[present]
    centroids = np.array(ndi.center_of_mass(np.ones_like(nuclei, dtype=np.uint8), nuclei, ids)).reshape(-1, 2)
    slices = ndi.find_objects(nuclei.astype(np.int64))
    nuc_area = np.bincount(nuclei.ravel(), minlength=n + 1)[ids]
    cell_area = np.bincount(cells.ravel(), minlength=n + 1)[ids]
    means = np.stack([ndi.mean(image[c], cells, ids) for c in range(image.shape[0])], axis=1).reshape(-1, image.shape[0])
    half = crop_size // 2
    H, W = nuclei.shape
    cy = np.rint(centroids[:, 0]).astype(int)
    cx = np.rint(centroids[:, 1]).astype(int)
    # the rounded centroid of a non-convex nucleus can fall outside it: move it to the nearest nucleus pixel
    for i, lab in enumerate(ids):
        if nuclei[cy[i], cx[i]] != lab:
            sl = slices[lab - 1]
            yy, xx = np.nonzero(nuclei[sl] == lab)
            k = np.argmin((yy + sl[0].start - centroids[i, 0]) ** 2 + (xx + sl[1].start - centroids[i, 1]) ** 2)
            cy[i], cx[i] = yy[k] + sl[0].start, xx[k] + sl[1].start
    y0, x0 = cy - half, cx - half
    inside = (y0 >= 0) & (x0 >= 0) & (y0 + crop_size <= H) & (x0 + crop_size <= W)
    keep = inside if border == "skip" else np.ones_like(inside)
    if border == "pad":
        padded = np.pad(image, ((0, 0), (crop_size, crop_size), (crop_size, crop_size)))
        src, oy, ox = padded, crop_size, crop_size
    else:
        src, oy, ox = image, 0, 0
    sel = np.nonzero(keep)[0]
    crops = np.empty((len(sel), image.shape[0], crop_size, crop_size), np.float32)
    for j, i in enumerate(sel):
        crops[j] = src[:, y0[i] + oy:y0[i] + oy + crop_size, x0[i] + ox:x0[i] + ox + crop_size]
    crops = np.clip(np.rint(crops), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    bbox = np.array([[s[0].start, s[1].start, s[0].stop, s[1].stop] for s in (slices[i - 1] for i in ids)]).reshape(-1, 4)
    table = pd.DataFrame({
        "Metadata_CellID": ids[sel].astype(np.int32),
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
