"""Exact percentiles of integer images from histograms (``np.percentile``'s linear method).

A 16-bit image's percentiles need no partition of its pixels: its cumulative histogram gives
every order statistic at once. Used for display windows and illumination thresholds, where the
same values as ``np.percentile`` are needed several times per plane.
"""

from __future__ import annotations

import numpy as np

__all__ = ["int_percentiles"]


def int_percentiles(values: np.ndarray, q, *, groups: np.ndarray | None = None, n_groups: int = 1) -> np.ndarray:
    """Percentiles ``q`` of non-negative integer ``values``, per group.

    Parameters
    ----------
    values : ndarray of unsigned or non-negative integers
        Any shape; flattened.
    q : float or sequence of float
        Percentiles in [0, 100].
    groups : ndarray of int, optional
        Group of each value (same size as ``values``, in ``0..n_groups-1``); default one group.
    n_groups : int
        Number of groups.

    Returns
    -------
    (n_groups, len(q)) float64 ndarray
        Equal to ``np.percentile(values[groups == g], q)`` for each group ``g`` (NaN for an empty
        group).
    """
    v = np.asarray(values).ravel()
    qs = np.atleast_1d(np.asarray(q, np.float64))
    if v.size and v.min() < 0:
        raise ValueError("int_percentiles needs non-negative integers")
    width = int(v.max()) + 1 if v.size else 1
    if groups is None:
        hist = np.bincount(v, minlength=width)[None, :]
    else:
        keys = np.asarray(groups, np.int64).ravel() * width + v
        hist = np.bincount(keys, minlength=n_groups * width).reshape(n_groups, width)
    cum = np.cumsum(hist, axis=1)
    n = cum[:, -1]
    out = np.full((hist.shape[0], len(qs)), np.nan)
    for j, qq in enumerate(qs):
        pos = qq / 100 * (n - 1)
        lo = np.floor(pos)
        hi = np.minimum(lo + 1, n - 1)
        # the k-th smallest value is the first bin whose cumulative count exceeds k
        a = (cum <= lo[:, None]).sum(axis=1)
        b = (cum <= hi[:, None]).sum(axis=1)
        out[:, j] = np.where(n > 0, a + (pos - lo) * (b - a), np.nan)
    return out
