"""The field's edge: which nuclei touch it, and crops cut from windows that cross it.

CellProfiler's convention (IdentifyPrimaryObjects, "discard objects touching the border of the
image") is followed: a nucleus with a pixel in the field's first or last row or column is cut by
the field's edge, so its shape, area and intensities are not the cell's; it gets no cells-table
row, no crop and no features. Every other nucleus does, even when its fixed-size crop window
crosses the edge: the part of the window outside the field is filled with :data:`PAD_VALUE`.

Why constant zero and not mirror (reflect) padding: zero is the illumination-corrected image's
black level (no signal), the value a CNN's own zero padding feeds its convolutions, and it adds
no structure; a mirrored border would copy the nucleus and its neighbours into the pad, inventing
cells that are not there.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PAD_VALUE", "edge_labels", "window_inside", "cut_windows"]

#: Value of a crop's pixels that lie outside the field (see the module docstring).
PAD_VALUE = 0


def edge_labels(labels: np.ndarray) -> np.ndarray:
    """Labels with at least one pixel in the first or last row or column of the image.

    Parameters
    ----------
    labels : (Y, X) integer ndarray
        0 is background.

    Returns
    -------
    (K,) int64 ndarray
        Sorted, unique, non-zero.

    Raises
    ------
    ValueError
        If ``labels`` is not 2-D.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (Y, X); got shape {labels.shape}")
    rim = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    ids = np.unique(rim).astype(np.int64)
    return ids[ids > 0]


def window_inside(y0: np.ndarray, x0: np.ndarray, size: int, shape: tuple[int, int]) -> np.ndarray:
    """(N,) bool: whether each ``size`` x ``size`` window with top-left corner ``(y0, x0)`` lies
    wholly inside a field of ``shape`` (Y, X)."""
    y0, x0 = np.asarray(y0), np.asarray(x0)
    return (y0 >= 0) & (x0 >= 0) & (y0 + size <= shape[0]) & (x0 + size <= shape[1])


def cut_windows(image: np.ndarray, y0: np.ndarray, x0: np.ndarray, size: int, *,
                fill: float = PAD_VALUE) -> np.ndarray:
    """Cut ``size`` x ``size`` windows that may cross the image's edge.

    Parameters
    ----------
    image : (C, Y, X) ndarray
    y0, x0 : (N,) integer ndarray
        Top-left corners in image coordinates; may be negative or reach past the image.
    size : int
        Window edge length.
    fill : float
        Value of the window pixels outside the image.

    Returns
    -------
    (N, C, size, size) ndarray of ``image``'s dtype
        Inside the image, exactly the image's pixels; outside, ``fill``. Only the N windows are
        allocated (the image itself is never padded or copied).
    """
    image = np.asarray(image)
    y0, x0 = np.asarray(y0, np.int64), np.asarray(x0, np.int64)
    _, H, W = image.shape
    out = np.full((len(y0), image.shape[0], size, size), fill, dtype=image.dtype)
    for k, (y, x) in enumerate(zip(y0, x0)):
        ya, yb, xa, xb = max(y, 0), min(y + size, H), max(x, 0), min(x + size, W)
        if ya < yb and xa < xb:
            out[k, :, ya - y:yb - y, xa - x:xb - x] = image[:, ya:yb, xa:xb]
    return out
