"""CellProfiler's per-object size/shape, intensity and Pearson measurements, all objects at once.

The default feature set (:mod:`pipeline.features.measure`) measures three compartments in five channels
on every field of a plate, so its cost is paid ~3,500 times per JUMP plate. cp_measure computes
these features object by object (skimage ``regionprops``, a convex hull, a perimeter convolution
and an EDT per object, a second sort per object for the MAD, a Python loop per object for Pearson).
The functions here return **the same values under the same keys** as cp_measure's

* ``get_sizeshape(masks, pixels, calculate_advanced=False, new_features=False)``
  (:func:`sizeshape`; CellProfiler 4's MeasureObjectSizeShape without Zernike/Feret),
* ``get_intensity(masks, pixels, edge_measurements=False)`` (:func:`intensity`, numpy-style
  'linear' quartiles and the textbook MAD, as cp_measure's default),
* ``get_correlation_pearson(pixels_1, pixels_2, masks)`` (:func:`pearson`), and
* ``get_texture(masks, pixels, scale)`` (:func:`texture`, as cp_measure's numba kernel computes it),

with each pass over the pixels done once for all objects in compiled loops (numba, cached on
disk). The moment-derived shape features use cp_measure's own inertia and axis formulas on
moments summed per object in its bounding box (per row, then over rows, as cp_measure). Equality
with cp_measure is tested on real and generated fields (``tests/pipeline/test_fastmeasure.py``).

Intensity needs each object's values in order (quartiles, median, MAD): every object's float32
bit patterns are radix-sorted on their own (:func:`sorted_values`, in cache), a cell made of its
nucleus and its cytoplasm gets its order by merging theirs (:func:`union_parts`) and its sums
(total, moments, squared deviations) by combining theirs, and the quartiles and the MAD then
read O(log m) of the m sorted values. Measured on the field in ADU,
intensity, texture and Pearson apply CellProfiler's scale (``clip(v / 65535, 0, 1)`` in float64)
pixel by pixel, with the same float64 operations as the converted field would see.

All functions take ``masks`` with contiguous labels ``1..N`` (as cp_measure with
``sanitize=False``) and return arrays of length N indexed by ``label - 1``.
"""

from __future__ import annotations

import math

import numpy as np
from cp_measure.core.numba._texture import DELTAS_2D
from numba import njit

__all__ = ["sizeshape", "intensity", "sort_keys", "sorted_values", "union_parts", "pearson", "texture", "gray_levels",
           "neighbours", "segments", "bounding_boxes", "present_labels"]


# ---- pixel grouping ------------------------------------------------------------------------------

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


# ---- intensity -----------------------------------------------------------------------------------

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
def _sort_run(run, buf, count):
    """Sort ``run`` (uint32) in place: insertion sort when short, else a stable LSD radix sort
    in 8-bit digits (passes whose digit is the same for every key are skipped); ``buf`` and
    ``count`` ((4, 256) int64) are scratch space."""
    m = run.size
    if m <= 32:
        for i in range(1, m):
            v = run[i]
            j = i - 1
            while j >= 0 and run[j] > v:
                run[j + 1] = run[j]
                j -= 1
            run[j + 1] = v
        return
    count[:] = 0
    for t in range(m):
        v = run[t]
        count[0, v & 255] += 1
        count[1, (v >> 8) & 255] += 1
        count[2, (v >> 16) & 255] += 1
        count[3, v >> 24] += 1
    src = run
    dst = buf[:m]
    moves = 0
    for d in range(4):
        shift = 8 * d
        if count[d, (src[0] >> shift) & 255] == m:  # one digit for every key: nothing to move
            continue
        acc = 0
        for digit in range(256):
            c = count[d, digit]
            count[d, digit] = acc
            acc += c
        for t in range(m):
            digit = (src[t] >> shift) & 255
            dst[count[d, digit]] = src[t]
            count[d, digit] += 1
        src, dst = dst, src
        moves += 1
    if moves % 2:
        run[:] = src


@njit(cache=True)
def _sorted_runs(bits, idx, off, todo, out):
    """``out[off[k]:off[k+1]]``: the sort keys (:func:`sort_keys`) of the float32 bit patterns
    ``bits[idx[off[k]:off[k+1]]]``, ascending, for every object ``k`` with ``todo[k]``: each
    object's keys gathered and sorted on their own (they fit in cache)."""
    n = off.size - 1
    longest = 0
    for k in range(n):
        longest = max(longest, off[k + 1] - off[k])
    buf = np.empty(longest, np.uint32)
    count = np.empty((4, 256), np.int64)
    for k in range(n):
        if not todo[k]:
            continue
        s = off[k]
        e = off[k + 1]
        for t in range(s, e):
            u = bits[idx[t]]
            # max(v, 0) + 0: negative values (sign bit, not NaN) and -0.0 sort as +0.0; sort keys
            # are left as they are
            out[t] = 0 if np.uint32(0x80000000) <= u <= np.uint32(0xFF800000) else u
        _sort_run(out[s:e], buf, count)
    return out


@njit(cache=True)
def _merge_runs(parts, off, first, first_off, second, second_off, out):
    """``out[off[k]:off[k+1]]``: the merge of the sorted runs ``first`` of object ``parts[k, 0]``
    and ``second`` of object ``parts[k, 1]`` (labels, 0: no part) for every ``k`` with
    ``parts[k, 0] >= 0``."""
    n = off.size - 1
    for k in range(n):
        if parts[k, 0] < 0:
            continue
        i = j = e1 = e2 = 0
        if parts[k, 0] > 0:
            i = first_off[parts[k, 0] - 1]
            e1 = first_off[parts[k, 0]]
        if parts[k, 1] > 0:
            j = second_off[parts[k, 1] - 1]
            e2 = second_off[parts[k, 1]]
        for t in range(off[k], off[k + 1]):
            if j >= e2 or (i < e1 and first[i] <= second[j]):
                out[t] = first[i]
                i += 1
            else:
                out[t] = second[j]
                j += 1
    return out


@njit(cache=True)
def _union_parts(whole, first, second, n_whole, n_first, n_second):
    """For each object of ``whole``: the one object of ``first`` and the one of ``second`` whose
    pixels together are exactly its pixels (0 where it has no pixel of that image), or -1s when
    its pixels are not such a union (``first`` and ``second`` must not overlap)."""
    parts = np.zeros((n_whole, 2), np.int64)
    inside = np.zeros((n_whole, 2), np.int64)  # pixels of the object that are in first / second
    size1 = np.zeros(n_first + 1, np.int64)
    size2 = np.zeros(n_second + 1, np.int64)
    bad = np.zeros(n_whole + 1, np.bool_)
    for p in range(whole.size):
        w = whole[p]
        a = first[p]
        b = second[p]
        size1[a] += 1
        size2[b] += 1
        if w == 0:
            continue
        if a > 0 and b > 0:
            bad[w] = True
        elif a > 0 or b > 0:
            side = 0 if a > 0 else 1
            lab = a if a > 0 else b
            if parts[w - 1, side] == 0:
                parts[w - 1, side] = lab
            elif parts[w - 1, side] != lab:
                bad[w] = True
            inside[w - 1, side] += 1
        else:
            bad[w] = True  # a pixel in neither part
    for k in range(n_whole):
        a = parts[k, 0]
        b = parts[k, 1]
        if bad[k + 1] or (a > 0 and inside[k, 0] != size1[a]) or (b > 0 and inside[k, 1] != size2[b]):
            parts[k, 0] = -1
            parts[k, 1] = -1
    return parts


def union_parts(whole: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Which object of ``first`` and which of ``second`` make up each object of ``whole``.

    For the default compartments, a cell is its nucleus plus its cytoplasm when the nucleus lies
    entirely inside it: its sorted pixel values are then the merge of theirs
    (:func:`sorted_values`' ``parts``).

    Parameters
    ----------
    whole, first, second : (Y, X) integer ndarray
        Labels ``1..N`` each; ``first`` and ``second`` do not overlap (e.g. nuclei and cytoplasm).

    Returns
    -------
    (N, 2) int64 ndarray
        Row ``k - 1``: the labels in ``first`` and ``second`` of the two objects whose pixels
        together are exactly those of object ``k`` of ``whole`` (0 for a part it has no pixel
        of), or ``(-1, -1)`` when there are none such (two nuclei in one cell, a nucleus
        reaching out of its cell).
    """
    whole, first, second = (np.ascontiguousarray(x).ravel() for x in (whole, first, second))
    top = [int(x.max()) if x.size else 0 for x in (whole, first, second)]
    return _union_parts(whole, first, second, *top)


def sorted_values(bits: np.ndarray, groups, *, parts: np.ndarray | None = None,
                  first=None, second=None) -> np.ndarray:
    """Each object's :func:`sort_keys` in ascending order, object after object.

    Parameters
    ----------
    bits : (Y * X,) uint32 ndarray
        The channel's float32 values viewed as uint32 (``image.ravel().view(numpy.uint32)``),
        or its :func:`sort_keys`.
    groups : tuple
        :func:`segments` of the objects.
    parts : (N, 2) int64 ndarray, optional
        :func:`union_parts` of the objects in two other label images, whose sorted values are
        ``first`` and ``second`` (each a ``(values, groups)`` pair): an object made of parts is
        a linear merge of their runs instead of a sort; the others are sorted.

    Returns
    -------
    (P,) uint32 ndarray
        ``out[off[k - 1]:off[k]]``: the keys of object ``k``'s pixels, ascending.
    """
    idx, off, _ = groups
    out = np.empty(idx.size, np.uint32)
    todo = np.ones(off.size - 1, np.bool_)
    if parts is not None:
        (v1, (_, off1, _)), (v2, (_, off2, _)) = first, second
        _merge_runs(parts, off, v1, off1, v2, off2, out)
        todo = parts[:, 0] < 0
        if not todo.any():
            return out
    return _sorted_runs(bits, idx, off, todo, out)


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


def sort_keys(image: np.ndarray) -> np.ndarray:
    """(Y * X,) uint32 sort keys of a field: the bit patterns of ``max(image, 0)`` as float32
    (non-negative float32 values order like their bit patterns; negative values clip to 0 in
    CellProfiler's scale anyway). Computed once per channel when several label images are
    measured on it (:func:`intensity`'s ``keys``)."""
    image32 = np.ascontiguousarray(image, dtype=np.float32)
    return (np.maximum(image32, np.float32(0)) + np.float32(0)).ravel().view(np.uint32)  # -0.0 -> +0.0


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
        :func:`segments` of ``masks``, when several channels are measured on the same objects.
    keys : (Y * X,) uint32 ndarray, optional
        :func:`sort_keys` of ``image``, when several label images are measured on it.
    ordered : (P,) uint32 ndarray, optional
        :func:`sorted_values` of ``keys`` for these objects (e.g. merged from those of parts).
    parts : (N, 2) int64 ndarray, optional
        :func:`union_parts` of the objects: an object made of two parts whose ``sums`` are
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


# ---- Pearson correlation -------------------------------------------------------------------------

@njit(cache=True)
def _pearson(first, second, idx, off, scale):
    """Pearson correlation and slope per object; values ``clip(v / scale, 0, 1)`` when ``scale``
    > 0, else as they are."""
    n = off.size - 1
    out = np.zeros((2, n), np.float64)
    longest = 0
    for k in range(n):
        longest = max(longest, off[k + 1] - off[k])
    buf_a = np.empty(longest, np.float64)
    buf_b = np.empty(longest, np.float64)
    for k in range(n):
        s = off[k]
        m = off[k + 1] - s
        if m == 0:
            continue
        if m < 2:
            out[0, k] = np.nan
            out[1, k] = np.nan
            continue
        ma = 0.0
        mb = 0.0
        for t in range(m):
            va = np.float64(first[idx[s + t]])
            vb = np.float64(second[idx[s + t]])
            if scale > 0:
                va = min(max(va / scale, 0.0), 1.0)
                vb = min(max(vb / scale, 0.0), 1.0)
            buf_a[t] = va
            buf_b[t] = vb
            ma += va
            mb += vb
        ma /= m
        mb /= m
        saa = 0.0
        sbb = 0.0
        sab = 0.0
        for t in range(m):
            da = buf_a[t] - ma
            db = buf_b[t] - mb
            saa += da * da
            sbb += db * db
            sab += da * db
        # numpy.corrcoef (clipped to [-1, 1]) and cov / var(ddof=1), as cp_measure
        denom = math.sqrt((saa / (m - 1)) * (sbb / (m - 1)))
        r = (sab / (m - 1)) / denom if denom > 0 else np.nan
        if r > 1.0:
            r = 1.0
        elif r < -1.0:
            r = -1.0
        out[0, k] = r
        out[1, k] = (sab / (m - 1)) / (saa / (m - 1)) if saa > 0 else np.nan
    return out


def pearson(pixels_1: np.ndarray, pixels_2: np.ndarray, masks: np.ndarray, *, groups=None,
            scale: float | None = None) -> dict[str, np.ndarray]:
    """Per-object Pearson correlation and regression slope of ``pixels_2`` on ``pixels_1``.

    Parameters
    ----------
    pixels_1, pixels_2 : (Y, X) ndarray
        Intensities.
    masks : (Y, X) integer ndarray
        Labels ``1..N``.
    groups : tuple, optional
        :func:`segments` of ``masks``.
    scale : float, optional
        When given, the pixels are measured as ``clip(pixels / scale, 0, 1)`` in float64 (as
        CellProfiler loads an image; ``scale=65535`` for uint16 ADU), without a converted copy
        of the images.

    Returns
    -------
    dict
        ``Correlation_Pearson`` and ``Correlation_Slope``, (N,) float64 each; NaN for an object
        of one pixel or of constant intensity (where numpy's ``corrcoef`` gives NaN).
    """
    idx, off, _ = groups if groups is not None else segments(masks)
    dtype = np.float64 if scale is None else None
    a = np.ascontiguousarray(pixels_1, dtype=dtype).ravel()
    b = np.ascontiguousarray(pixels_2, dtype=dtype).ravel()
    if scale is not None and scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    out = _pearson(a, b, idx, off, 0.0 if scale is None else float(scale))
    return {"Correlation_Pearson": out[0], "Correlation_Slope": out[1]}


# ---- size and shape ------------------------------------------------------------------------------

_PERIMETER_WEIGHTS = np.zeros(50, np.float64)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2.0)
_PERIMETER_WEIGHTS[[13, 23]] = (1.0 + math.sqrt(2.0)) / 2.0
#: skimage's Euler-number coefficients of the 16 2x2 configurations, 8-connectivity
_EULER8 = np.array([0, 0, 0, 0, 0, 0, -1, 0, 1, 0, 0, 0, 0, 0, -1, 0], np.int64)


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


@njit(cache=True)
def _perimeter(obj, weights):
    """skimage.measure.perimeter(obj, 4): 4-connected border pixels, weighted by how their
    neighbours in the border continue (Benkrid & Crookes)."""
    h, w = obj.shape
    border = np.zeros((h + 2, w + 2), np.uint8)
    for r in range(h):
        for c in range(w):
            if obj[r, c] and not (r > 0 and obj[r - 1, c] and r < h - 1 and obj[r + 1, c]
                                  and c > 0 and obj[r, c - 1] and c < w - 1 and obj[r, c + 1]):
                border[r + 1, c + 1] = 1
    total = 0.0
    for r in range(1, h + 1):
        for c in range(1, w + 1):
            if border[r, c]:
                code = 1 + 2 * (border[r - 1, c] + border[r + 1, c] + border[r, c - 1] + border[r, c + 1]) \
                    + 10 * (border[r - 1, c - 1] + border[r - 1, c + 1] + border[r + 1, c - 1] + border[r + 1, c + 1])
                total += weights[code]
    return total


@njit(cache=True)
def _euler8(obj, coefs):
    """skimage.measure.euler_number(obj, connectivity=2): sum of coefficients of the 2x2
    configurations of the zero-padded object."""
    h, w = obj.shape
    total = 0
    for r in range(h + 1):  # window rows r-1, r of the object (padded by one on each side)
        for c in range(w + 1):
            a = 1 if (r >= 1 and c >= 1 and obj[r - 1, c - 1]) else 0
            b = 1 if (r >= 1 and c < w and obj[r - 1, c]) else 0
            d = 1 if (r < h and c >= 1 and obj[r, c - 1]) else 0
            e = 1 if (r < h and c < w and obj[r, c]) else 0
            # ndimage.convolve of [[0,0,0],[0,1,4],[0,2,8]] centred on (r, c): the kernel is
            # flipped, so the pixel itself weighs 1, its left neighbour 4, the one above 2, and
            # the one above-left 8
            total += coefs[e + 4 * d + 2 * b + 8 * a]
    return total


@njit(cache=True)
def _cross(o0, o1, a0, a1, b0, b1):
    return (a0 - o0) * (b1 - o1) - (a1 - o1) * (b0 - o0)


@njit(cache=True)
def _convex_area(obj):
    """Number of pixel centres inside or on the convex hull of the object's pixel-edge midpoints:
    skimage's ``convex_hull_image(obj)`` summed (``offset_coordinates=True``, borders included).
    Exact: coordinates are doubled to integers."""
    h, w = obj.shape
    # candidate points: the four edge midpoints of each row's first and last pixel, doubled
    pts = np.empty((8 * h, 2), np.int64)
    npts = 0
    for r in range(h):
        first = -1
        last = -1
        for c in range(w):
            if obj[r, c]:
                if first < 0:
                    first = c
                last = c
        if first < 0:
            continue
        for c in (first, last):
            pts[npts, 0] = 2 * r - 1
            pts[npts, 1] = 2 * c
            pts[npts + 1, 0] = 2 * r + 1
            pts[npts + 1, 1] = 2 * c
            pts[npts + 2, 0] = 2 * r
            pts[npts + 2, 1] = 2 * c - 1
            pts[npts + 3, 0] = 2 * r
            pts[npts + 3, 1] = 2 * c + 1
            npts += 4
    pts = pts[:npts]
    # Andrew's monotone chain, points sorted by (row, col)
    order = np.argsort(pts[:, 0] * (4 * w + 8) + pts[:, 1])
    p = pts[order]
    hull = np.empty((2 * npts + 1, 2), np.int64)
    k = 0
    for i in range(npts):
        while k >= 2 and _cross(hull[k - 2, 0], hull[k - 2, 1], hull[k - 1, 0], hull[k - 1, 1], p[i, 0], p[i, 1]) <= 0:
            k -= 1
        hull[k] = p[i]
        k += 1
    lower = k + 1
    for i in range(npts - 2, -1, -1):
        while k >= lower and _cross(hull[k - 2, 0], hull[k - 2, 1], hull[k - 1, 0], hull[k - 1, 1], p[i, 0], p[i, 1]) <= 0:
            k -= 1
        hull[k] = p[i]
        k += 1
    nv = k - 1  # the last point repeats the first
    # for every pixel row, the hull's extent along the row (closed): count the integer columns
    count = 0
    for r in range(h):
        yy = 2 * r
        # x range of the polygon at doubled row yy: min and max over edge crossings, as fractions
        lo_num = 0
        lo_den = 0
        hi_num = 0
        hi_den = 0
        found = False
        for e in range(nv):
            y0 = hull[e, 0]
            x0 = hull[e, 1]
            y1 = hull[e + 1, 0]
            x1 = hull[e + 1, 1]
            if (yy < min(y0, y1)) or (yy > max(y0, y1)):
                continue
            if y0 == y1:  # horizontal edge on this row: both ends
                cands = ((x0, 1), (x1, 1))
            else:
                # x = x0 + (x1 - x0) * (yy - y0) / (y1 - y0), as num / den with den > 0
                num = x0 * (y1 - y0) + (x1 - x0) * (yy - y0)
                den = y1 - y0
                if den < 0:
                    num = -num
                    den = -den
                cands = ((num, den), (num, den))
            for cnum, cden in cands:
                if not found:
                    lo_num, lo_den, hi_num, hi_den = cnum, cden, cnum, cden
                    found = True
                else:
                    if cnum * lo_den < lo_num * cden:
                        lo_num, lo_den = cnum, cden
                    if cnum * hi_den > hi_num * cden:
                        hi_num, hi_den = cnum, cden
        if not found:
            continue
        # doubled x in [lo, hi]: pixel columns c with lo <= 2c <= hi
        c_lo = -(-lo_num // (2 * lo_den))  # ceil(lo / 2); denominators are > 0
        c_hi = hi_num // (2 * hi_den)  # floor(hi / 2)
        if c_hi >= c_lo:
            count += c_hi - c_lo + 1
    return count


@njit(cache=True)
def _edt_radii(obj):
    """Max, mean and median of the exact Euclidean distance from each object pixel to the nearest
    non-object pixel of the zero-padded crop (scipy.ndimage.distance_transform_edt): squared
    distances along each column by two running scans, then along each row by the
    Felzenszwalb-Huttenlocher lower envelope of parabolas; the median from a histogram of the
    (integer) squared distances."""
    h, w = obj.shape
    H = h + 2
    W = w + 2
    g = np.zeros((H, W), np.int64)  # rows 0 and H - 1, columns 0 and W - 1: the padding
    for r in range(1, h + 1):  # down the columns: rows to the nearest background above
        for c in range(1, w + 1):
            if obj[r - 1, c - 1]:
                g[r, c] = g[r - 1, c] + 1
    for r in range(h, 0, -1):  # up: or below, whichever is nearer; then squared
        for c in range(1, w + 1):
            g[r, c] = min(g[r, c], g[r + 1, c] + 1)
    for r in range(1, h + 1):
        for c in range(1, w + 1):
            g[r, c] *= g[r, c]
    f = np.empty(W, np.int64)
    v = np.empty(W, np.int64)
    z = np.empty(W + 1, np.float64)
    for r in range(1, h + 1):  # along the rows (the padding rows stay 0)
        for i in range(W):
            f[i] = g[r, i]
        kk = 0
        v[0] = 0
        z[0] = -np.inf
        z[1] = np.inf
        for q in range(1, W):
            s = ((f[q] + q * q) - (f[v[kk]] + v[kk] * v[kk])) / (2.0 * (q - v[kk]))
            while s <= z[kk]:
                kk -= 1
                s = ((f[q] + q * q) - (f[v[kk]] + v[kk] * v[kk])) / (2.0 * (q - v[kk]))
            kk += 1
            v[kk] = q
            z[kk] = s
            z[kk + 1] = np.inf
        kk = 0
        for q in range(W):
            while z[kk + 1] < q:
                kk += 1
            g[r, q] = (q - v[kk]) * (q - v[kk]) + f[v[kk]]
    m = 0
    top = 0
    total = 0.0
    for r in range(h):
        for c in range(w):
            if obj[r, c]:
                d2 = g[r + 1, c + 1]
                m += 1
                top = max(top, d2)
                total += math.sqrt(d2)
    counts = np.zeros(top + 1, np.int64)
    for r in range(h):
        for c in range(w):
            if obj[r, c]:
                counts[g[r + 1, c + 1]] += 1
    # the (m - 1) // 2-th and m // 2-th smallest squared distances (0-based)
    lower = -1
    upper = -1
    seen = 0
    for d2 in range(top + 1):
        seen += counts[d2]
        if lower < 0 and seen > (m - 1) // 2:
            lower = d2
        if seen > m // 2:
            upper = d2
            break
    median = (math.sqrt(lower) + math.sqrt(upper)) / 2.0 if m % 2 == 0 else math.sqrt(upper)
    return math.sqrt(top), total / m, median


@njit(cache=True)
def _moments(obj, out, k):
    """Raw moments (0, 0), (1, 0), (0, 1) and central moments (2, 0), (1, 1), (0, 2) of a crop in
    its own frame (as regionprops): the central ones summed as cp_measure's
    ``spatial_moments_2d`` does, per row over the columns, then over the rows."""
    h, w = obj.shape
    m00 = 0.0
    m10 = 0.0
    m01 = 0.0
    for r in range(h):
        for c in range(w):
            if obj[r, c]:
                m00 += 1.0
                m10 += r
                m01 += c
    cr = m10 / m00
    cc = m01 / m00
    mu20 = 0.0
    mu11 = 0.0
    mu02 = 0.0
    for r in range(h):
        count = 0.0
        first = 0.0
        second = 0.0
        for c in range(w):
            if obj[r, c]:
                dc = c - cc
                count += 1.0
                first += dc
                second += dc * dc
        dr = r - cr
        mu20 += dr * dr * count
        mu11 += dr * first
        mu02 += second
    out[7, k] = m00
    out[8, k] = m10
    out[9, k] = m01
    out[10, k] = mu20
    out[11, k] = mu11
    out[12, k] = mu02


@njit(cache=True)
def _shape_loop(masks, box, weights, coefs):
    n = box.shape[0]
    # area, perimeter, euler, convex area, max/mean/median radius, then the moments (_moments)
    out = np.zeros((13, n), np.float64)
    for k in range(n):
        r0, c0, r1, c1 = box[k, 0], box[k, 1], box[k, 2], box[k, 3]
        if r1 <= r0:
            continue
        obj = masks[r0:r1, c0:c1] == k + 1
        out[0, k] = obj.sum()
        out[1, k] = _perimeter(obj, weights)
        out[2, k] = _euler8(obj, coefs)
        out[3, k] = _convex_area(obj)
        out[4, k], out[5, k], out[6, k] = _edt_radii(obj)
        _moments(obj, out, k)
    return out


def sizeshape(masks: np.ndarray, *, boxes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """MeasureObjectSizeShape of CellProfiler 4 in 2-D without Zernike/Feret, every object at once.

    Parameters
    ----------
    masks : (Y, X) integer ndarray
        Labels ``1..N``, each present.
    boxes : (N, 4) int64 ndarray, optional
        :func:`bounding_boxes` of ``masks``.

    Returns
    -------
    dict of str to (N,) float64 ndarray
        The keys of cp_measure's ``get_sizeshape(masks, None, calculate_advanced=False,
        new_features=False)``: ``Area``, ``Perimeter``, ``Solidity``, ``EulerNumber``,
        ``MaximumRadius``, ``BoundingBoxMinimum_X``, ``Center_Y``, ...
    """
    from cp_measure.core.measureobjectsizeshape import axes_eccentricity_orientation, inertia_2d

    masks = np.ascontiguousarray(masks)
    if masks.ndim != 2:
        raise ValueError(f"masks must be 2-D, got shape {masks.shape}")
    box = boxes if boxes is not None else bounding_boxes(masks)
    area, perimeter, euler, convex, max_r, mean_r, median_r, *moments = _shape_loop(masks, box, _PERIMETER_WEIGHTS,
                                                                                   _EULER8)
    raw = np.zeros((box.shape[0], 4, 4))
    central = np.zeros((box.shape[0], 4, 4))
    raw[:, 0, 0], raw[:, 1, 0], raw[:, 0, 1], central[:, 2, 0], central[:, 1, 1], central[:, 0, 2] = moments
    central[:, 0, 0] = raw[:, 0, 0]
    major, minor, eccentricity, orientation = axes_eccentricity_orientation(inertia_2d(central))
    bbox_area = ((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "Area": area,
            "BoundingBoxArea": bbox_area,
            "ConvexArea": convex,
            "EquivalentDiameter": np.sqrt(4.0 * area / np.pi),
            "Perimeter": perimeter,
            "MajorAxisLength": major,
            "MinorAxisLength": minor,
            "Eccentricity": eccentricity,
            "Orientation": orientation * (180 / np.pi),
            "Center_X": box[:, 1] + raw[:, 0, 1] / raw[:, 0, 0],  # moments are bounding-box local
            "Center_Y": box[:, 0] + raw[:, 1, 0] / raw[:, 0, 0],
            "BoundingBoxMinimum_X": box[:, 1].astype(np.float64),
            "BoundingBoxMaximum_X": box[:, 3].astype(np.float64),
            "BoundingBoxMinimum_Y": box[:, 0].astype(np.float64),
            "BoundingBoxMaximum_Y": box[:, 2].astype(np.float64),
            "FormFactor": 4.0 * np.pi * area / perimeter**2,
            "Extent": area / bbox_area,
            "Solidity": area / convex,
            "Compactness": perimeter**2 / np.maximum(4.0 * np.pi * area, 1.0),
            "EulerNumber": euler,
            "MaximumRadius": max_r,
            "MeanRadius": mean_r,
            "MedianRadius": median_r,
        }


# ---- texture -------------------------------------------------------------------------------------

@njit(cache=True)
def _gray_levels(image, idx, scale):
    """``skimage.util.img_as_ubyte(clip(image / scale, 0, 1))`` at the flat indices ``idx`` (the
    same float64 operations: divide, clip, multiply by 255, round half to even); other pixels 0."""
    flat = image.ravel()
    out = np.zeros(flat.size, np.uint8)
    for t in range(idx.size):
        p = idx[t]
        v = min(max(np.float64(flat[p]) / scale, 0.0), 1.0)
        out[p] = np.uint8(np.rint(v * 255.0))
    return out


@njit(cache=True, error_model="numpy")
def _entropy(values, size):
    """``-sum(v * log2(v))`` over the positive ``values[:size]``, in index order."""
    total = 0.0
    for i in range(size):
        v = values[i]
        if v > 0.0:
            total -= v * np.log2(v)
    return total


@njit(cache=True, error_model="numpy")
def _haralick(counts, used, nused, fm1, pairs, table, stamp, tag, px, sums, diffs, row, out):
    """The 13 Haralick features (mahotas' definitions, with cp_measure's two simplifications for
    a symmetric matrix: HXY1 = HXY2 = 2 HX, centred variance) of one co-occurrence matrix,
    ``counts[i * fm1 + j] + counts[j * fm1 + i]`` for grey levels ``i, j`` among the object's
    nonzero levels ``used[:nused]`` (ascending; other rows and columns are empty), normalized by
    ``pairs``. Every sum runs in the order of
    cp_measure's ``_haralick_13`` (row by row), so the values are the same to the last bit; the
    probability ``c / pairs`` of a count ``c`` and its ``p * log2(p)`` are computed once per
    distinct count (``table[c]``, valid where ``stamp[c] == tag``), not once per matrix entry.
    ``row`` ((2, 256) int64) holds a row's nonzero entries, gathered without branching."""
    px[:fm1] = 0.0
    sums[:2 * fm1] = 0.0
    diffs[:fm1] = 0.0
    asm = 0.0
    entropy = 0.0
    ij_sum = 0.0
    idm = 0.0
    for ii in range(nused):
        i = used[ii]
        nonzero = 0
        for jj in range(nused):
            j = used[jj]
            c = counts[i * fm1 + j] + counts[j * fm1 + i]
            row[0, nonzero] = j
            row[1, nonzero] = c
            nonzero += c != 0
        for t in range(nonzero):
            j = row[0, t]
            c = row[1, t]
            if stamp[c] != tag:
                p = c / pairs
                table[c, 0] = p
                table[c, 1] = p * np.log2(p)
                stamp[c] = tag
            p = table[c, 0]
            asm += p * p
            entropy -= table[c, 1]
            ij_sum += i * j * p
            idm += p / ((i - j) * (i - j) + 1)
            px[j] += p
            sums[i + j] += p
            diffs[i - j if i >= j else j - i] += p
    ux = 0.0
    for k in range(fm1):
        ux += k * px[k]
    vx = 0.0
    for k in range(fm1):
        vx += (k - ux) * (k - ux) * px[k]
    sum_avg = 0.0
    for k in range(2 * fm1):
        sum_avg += k * sums[k]
    sum_var = 0.0
    for k in range(2 * fm1):
        sum_var += k * k * sums[k]
    sum_var -= sum_avg * sum_avg
    contrast = 0.0
    for k in range(fm1):
        contrast += k * k * diffs[k]
    mean_diff = 0.0
    for k in range(fm1):
        mean_diff += diffs[k]
    mean_diff /= fm1
    diff_var = 0.0
    for k in range(fm1):
        diff_var += (diffs[k] - mean_diff) * (diffs[k] - mean_diff)
    diff_var /= fm1
    hx = _entropy(px, fm1)
    sx = np.sqrt(vx)
    out[0] = asm
    out[1] = contrast
    out[2] = 1.0 if sx == 0.0 else (ij_sum - ux * ux) / (sx * sx)
    out[3] = vx
    out[4] = idm
    out[5] = sum_avg
    out[6] = sum_var
    out[7] = _entropy(sums, 2 * fm1)
    out[8] = entropy
    out[9] = diff_var
    out[10] = _entropy(diffs, fm1)
    out[11] = (entropy - 2.0 * hx) if hx == 0.0 else (entropy - 2.0 * hx) / hx
    arg = 1.0 - np.exp(-2.0 * (2.0 * hx - entropy))
    out[12] = np.sqrt(arg if arg > 0.0 else 0.0)


@njit(cache=True)
def _neighbours(flat_labels, idx, off, width, steps):
    """For every object pixel (``idx`` order): bit ``d`` set when the pixel ``steps[d]`` (dy, dx)
    away is in the image and of the same object."""
    height = flat_labels.size // width
    out = np.zeros(idx.size, np.uint8)
    for k in range(off.size - 1):
        s = off[k]
        if off[k + 1] == s:
            continue
        y = idx[s] // width
        row = y * width
        for t in range(s, off[k + 1]):
            p = idx[t]
            while p >= row + width:  # pixels come in raster order: no division per pixel
                y += 1
                row += width
            x = p - row
            bits = 0
            for d in range(steps.shape[0]):
                y2 = y + steps[d, 0]
                x2 = x + steps[d, 1]
                if 0 <= y2 < height and 0 <= x2 < width and flat_labels[p + steps[d, 0] * width + steps[d, 1]] == k + 1:
                    bits |= 1 << d
            out[t] = bits
    return out


@njit(cache=True)
def _texture_loop(levels, neighbours, idx, off, width, steps):
    """Haralick features of every object: per object and direction, the symmetric co-occurrence
    matrix of the grey levels of the object's pixel pairs ``steps[d]`` (dy, dx) apart
    (``neighbours``), counting only pairs of nonzero grey levels (a crop of the object counts
    more pairs, but ``ignore_zeros`` drops those with the background or a zero level)."""
    n = off.size - 1
    nd = steps.shape[0]
    out = np.full((nd, 13, n), np.nan)
    longest = 0
    for k in range(n):
        longest = max(longest, off[k + 1] - off[k])
    counts = np.zeros((nd, 256 * 256), np.int32)  # one way round, rows of fm1; the matrix is counts + counts.T
    table = np.empty((2 * longest + 1, 2), np.float64)
    stamp = np.full(2 * longest + 1, -1, np.int64)
    px = np.empty(256, np.float64)
    sums = np.empty(512, np.float64)
    diffs = np.empty(256, np.float64)
    row = np.empty((2, 256), np.int64)
    seen = np.zeros(256, np.bool_)
    used = np.empty(256, np.int64)  # the object's nonzero grey levels, ascending
    pairs = np.zeros(nd, np.int64)
    delta = np.empty(nd, np.int64)
    for d in range(nd):
        delta[d] = steps[d, 0] * width + steps[d, 1]
    for k in range(n):
        s = off[k]
        e = off[k + 1]
        if e == s:
            continue
        seen[:] = False
        for t in range(s, e):
            seen[levels[idx[t]]] = True
        nused = 0
        fm1 = 1  # grey levels 0..max, as the crop's ``max() + 1`` (its background is 0)
        for v in range(1, 256):
            if seen[v]:
                used[nused] = v
                nused += 1
                fm1 = v + 1
        counts[:, :fm1 * fm1] = 0
        pairs[:] = 0
        for t in range(s, e):
            p = idx[t]
            a = levels[p]
            bits = neighbours[t]
            if a == 0 or bits == 0:
                continue
            for d in range(nd):
                if bits & (1 << d):
                    b = levels[p + delta[d]]
                    if b != 0:
                        counts[d, a * fm1 + b] += 1
                        pairs[d] += 2
        empty = False
        for d in range(nd):
            if pairs[d] == 0:  # mahotas raises, cp_measure gives NaN for every direction
                empty = True
        if empty:
            continue
        for d in range(nd):
            _haralick(counts[d], used, nused, fm1, pairs[d], table, stamp, k * nd + d, px, sums, diffs, row,
                      out[d, :, k])
    return out


def neighbours(masks: np.ndarray, *, scale: int = 3, groups=None) -> np.ndarray:
    """Which of the four texture directions (mahotas' (0, 1), (1, 1), (1, 0), (1, -1), times
    ``scale``) lead from each object pixel to a pixel of the same object: shared by the channels
    measured on the same objects (:func:`texture`'s ``pairs``).

    Returns
    -------
    (P,) uint8 ndarray
        Bit ``d`` of entry ``t`` for direction ``d`` from pixel ``idx[t]`` of :func:`segments`.
    """
    masks = np.ascontiguousarray(masks)
    idx, off, width = groups if groups is not None else segments(masks)
    return _neighbours(masks.ravel(), idx, off, width, _texture_steps(scale))


def _texture_steps(scale: int) -> np.ndarray:
    if scale < 1:
        raise ValueError(f"scale must be at least 1 pixel, got {scale}")
    return np.ascontiguousarray(scale * DELTAS_2D[:, 1:])  # (dy, dx) of mahotas' four 2-D directions


def gray_levels(image: np.ndarray, *, scale: float = 1.0, groups=None) -> np.ndarray:
    """The 256 grey levels texture is measured on: ``img_as_ubyte(clip(image / scale, 0, 1))``.

    Parameters
    ----------
    image : (Y, X) ndarray
        Intensities (e.g. ADU with ``scale=65535``).
    scale : float
        Divisor of ``image`` before clipping to [0, 1].
    groups : tuple, optional
        :func:`segments` of the objects to measure: only their pixels are converted (the others
        are 0); default every pixel.

    Returns
    -------
    (Y, X) uint8 ndarray
    """
    image = np.ascontiguousarray(image)
    idx = groups[0] if groups is not None else np.arange(image.size, dtype=np.int64)
    return _gray_levels(image, idx, float(scale)).reshape(image.shape)


def texture(masks: np.ndarray, pixels: np.ndarray | None, *, scale: int = 3, groups=None,
            levels: np.ndarray | None = None, pairs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Haralick texture (MeasureTexture, 256 gray levels) of every object in one compiled loop
    over the objects' pixels, the co-occurrences of all four directions counted in one pass and
    reduced in the order of cp_measure's numba kernel (``_haralick_13``: the same values to the
    last bit), each distinct count's probability and entropy term computed once.

    Parameters
    ----------
    masks : (Y, X) integer ndarray
        Labels ``1..N``.
    pixels : (Y, X) float ndarray or None
        Intensities in [0, 1] (quantized to 256 levels as ``skimage.util.img_as_ubyte``); None
        when ``levels`` is given.
    scale : int
        Co-occurrence distance in pixels.
    groups : tuple, optional
        :func:`segments` of ``masks``.
    levels : (Y, X) uint8 ndarray, optional
        The grey levels (:func:`gray_levels`) instead of ``pixels``; only the objects' pixels
        are read.
    pairs : (P,) uint8 ndarray, optional
        :func:`neighbours` of ``masks`` at this ``scale``.

    Returns
    -------
    dict of str to (N,) float64 ndarray
        cp_measure's ``get_texture(masks, pixels, scale)`` keys (``Contrast_3_00_256``, ...) and values.
    """
    import skimage.util
    from cp_measure.core.measuretexture import _pack

    steps = _texture_steps(scale)
    masks = np.ascontiguousarray(masks)
    groups = groups if groups is not None else segments(masks)
    idx, off, width = groups
    if levels is None:
        levels = skimage.util.img_as_ubyte(pixels)
    if pairs is None:
        pairs = neighbours(masks, scale=scale, groups=groups)
    features = _texture_loop(np.ascontiguousarray(levels).ravel(), pairs, idx, off, width, steps)
    return _pack(features, scale, 256)


def bounding_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, 4) int64 bounding boxes ``(min row, min col, max row + 1, max col + 1)`` of labels
    ``1..N`` (empty rows for absent labels have max <= min)."""
    masks = np.ascontiguousarray(masks)
    return _bboxes(masks, int(masks.max()) if masks.size else 0)
