"""Object pixels grouped by label, the labels present and bounding boxes: what every compiled
feature kernel (:mod:`.sizeshape`, :mod:`.intensity`, :mod:`.correlation`, :mod:`.texture`) shares.

cp_measure computes its features object by object; cmcl's kernels do each pass over the pixels
once for all objects. They read the pixels of object ``k`` as ``idx[off[k - 1]:off[k]]``
(:func:`segments`), computed once per label image and shared between channels and measurements.

All functions take ``masks`` with contiguous labels ``1..N`` (as cp_measure with
``sanitize=False``) and return arrays of length N indexed by ``label - 1``; loops are compiled
with numba (``cache=True``: compiled once, cached on disk).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["segments", "present_labels", "bounding_boxes"]


@njit(cache=True)
def _segments(flat_labels, n):
    """Counting sort of object pixels by label: ``idx[off[k]:off[k+1]]`` are the flat indices
    (raster order) of label ``k + 1``."""
    counts = np.zeros(n + 1, np.int64)
    for p in range(flat_labels.size):
        lab = flat_labels[p]
        if lab > 0:
            counts[lab] += 1
    off = np.zeros(n + 1, np.int64)
    for k in range(n):
        off[k + 1] = off[k] + counts[k + 1]
    cursor = off[:n].copy()
    idx = np.empty(off[n], np.int64)
    for p in range(flat_labels.size):
        lab = flat_labels[p]
        if lab > 0:
            idx[cursor[lab - 1]] = p
            cursor[lab - 1] += 1
    return idx, off


@njit(cache=True)
def _presence(flat):
    """Smallest label and which labels 0..max occur."""
    low = 0
    top = 0
    for p in range(flat.size):
        low = min(low, flat[p])
        top = max(top, flat[p])
    seen = np.zeros(np.int64(top) + 1, np.bool_)
    if low < 0:
        return low, seen
    for p in range(flat.size):
        seen[flat[p]] = True
    return low, seen


def present_labels(labels: np.ndarray) -> np.ndarray:
    """The labels > 0 present in an integer label image, ascending (int64), in two passes
    without a converted copy of the image.

    Raises
    ------
    ValueError
        On negative labels.
    """
    flat = np.ascontiguousarray(labels).ravel()
    if flat.size == 0:
        return np.zeros(0, np.int64)
    low, seen = _presence(flat)
    if low < 0:
        raise ValueError("label images must not hold negative labels")
    return np.flatnonzero(seen[1:]).astype(np.int64) + 1


def segments(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Object pixels grouped by label, to share between channels and measurements.

    Parameters
    ----------
    masks : (Y, X) integer ndarray
        Labels ``1..N``, 0 background.

    Returns
    -------
    idx : (P,) int64 ndarray
        Flat indices of the P object pixels, label by label, raster order within a label.
    off : (N + 1,) int64 ndarray
        Label ``k`` owns ``idx[off[k - 1]:off[k]]``.
    width : int
        Row length of ``masks`` (to turn flat indices into coordinates).
    """
    masks = np.ascontiguousarray(masks)
    n = int(masks.max()) if masks.size else 0
    flat = masks.ravel()
    if flat.dtype.itemsize > 4:  # compiled for 8-, 16- and 32-bit labels as they are, and int64
        flat = flat.astype(np.int64, copy=False)
    idx, off = _segments(flat, max(n, 0))
    return idx, off, int(masks.shape[1])


@njit(cache=True)
def _bboxes(masks, n):
    box = np.empty((n, 4), np.int64)  # min row, min col, max row + 1, max col + 1
    box[:, 0] = masks.shape[0]
    box[:, 1] = masks.shape[1]
    box[:, 2] = 0
    box[:, 3] = 0
    for r in range(masks.shape[0]):
        for c in range(masks.shape[1]):
            lab = masks[r, c]
            if lab > 0:
                k = lab - 1
                box[k, 0] = min(box[k, 0], r)
                box[k, 1] = min(box[k, 1], c)
                box[k, 2] = max(box[k, 2], r + 1)
                box[k, 3] = max(box[k, 3], c + 1)
    return box


def bounding_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, 4) int64 bounding boxes ``(min row, min col, max row + 1, max col + 1)`` of labels
    ``1..N`` (empty rows for absent labels have max <= min)."""
    masks = np.ascontiguousarray(masks)
    return _bboxes(masks, int(masks.max()) if masks.size else 0)
