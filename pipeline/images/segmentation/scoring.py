"""Scores of a segmentation against ground truth: object matching at an IoU threshold."""

from __future__ import annotations

import numpy as np

__all__ = ["iou_matrix", "match_objects", "f1_at_iou", "labels_from_outlines"]


def _sequential(labels: np.ndarray) -> np.ndarray:
    """Relabel to 0..N keeping 0 as background (label ids need not be consecutive)."""
    values, inverse = np.unique(labels.ravel(), return_inverse=True)
    if values[0] != 0:
        inverse = inverse + 1
    return inverse.astype(np.int64)


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every (true object, predicted object) pair, shape (n_true, n_pred).

    Computed from one joint histogram of the two label images (no per-object loops).
    """
    true = np.asarray(true)
    pred = np.asarray(pred)
    if true.shape != pred.shape:
        raise ValueError(f"label images differ in shape: {true.shape} vs {pred.shape}")
    true = _sequential(true)
    pred = _sequential(pred)
    nt, npd = int(true.max()), int(pred.max())
    joint = np.bincount(true.ravel() * (npd + 1) + pred.ravel(), minlength=(nt + 1) * (npd + 1))
    joint = joint.reshape(nt + 1, npd + 1)
    area_t, area_p = joint.sum(1), joint.sum(0)
    inter = joint[1:, 1:].astype(np.float64)
    union = area_t[1:, None] + area_p[None, 1:] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_objects(true: np.ndarray, pred: np.ndarray, *, iou: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) at IoU > ``iou``.

    With ``iou >= 0.5`` each object can match at most one other, so the greedy count is exact.
    """
    m = iou_matrix(true, pred)
    if m.size == 0:
        return 0, m.shape[1], m.shape[0]
    matched = m > iou
    tp = int(min(matched.any(1).sum(), matched.any(0).sum()))
    return tp, m.shape[1] - tp, m.shape[0] - tp


def f1_at_iou(true: np.ndarray, pred: np.ndarray, *, iou: float = 0.5) -> float:
    """F1 = 2TP / (2TP + FP + FN) of object matching at IoU > ``iou`` (1.0 when both are empty)."""
    tp, fp, fn = match_objects(true, pred, iou=iou)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def labels_from_outlines(outlines: np.ndarray, *, max_area: int | None = None) -> np.ndarray:
    """Fill an outline image (e.g. CellProfiler's ``SaveImages`` of ``OverlayOutlines``) into labels.

    Outline pixels are non-zero; every 4-connected region of non-outline pixels that is not the
    background becomes one object, and outline pixels go to the object they border.

    Parameters
    ----------
    outlines : (Y, X) or (Y, X, C) ndarray
        Non-zero on object outlines (any channel).
    max_area : int, optional
        Regions larger than this are background too (default: only the largest region, and any
        region touching the border along more than a quarter of a side, is background).

    Returns
    -------
    (Y, X) int32 label image, 0 background, 1..N objects.

    Notes
    -----
    For segmentation scores. :func:`pipeline.features.measure.labels_from_outlines` rebuilds
    CellProfiler's objects for feature comparisons (only the largest region is background).
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import expand_labels, relabel_sequential

    line = np.asarray(outlines)
    if line.ndim == 3:
        line = line.any(axis=-1)
    line = line > 0
    regions, n = ndi.label(~line)  # 4-connected: an 8-connected outline closes a region
    if n == 0:
        return np.zeros(line.shape, np.int32)
    sizes = np.bincount(regions.ravel())
    sizes[0] = 0
    background = {int(np.argmax(sizes))}
    side = min(line.shape) // 4
    for edge in (regions[0], regions[-1], regions[:, 0], regions[:, -1]):
        counts = np.bincount(edge, minlength=n + 1)
        background |= set(np.flatnonzero(counts > side).tolist()) - {0}
    if max_area is not None:
        background |= set(np.flatnonzero(sizes > max_area).tolist())
    keep = np.ones(n + 1, bool)
    keep[0] = False
    keep[list(background)] = False
    labels = np.where(keep[regions], regions, 0)
    labels = expand_labels(labels, distance=1.5)  # the outline pixels themselves
    labels[~(line | (labels > 0))] = 0
    return relabel_sequential(labels)[0].astype(np.int32)
