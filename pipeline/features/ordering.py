"""Each object's pixel values in order, for the quantiles of :mod:`.intensity`.

Every object's float32 bit patterns are radix-sorted on their own (:func:`sorted_values`, in
cache); a cell made of its nucleus and its cytoplasm gets its order by merging theirs
(:func:`union_parts`), and the quartiles and the MAD then read O(log m) of the m sorted values.

All functions take ``masks`` with contiguous labels ``1..N`` (as cp_measure with
``sanitize=False``) and return arrays of length N indexed by ``label - 1``; loops are compiled
with numba (``cache=True``: compiled once, cached on disk).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["sort_keys", "sorted_values", "union_parts"]


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
        :func:`~pipeline.features.groups.segments` of the objects.
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


def sort_keys(image: np.ndarray) -> np.ndarray:
    """(Y * X,) uint32 sort keys of a field: the bit patterns of ``max(image, 0)`` as float32
    (non-negative float32 values order like their bit patterns; negative values clip to 0 in
    CellProfiler's scale anyway). Computed once per channel when several label images are
    measured on it (:func:`~pipeline.features.intensity.intensity`'s ``keys``)."""
    image32 = np.ascontiguousarray(image, dtype=np.float32)
    return (np.maximum(image32, np.float32(0)) + np.float32(0)).ravel().view(np.uint32)  # -0.0 -> +0.0
