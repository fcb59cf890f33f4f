"""CellProfiler's MeasureObjectIntensity (no edge features) for every object at once.

The same keys and values as cp_measure's ``get_intensity(masks, pixels, edge_measurements=False)``
(numpy-style 'linear' quartiles and the textbook MAD, as cp_measure's default). Each object's
sums (total, moments, squared deviations) come from one pass over its pixels; a cell made of
its nucleus and its cytoplasm combines theirs; the quantiles read O(log m) of the object's m
sorted values (:mod:`.ordering`). Measured on the field in ADU, the pixels get CellProfiler's
scale (``clip(v / 65535, 0, 1)`` in float64) pixel by pixel, with the same float64 operations as
the converted field would see. Equality with cp_measure is tested on real and generated fields
(``tests/pipeline/features/test_kernels.py``).

All functions take ``masks`` with contiguous labels ``1..N`` (as cp_measure with
``sanitize=False``) and return arrays of length N indexed by ``label - 1``; loops are compiled
with numba (``cache=True``: compiled once, cached on disk).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pipeline.features.groups import segments
from pipeline.features.ordering import sorted_values

__all__ = ["intensity"]


@njit(cache=True)
def _scaled(run, t, scale):
    """CellProfiler's pixel value of entry ``t`` of a sorted float32 ``run``: clip(v / scale, 0, 1)
    in float64 (monotone in v, so the values stay sorted)."""
    return min(max(np.float64(run[t]) / scale, 0.0), 1.0)


@njit(cache=True)
def _interp(run, m, frac, scale):
    # numpy.percentile 'linear' (cp_measure's default, legacy=False)
    pos = (m - 1) * frac
    lo = int(pos)
    if lo > m - 1:
        lo = m - 1
    hi = lo + 1
    if hi > m - 1:
        hi = m - 1
    f = pos - lo
    return _scaled(run, lo, scale) * (1.0 - f) + _scaled(run, hi, scale) * f


@njit(cache=True)
def _lower_bound(run, m, value, scale):
    """First entry of the sorted ``run`` whose value is >= ``value`` (numpy.searchsorted)."""
    lo = 0
    hi = m
    while lo < hi:
        mid = (lo + hi) // 2
        if _scaled(run, mid, scale) < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _kth_abs_dev(run, m, split, med, k, scale):
    """The k-th and (k + 1)-th smallest (0-based) of |v - med| over the sorted ``run`` whose first
    ``split`` values are below ``med``: the deviations below the median (read downwards) and those
    above (read upwards) are two sorted sequences, and the k-th of their union is found by a
    binary search on how many come from the first, reading O(log m) values."""
    nl = split
    nr = m - split
    lo = max(0, k + 1 - nr)
    hi = min(k + 1, nl)
    while True:
        i = (lo + hi) // 2  # the k + 1 smallest: i below the median, j above it
        j = k + 1 - i
        if i > 0 and j < nr and med - _scaled(run, split - i, scale) > _scaled(run, split + j, scale) - med:
            hi = i - 1
        elif j > 0 and i < nl and _scaled(run, split + j - 1, scale) - med > med - _scaled(run, split - 1 - i, scale):
            lo = i + 1
        else:
            break
    kth = -np.inf
    if i > 0:
        kth = med - _scaled(run, split - i, scale)
    if j > 0:
        kth = max(kth, _scaled(run, split + j - 1, scale) - med)
    after = np.inf
    if i < nl:
        after = med - _scaled(run, split - 1 - i, scale)
    if j < nr:
        after = min(after, _scaled(run, split + j, scale) - med)
    return kth, after


@njit(cache=True)
def _finish(out, k, run, m, total, ss, lo, hi, sx, sy, sxi, syi, scale):
    """The ten intensity features of object ``k`` from its sums and its sorted ``run``."""
    mean = total / m
    cm_x = sx / m
    cm_y = sy / m
    cmi_x = sxi / total
    cmi_y = syi / total
    med = _interp(run, m, 0.5, scale)
    split = _lower_bound(run, m, med, scale)
    # MAD: the textbook median of |v - median|, interpolated as numpy.percentile does
    pos = (m - 1) * 0.5
    a = int(pos)
    b = min(a + 1, m - 1)
    f = pos - a
    mad_a, mad_b = _kth_abs_dev(run, m, split, med, a, scale)
    if b == a:
        mad_b = mad_a
    out[0, k] = total
    out[1, k] = mean
    out[2, k] = math.sqrt(ss / m)
    out[3, k] = lo
    out[4, k] = hi
    out[5, k] = math.sqrt((cm_x - cmi_x) ** 2 + (cm_y - cmi_y) ** 2)
    out[6, k] = _interp(run, m, 0.25, scale)
    out[7, k] = med
    out[8, k] = mad_a * (1.0 - f) + mad_b * f
    out[9, k] = _interp(run, m, 0.75, scale)


@njit(cache=True)
def _intensity(flat, ordered_keys, idx, off, width, scale, todo):
    """Intensity features (``out``) and sums (``sums``: pixels, total, x, y, x * v, y * v, min,
    max, squared deviations from the mean) of every object ``k`` with ``todo[k]``."""
    n = off.size - 1
    out = np.zeros((10, n), np.float64)
    sums = np.zeros((9, n), np.float64)
    ordered = ordered_keys.view(np.float32)
    longest = 0
    for k in range(n):
        longest = max(longest, off[k + 1] - off[k])
    val_buf = np.empty(longest, np.float64)
    for k in range(n):
        s = off[k]
        m = off[k + 1] - s
        if m == 0 or not todo[k]:
            continue
        total = 0.0
        sx = 0.0
        sy = 0.0
        sxi = 0.0
        syi = 0.0
        lo = np.inf
        hi = -np.inf
        vals = val_buf[:m]
        y = idx[s] // width
        row = y * width
        for t in range(s, s + m):
            p = idx[t]
            while p >= row + width:  # pixels come in raster order: no division per pixel
                y += 1
                row += width
            x = p - row
            v = min(max(flat[p] / scale, 0.0), 1.0)
            vals[t - s] = v
            total += v
            sx += x
            sy += y
            sxi += x * v
            syi += y * v
            lo = min(lo, v)
            hi = max(hi, v)
        mean = total / m
        ss = 0.0
        for t in range(m):
            d = vals[t] - mean
            ss += d * d
        sums[0, k] = m
        sums[1, k] = total
        sums[2, k] = sx
        sums[3, k] = sy
        sums[4, k] = sxi
        sums[5, k] = syi
        sums[6, k] = lo
        sums[7, k] = hi
        sums[8, k] = ss
        _finish(out, k, ordered[s:s + m], m, total, ss, lo, hi, sx, sy, sxi, syi, scale)
    return out, sums


@njit(cache=True)
def _intensity_of_unions(out, sums, parts, first, second, ordered_keys, off, scale):
    """Features and sums of every object made of two parts (``parts[k] >= 0``) from the parts'
    sums: counts, totals and coordinate sums add up, the squared deviations combine as
    ``ss1 + m1 (mean1 - mean)**2 + ss2 + m2 (mean2 - mean)**2``; the quantiles come from the
    object's own (merged) sorted values."""
    ordered = ordered_keys.view(np.float32)
    for k in range(off.size - 1):
        a = parts[k, 0]
        b = parts[k, 1]
        if a < 0 or off[k + 1] == off[k]:
            continue
        acc = np.zeros(9)
        acc[6] = np.inf
        acc[7] = -np.inf
        for part, src in ((a, first), (b, second)):
            if part > 0:
                for r in range(6):
                    acc[r] += src[r, part - 1]
                acc[6] = min(acc[6], src[6, part - 1])
                acc[7] = max(acc[7], src[7, part - 1])
        m = acc[0]
        mean = acc[1] / m
        ss = 0.0
        for part, src in ((a, first), (b, second)):
            if part > 0:
                d = src[1, part - 1] / src[0, part - 1] - mean
                ss += src[8, part - 1] + src[0, part - 1] * d * d
        acc[8] = ss
        sums[:, k] = acc
        s = off[k]
        _finish(out, k, ordered[s:off[k + 1]], off[k + 1] - s, acc[1], ss, acc[6], acc[7], acc[2], acc[3],
                acc[4], acc[5], scale)


_INTENSITY_KEYS = ("Intensity_IntegratedIntensity", "Intensity_MeanIntensity", "Intensity_StdIntensity",
                   "Intensity_MinIntensity", "Intensity_MaxIntensity", "Intensity_MassDisplacement",
                   "Intensity_LowerQuartileIntensity", "Intensity_MedianIntensity", "Intensity_MADIntensity",
                   "Intensity_UpperQuartileIntensity")


def intensity(masks: np.ndarray, image: np.ndarray, *, scale: float = 1.0, groups=None,
              keys: np.ndarray | None = None, ordered: np.ndarray | None = None,
              parts: np.ndarray | None = None, first: np.ndarray | None = None,
              second: np.ndarray | None = None, sums: bool = False) -> dict[str, np.ndarray]:
    """MeasureObjectIntensity without edge features, for every object of ``masks`` at once.

    The pixels measured are ``clip(image / scale, 0, 1)`` in float64, as CellProfiler loads an
    image (``scale=65535`` for uint16 ADU): the results equal cp_measure's
    ``get_intensity(masks, numpy.clip(image.astype(float) / scale, 0, 1), edge_measurements=False)``.

    Parameters
    ----------
    masks : (Y, X) integer ndarray
        Labels ``1..N``.
    image : (Y, X) ndarray
        Intensities; measured as float32 (they sort as 32-bit keys).
    scale : float
        Divisor of ``image`` before clipping to [0, 1].
    groups : tuple, optional
        :func:`~pipeline.features.groups.segments` of ``masks``, when several channels are measured on the same objects.
    keys : (Y * X,) uint32 ndarray, optional
        :func:`~pipeline.features.ordering.sort_keys` of ``image``, when several label images are measured on it.
    ordered : (P,) uint32 ndarray, optional
        :func:`~pipeline.features.ordering.sorted_values` of ``keys`` for these objects (e.g. merged from those of parts).
    parts : (N, 2) int64 ndarray, optional
        :func:`~pipeline.features.ordering.union_parts` of the objects: an object made of two parts whose ``sums`` are
        ``first`` and ``second`` is measured from them (its sums combined, its quantiles from
        ``ordered``) instead of from its pixels; the values agree to rounding.
    first, second : (9, N1), (9, N2) float64 ndarray, optional
        The ``sums`` of the two label images of ``parts``.
    sums : bool
        Also return the objects' sums under ``'sums'`` (for objects made of these).

    Returns
    -------
    dict of str to (N,) float64 ndarray
        The ``Intensity_*`` keys of cp_measure's ``get_intensity`` (not its ``Location_*``).
    """
    masks = np.ascontiguousarray(masks)
    groups = groups if groups is not None else segments(masks)
    image32 = np.ascontiguousarray(image, dtype=np.float32)
    if ordered is None:
        ordered = sorted_values(image32.ravel().view(np.uint32) if keys is None else keys, groups)
    idx, off, width = groups
    todo = np.ones(off.size - 1, np.bool_) if parts is None else parts[:, 0] < 0
    out, acc = _intensity(image32.ravel(), ordered, idx, off, width, float(scale), todo)
    if parts is not None:
        _intensity_of_unions(out, acc, parts, first, second, ordered, off, float(scale))
    result = dict(zip(_INTENSITY_KEYS, out))
    if sums:
        result["sums"] = acc
    return result
