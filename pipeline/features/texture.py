"""Haralick texture (MeasureTexture, 256 grey levels) of every object at once.

The same keys and values, to the last bit, as cp_measure's numba kernel
``get_texture(masks, pixels, scale)``: the co-occurrences of all four directions counted in one
pass over the objects' pixels and reduced in the order of cp_measure's ``_haralick_13``.

All functions take ``masks`` with contiguous labels ``1..N`` (as cp_measure with
``sanitize=False``) and return arrays of length N indexed by ``label - 1``; loops are compiled
with numba (``cache=True``: compiled once, cached on disk).
"""

from __future__ import annotations

import numpy as np
from cp_measure.core.numba._texture import DELTAS_2D
from numba import njit

from pipeline.features.groups import segments

__all__ = ["texture", "gray_levels", "neighbours"]


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
        Bit ``d`` of entry ``t`` for direction ``d`` from pixel ``idx[t]`` of :func:`~pipeline.features.groups.segments`.
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
        :func:`~pipeline.features.groups.segments` of the objects to measure: only their pixels are converted (the others
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
        :func:`~pipeline.features.groups.segments` of ``masks``.
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
