"""Exact percentiles of integer images from histograms (``np.percentile``'s linear method).

A 16-bit image's percentiles need no partition of its pixels: its cumulative histogram gives
every order statistic at once. Used for display windows and illumination thresholds, where the
same values as ``np.percentile`` are needed several times per plane. Where full histograms
would outnumber the values (many groups, wide ranges), values below 65536 are counted by their
high byte, then, for the buckets holding the wanted ranks only, by their low byte (two compiled
passes).
"""

from __future__ import annotations

import numpy as np
from numba import njit

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
    if n_groups * width > 4 * v.size + 65536:  # full histograms larger than the data
        if width <= 65536:  # high-byte, then low-byte histograms
            g = np.zeros(v.size, np.int64) if groups is None else np.asarray(groups, np.int64).ravel()
            if g.size != v.size:
                raise ValueError(f"groups has {g.size} values for {v.size} values")
            return _byte_percentiles(v.astype(np.uint16, copy=False), g, 1 if groups is None else int(n_groups), qs)
        return _partition_percentiles(v, qs, groups, n_groups)
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


def _partition_percentiles(v: np.ndarray, qs: np.ndarray, groups: np.ndarray | None, n_groups: int) -> np.ndarray:
    """:func:`int_percentiles` by ``np.percentile`` per group (for wide value ranges)."""
    if groups is None:
        return np.percentile(v, qs)[None, :] if v.size else np.full((1, len(qs)), np.nan)
    g = np.asarray(groups).ravel()
    order = np.argsort(g, kind="stable")
    bounds = np.searchsorted(g[order], np.arange(n_groups + 1))
    out = np.full((n_groups, len(qs)), np.nan)
    for k in range(n_groups):
        part = v[order[bounds[k]:bounds[k + 1]]]
        if part.size:
            out[k] = np.percentile(part, qs)
    return out


@njit(cache=True)
def _byte_percentiles(v, g, n_groups, qs):
    """int_percentiles of uint16 ``v`` per group ``g``: high-byte histograms locate each wanted
    rank's bucket, low-byte histograms of those buckets only give the exact value."""
    nq = qs.size
    hist = np.zeros((n_groups, 256), np.int64)
    for i in range(v.size):
        hist[g[i], v[i] >> 8] += 1
    n = hist.sum(axis=1)
    # ranks wanted: for each percentile the two order statistics it interpolates between
    ranks = np.zeros((n_groups, 2 * nq), np.int64)
    for k in range(n_groups):
        for j in range(nq):
            pos = qs[j] / 100.0 * (n[k] - 1)
            lo = np.floor(pos)
            ranks[k, 2 * j] = int(lo)
            ranks[k, 2 * j + 1] = int(min(lo + 1, n[k] - 1))
    bucket = np.full((n_groups, 2 * nq), -1, np.int64)
    rest = np.zeros((n_groups, 2 * nq), np.int64)
    for k in range(n_groups):
        if n[k] == 0:
            continue
        for t in range(2 * nq):
            before = 0
            for b in range(256):
                if before + hist[k, b] > ranks[k, t]:
                    bucket[k, t] = b
                    rest[k, t] = ranks[k, t] - before
                    break
                before += hist[k, b]
    low = np.zeros((n_groups, 2 * nq, 256), np.int64)
    for i in range(v.size):
        k = g[i]
        b = v[i] >> 8
        for t in range(2 * nq):
            if bucket[k, t] == b:
                low[k, t, v[i] & 255] += 1
    out = np.full((n_groups, nq), np.nan)
    for k in range(n_groups):
        if n[k] == 0:
            continue
        vals = np.zeros(2 * nq)
        for t in range(2 * nq):
            before = 0
            for lb in range(256):
                if before + low[k, t, lb] > rest[k, t]:
                    vals[t] = bucket[k, t] * 256 + lb
                    break
                before += low[k, t, lb]
        for j in range(nq):
            pos = qs[j] / 100.0 * (n[k] - 1)
            lo = np.floor(pos)
            out[k, j] = vals[2 * j] + (pos - lo) * (vals[2 * j + 1] - vals[2 * j])
    return out
