"""CellProfiler 4's MeasureObjectSizeShape in 2-D without Zernike/Feret, every object at once.

The same keys and values as cp_measure's ``get_sizeshape(masks, pixels, calculate_advanced=False,
new_features=False)``: per object, in its bounding box, skimage's perimeter, Euler number and
convex area, the exact EDT's radii and the moments, in one compiled loop (cp_measure runs
``regionprops``, a convex hull, a perimeter convolution and an EDT per object). The
moment-derived shape features use cp_measure's own inertia and axis formulas on moments summed
per object in its bounding box (per row, then over rows, as cp_measure).

All functions take ``masks`` with contiguous labels ``1..N`` (as cp_measure with
``sanitize=False``) and return arrays of length N indexed by ``label - 1``; loops are compiled
with numba (``cache=True``: compiled once, cached on disk).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pipeline.features.groups import bounding_boxes

__all__ = ["sizeshape"]


_PERIMETER_WEIGHTS = np.zeros(50, np.float64)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2.0)
_PERIMETER_WEIGHTS[[13, 23]] = (1.0 + math.sqrt(2.0)) / 2.0
#: skimage's Euler-number coefficients of the 16 2x2 configurations, 8-connectivity
_EULER8 = np.array([0, 0, 0, 0, 0, 0, -1, 0, 1, 0, 0, 0, 0, 0, -1, 0], np.int64)


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
        :func:`~pipeline.features.groups.bounding_boxes` of ``masks``.

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
