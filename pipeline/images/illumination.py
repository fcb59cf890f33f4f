"""Illumination correction in the manner of CellProfiler's CorrectIlluminationCalculate/Apply.

Per plate and channel the fields are combined per pixel, after subtracting the camera's dark
offset (``dark``), in one of three ways:

``'mean'``
    The per-pixel mean (CellProfiler's "Each: All" mode). Cheap and streaming, but it follows
    where cells happened to lie: with a few dozen fields its error is several percent.
``'median'``
    The per-pixel median; memory-bounded in ingestion by a deterministic subsample of fields
    (see :func:`subsample`).
``'background'``
    The per-pixel mean of *background* pixels only (CellProfiler's "Background" method, made
    per-pixel): in each field a pixel counts as background when it is below
    ``p25 + 3 * (p25 - p5)`` of that field (cells are bright; the threshold lies a few noise widths
    above the background). Cell placement then no longer matters: on 48 generated DMSO fields
    (generator calibrated to real fields) with the dark offset given, its error against the true
    flat field is 1.0-3.3 % per channel (mean: 6-15 %) and it flattens the background 4.8-18x
    (``tests/pipeline/test_illumination.py``). Streaming (:class:`BackgroundAccumulator`).

The camera's dark offset is estimated when it is not given (:func:`estimate_dark`, photon
transfer): the background's pixel-scale noise variance grows linearly with the light above the
offset, and vignetting spreads the background over a range of levels, so the line of variance
against background level crosses zero variance at the offset. With a flat field the offset does
not matter and the estimate falls back to 0. The default is
``'background'`` with the estimated offset: on 16 fields from a generator unlike cmcl's (offset
480 ADU, not given; estimated 459-482) it is 1.1-2.6 % RMS from the true field, where
CellProfiler's mean with no offset is 8-13 % off (``tests/pipeline/test_illumination.py``).
The function is divided by its minimum (``robust_percentile=0``), not clipped at a low
percentile as CellProfiler does: clipping flattened the corners of strongly vignetted fields. :func:`flatness` reports how
flat the corrected background is, and :func:`compare_profiles` compares a function with a
vendor's flat-field profile (Harmony's, :func:`pipeline.plates.vendors.phenix.flatfield_image`).

The combined image is then smoothed with a large median filter (computed on a downsampled image and
upsampled back, which is what the JUMP recipe does for speed), rescaled so that its minimum is 1,
and applied by division. A corrected image is thus
never brighter than the raw one, and a flat field is left unchanged.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numba import njit
from scipy import ndimage as ndi
from skimage.transform import resize

from pipeline.images.choices import ILLUMINATION_METHODS, IlluminationMethod
from pipeline.images.histo import block_percentiles, int_percentiles

__all__ = ["estimate", "estimate_dark", "theil_sen", "flatness", "compare_profiles", "smooth", "apply", "subsample",
           "upsample_grid", "above_grid", "MeanAccumulator", "BackgroundAccumulator"]



def _check_stack(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(f"expected a stack of fields of one channel, shape (n_fields, y, x); got {images.shape}")
    return images


def smooth(
    combined: np.ndarray,
    *,
    filter_fraction: float = 1 / 8,
    downsample: int | None = None,
    robust_percentile: float = 0.0,
) -> np.ndarray:
    """Turn a combined (mean or median) field into an illumination function.

    Parameters
    ----------
    combined : (Y, X) ndarray
        The combined image of one channel.
    filter_fraction : float
        Median filter size as a fraction of the field's shorter side (CellProfiler users pick
        1/5 to 1/10 of the field).
    downsample : int, optional
        Downsampling factor before the median filter; default chooses one so the downsampled
        field is about 100 px across.
    robust_percentile : float
        The function is divided by this percentile of itself and floored at 1; the default 0
        divides by its minimum (nothing is clipped).

    Returns
    -------
    (Y, X) float32 ndarray, every value >= 1.
    """
    combined = np.asarray(combined, dtype=np.float32)
    if combined.ndim != 2:
        raise ValueError(f"expected a (y, x) image; got shape {combined.shape}")
    short = min(combined.shape)
    factor = downsample or max(1, short // 100)
    small_shape = (max(1, combined.shape[0] // factor), max(1, combined.shape[1] // factor))
    small = resize(combined, small_shape, order=1, anti_aliasing=True, preserve_range=True)
    size = max(3, int(round(filter_fraction * min(small_shape))) | 1)
    small = ndi.median_filter(small, size=size, mode="reflect")
    func = upsample_grid(small, combined.shape)
    low = func.min() if robust_percentile == 0 else np.percentile(func, robust_percentile)  # same value
    if not np.isfinite(low) or low <= 0:
        low = float(func[func > 0].min()) if np.any(func > 0) else 1.0
    return np.maximum(func / low, 1.0).astype(np.float32)


def estimate(
    images: np.ndarray,
    *,
    method: IlluminationMethod = "background",
    dark: float | Literal["auto"] = "auto",
    filter_fraction: float = 1 / 8,
    downsample: int | None = None,
    robust_percentile: float = 0.0,
) -> np.ndarray:
    """Illumination function of one channel from a stack of its fields.

    Parameters
    ----------
    images : (n_fields, Y, X) ndarray
        Fields of one channel of one plate.
    method : {'mean', 'median', 'background'}
        How fields are combined per pixel (see the module docstring): the mean (CellProfiler),
        the median, or the mean of each field's background pixels (most accurate).
    dark : float or 'auto'
        Camera dark offset (ADU) subtracted from every pixel before combining; the illumination
        multiplies the signal, not the offset, so leaving a large offset in flattens the function.
        ``'auto'``: estimated from the fields (:func:`estimate_dark`).
    filter_fraction, downsample, robust_percentile
        See :func:`smooth`.

    Returns
    -------
    (Y, X) float32 ndarray, values >= 1. Divide raw images by it (:func:`apply`).

    Raises
    ------
    ValueError
        If ``images`` is not a non-empty 3-D stack or ``method`` is unknown.
    """
    images = _check_stack(images)
    _check_method(method)
    if isinstance(dark, str):
        if dark != "auto":
            raise ValueError(f"dark {dark!r} is not a number or 'auto'")
        bg = BackgroundAccumulator()
        for image in images:
            bg.add(image[None])
        dark = estimate_dark(bg.noise()[0], bg.background()[0])
    if method == "mean":
        combined = images.mean(axis=0, dtype=np.float64) - dark
    elif method == "median":
        combined = np.median(images, axis=0) - dark
    else:
        acc = BackgroundAccumulator(dark=dark)
        for image in images:
            acc.add(image[None])
        combined = acc.background()[0]
    return smooth(combined, filter_fraction=filter_fraction, downsample=downsample,
                  robust_percentile=robust_percentile)


def estimate_dark(noise: np.ndarray, background: np.ndarray, *, grid: int = 16, floor: float | None = None) -> float:
    """Dark offset of one channel from its background and the background's noise (photon transfer).

    Shot noise makes the variance of a background pixel grow with the light it received:
    ``var = g * (B - d) + r^2`` (``g`` the camera gain in ADU per photon, ``r`` the read noise,
    ``d`` the offset). Vignetting gives every field a range of background levels ``B(x)``, so a
    robust (Theil-Sen) line of ``var`` against ``B`` over ``grid`` x ``grid`` blocks has slope
    ``g`` and intercept ``r^2 - g d``: ``d = -intercept / g``, too high by ``r^2 / g`` (a few
    ADU for scientific cameras, whose read noise is 1-2 photons).

    Parameters
    ----------
    noise : (Y, X) ndarray
        Pixel-scale noise variance of the background (:meth:`BackgroundAccumulator.noise`).
    background : (Y, X) ndarray
        Mean background (:meth:`BackgroundAccumulator.background`, ``dark=0``).
    grid : int
        Blocks per side.
    floor : float, optional
        Upper bound of the offset; default the lowest value of ``background``.

    Returns
    -------
    float
        The offset in ADU, in ``[0, floor]``; 0 when the fields cannot tell (a flat background,
        where the offset does not change the function, or noise that does not grow with light).
    """
    noise = np.asarray(noise, np.float64)
    background = np.asarray(background, np.float64)
    if noise.shape != background.shape or noise.ndim != 2:
        raise ValueError(f"noise {noise.shape} and background {background.shape} must be one (y, x) shape")
    y, x = background.shape
    by, bx = max(1, y // grid), max(1, x // grid)
    ny, nx = y // by, x // bx
    blk = lambda a: a[:ny * by, :nx * bx].reshape(ny, by, nx, bx).mean(axis=(1, 3)).ravel()  # noqa: E731
    v, b = blk(noise), blk(background)
    top = float(background.min()) if floor is None else float(floor)
    if b.std() < 1e-3 * max(abs(b.mean()), 1.0):
        return 0.0
    g, a = theil_sen(b, v)
    if not np.isfinite(g) or g <= 0:
        return 0.0
    return float(np.clip(-a / g, 0.0, max(top, 0.0)))


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Theil-Sen line ``y = slope * x + intercept``: the median of the slopes of all pairs of
    points with distinct ``x``, and ``median(y) - slope * median(x)`` (what
    ``scipy.stats.theilslopes`` returns with its default ``method='separate'``, without
    importing ``scipy.stats``, which costs ~1 s per process). NaN slope when every ``x`` is equal.
    """
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    ok = dx != 0
    if not ok.any():
        return float("nan"), float("nan")
    slope = float(np.median((y[j] - y[i])[ok] / dx[ok]))
    return slope, float(np.median(y) - slope * np.median(x))


def flatness(background: np.ndarray, function: np.ndarray, *, dark: float = 0.0, grid: int = 8) -> tuple[float, float]:
    """How flat a channel's background is before and after correction.

    Parameters
    ----------
    background : (Y, X) ndarray
        The channel's mean background (:class:`BackgroundAccumulator` with ``dark=0``).
    function : (Y, X) ndarray
        Its illumination function.
    dark : float
        The offset subtracted before correcting.

    Returns
    -------
    raw_cv, corrected_cv : float
        Coefficient of variation across ``grid`` x ``grid`` blocks of the background minus
        ``dark``, before and after dividing by ``function`` (0 = perfectly flat).
    """
    bg = np.asarray(background, np.float64) - dark
    corrected = bg / np.asarray(function, np.float64)
    y, x = bg.shape
    by, bx = max(1, y // grid), max(1, x // grid)

    def cv(a: np.ndarray) -> float:
        v = a[:(y // by) * by, :(x // bx) * bx].reshape(y // by, by, x // bx, bx).mean(axis=(1, 3))
        return float(v.std() / abs(v.mean())) if v.mean() else float("nan")

    return cv(bg), cv(corrected)


def compare_profiles(function: np.ndarray, reference: np.ndarray) -> float:
    """RMS relative difference between two illumination functions, each scaled to mean 1."""
    f = np.asarray(function, np.float64)
    r = np.asarray(reference, np.float64)
    if f.shape != r.shape:
        raise ValueError(f"function shape {f.shape} differs from reference shape {r.shape}")
    f, r = f / f.mean(), r / r.mean()
    return float(np.sqrt(np.mean((f / r - 1) ** 2)))


def _check_method(method: str) -> None:
    if method not in ILLUMINATION_METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(map(repr, ILLUMINATION_METHODS))}")


def subsample(n_items: int, max_items: int) -> np.ndarray:
    """Indices of at most ``max_items`` of ``n_items``, evenly spread and deterministic.

    Used to bound the memory of the per-pixel median: ``max_items`` fields of one channel are
    held at once (e.g. 64 fields of 2160 x 2160 uint16 -> 0.6 GB as float32).

    Returns
    -------
    (min(n_items, max_items),) int64 ndarray, increasing.
    """
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    if n_items <= max_items:
        return np.arange(n_items, dtype=np.int64)
    return np.unique(np.linspace(0, n_items - 1, max_items).round().astype(np.int64))


def apply(image: np.ndarray, function: np.ndarray, *, dark: float = 0.0) -> np.ndarray:
    """Correct ``image`` (Y, X) or (C, Y, X) by dividing by ``function`` of the same shape.

    Parameters
    ----------
    image : (Y, X) or (C, Y, X) ndarray
    function : ndarray of ``image``'s shape
        From :func:`estimate`.
    dark : float or (C,) sequence
        Dark offset subtracted before dividing (use the value given to :func:`estimate`); one
        per channel for a (C, Y, X) image.

    Returns
    -------
    float32 ndarray of ``image``'s shape.

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    image = np.asarray(image)
    function = np.asarray(function, dtype=np.float32)
    if image.shape != function.shape:
        raise ValueError(f"image shape {image.shape} does not match illumination function shape {function.shape}")
    out = image.astype(np.float32)
    d = np.asarray(dark, np.float32)
    if d.ndim == 1 and image.ndim == 3:
        if len(d) != image.shape[0]:
            raise ValueError(f"{len(d)} dark offsets for {image.shape[0]} channels")
        out -= d[:, None, None]
    elif np.any(d):
        out -= d
    return np.divide(out, function, out=out)  # in place: one float32 copy of the image, not two


class MeanAccumulator:
    """Streaming per-pixel mean of (C, Y, X) fields: the plate is never held in memory.

    Integer fields are summed exactly (int64), so partial accumulators of disjoint sets of fields
    (one per worker batch) merge to the same sums in any order (:meth:`merge`).

    Examples
    --------
    >>> acc = MeanAccumulator()
    >>> acc.add(np.ones((2, 4, 4))); acc.add(3 * np.ones((2, 4, 4)))
    >>> float(acc.mean()[0, 0, 0])
    2.0
    """

    def __init__(self) -> None:
        self._sum: np.ndarray | None = None
        self.count = 0

    def add(self, field: np.ndarray) -> None:
        field = np.asarray(field)
        exact = np.issubdtype(field.dtype, np.integer) or np.issubdtype(field.dtype, np.bool_)
        if self._sum is None:
            self._sum = np.zeros(field.shape, np.int64 if exact else np.float64)
        elif field.shape != self._sum.shape:
            raise ValueError(f"field shape {field.shape} differs from earlier fields {self._sum.shape}")
        if exact and self._sum.dtype == np.int64:
            np.add(self._sum, field, out=self._sum, casting="unsafe")
        else:
            if self._sum.dtype == np.int64:
                self._sum = self._sum.astype(np.float64)
            self._sum += field
        self.count += 1

    def merge(self, other: "MeanAccumulator") -> None:
        """Add the fields of ``other`` (an accumulator of other fields of the same shape)."""
        if other._sum is None:
            return
        if self._sum is None:
            self._sum, self.count = other._sum.copy(), other.count
            return
        if other._sum.shape != self._sum.shape:
            raise ValueError(f"field shape {other._sum.shape} differs from earlier fields {self._sum.shape}")
        if self._sum.dtype != other._sum.dtype:
            self._sum = self._sum.astype(np.float64)
        self._sum += other._sum
        self.count += other.count

    def mean(self) -> np.ndarray:
        if self._sum is None:
            raise ValueError("no fields were added")
        return (self._sum / self.count).astype(np.float32)


def _grid_axis(n: int, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ``n`` pixels over ``g`` block centres: each pixel's two nearest centres (edges held)
    and its float32 weight on the second."""
    pos = np.clip((np.arange(n) + 0.5) * g / n - 0.5, 0, g - 1)
    i0 = np.floor(pos).astype(np.intp)
    return i0, np.minimum(i0 + 1, g - 1), (pos - i0).astype(np.float32)


def _grid_rows(values: np.ndarray, n: int) -> np.ndarray:
    """The first (row) pass of :func:`upsample_grid`: (n, gx) float32."""
    y0, y1, wy = _grid_axis(n, values.shape[0])
    a = np.asarray(values, np.float32)
    return a[y0] * (1 - wy)[:, None] + a[y1] * wy[:, None]


def upsample_grid(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a (gy, gx) grid of block values (at block centres) to ``shape``,
    edges held: what ``skimage.transform.resize(order=1, mode='edge')`` computes, in two
    separable passes of float32. Used for illumination functions; :func:`above_grid` and the
    background statistics interpolate the same way pixel by pixel, without the full-size map."""
    rows = _grid_rows(values, shape[0])  # (Y, gx): small
    x0, x1, wx = _grid_axis(shape[1], values.shape[1])
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def above_grid(image: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``image > upsample_grid(values, image.shape)`` for a float32 (Y, X) image, without
    building the full-size map: the grid is interpolated to each row (small), then to each
    pixel inside one compiled pass, in the same float32 arithmetic (the same mask)."""
    img = np.ascontiguousarray(image, dtype=np.float32)
    rows = _grid_rows(values, img.shape[0])
    x0, x1, wx = _grid_axis(img.shape[1], rows.shape[1])
    return _above_rows(img, rows, x0, x1, wx)


@njit(cache=True)
def _at_column(row, x0, x1, wx, c):
    """A row of block values (one pass of :func:`upsample_grid` done) interpolated to column
    ``c``: the second pass for one pixel, in the same float32 arithmetic."""
    a = wx[c]
    return row[x0[c]] * (np.float32(1) - a) + row[x1[c]] * a


@njit(cache=True)
def _above_rows(img, rows, x0, x1, wx):
    h, w = img.shape
    out = np.empty((h, w), np.bool_)
    for r in range(h):
        for c in range(w):
            out[r, c] = img[r, c] > _at_column(rows[r], x0, x1, wx, c)
    return out


@njit(cache=True)
def _accumulate_background(sample, odd, sampled, rows, x0, x1, wx, spreads, glob, bins, total, count, sq, sqn):
    """One plane's background sums per bin (values at or below the narrow threshold) and
    squared second differences / 6 (centre and both horizontal neighbours at or below the wide
    one), in raster order.

    Threshold ``j`` (0 narrow, 1 wide) of a pixel is ``min(base + spreads[j] * width,
    glob[j])``, where ``base`` and ``width`` are the block grids' values interpolated to the
    pixel: ``rows[0]`` / ``rows[1]`` hold them interpolated to each row, ``x0``, ``x1``, ``wx``
    each column's two block columns and weight (:func:`upsample_grid`'s second pass, here per
    pixel in the same float32 arithmetic, so no full-size map is built). With ``rows`` of width
    0 the thresholds are ``glob`` alone."""
    h, w = sample.shape
    k = min(w - 1, odd.shape[1] - 1) if sampled else w - 2
    blocked = rows.shape[2] > 0
    six = np.float32(6)
    for r in range(h):
        for col in range(w):
            narrow = glob[0]
            wide = glob[1]
            if blocked:
                base = _at_column(rows[0, r], x0, x1, wx, col)
                width = _at_column(rows[1, r], x0, x1, wx, col)
                narrow = min(base + spreads[0] * width, glob[0])
                wide = min(base + spreads[1] * width, glob[1])
            b = bins[r * w + col]
            v = sample[r, col]
            if v <= narrow:
                total[b] += v
                count[b] += 1
            if 1 <= col <= k:
                if sampled:
                    left = odd[r, col - 1]
                    right = odd[r, col]
                else:
                    left = sample[r, col - 1]
                    right = sample[r, col + 1]
                if v <= wide and left <= wide and right <= wide:
                    d = np.float32(2) * v - left - right
                    sq[b] += d * d / six
                    sqn[b] += 1


class BackgroundAccumulator:
    """Streaming mean of the background pixels of (C, Y, X) fields, in ``block`` x ``block`` bins.

    In each field and channel, after subtracting ``dark``, a pixel is background when it is below
    ``p25 + k * (p25 - p5)`` of that plane (``k`` = ``spread``): cells cover well under 75 % of a
    Cell Painting field and are far brighter than the background, so the 25th percentile lies in
    the background and ``p25 - p5`` measures its noise. Sums and counts are kept per bin of
    ``block`` x ``block`` pixels (what :meth:`background` returns is pooled that way anyway, so
    that pixels covered by cells in every field still get a value), which keeps a partial
    accumulator a few hundred kB whatever the field size: worker processes each fill one and
    :meth:`merge` adds them. With integer fields and an integer ``dark`` every sum is exact, so
    merging in any order gives identical results.

    Fields of at least ``full_resolution_below`` pixels on their shorter side are sampled on
    every other row and column (a quarter of the pixels; each bin still pools dozens of
    background pixels per field): the statistics of a 1080 x 1080 field then cost ~6 ms per
    channel (block percentiles read in place, thresholds interpolated inside the accumulation
    pass) instead of ~160 ms.

    Parameters
    ----------
    dark : float
        Dark offset subtracted from every pixel.
    spread : float
        Threshold width in units of ``p25 - p5``.
    grid : int
        Blocks per side for the local threshold (:meth:`_threshold`); 1 = one global threshold.
    block : int, optional
        Bin size in pixels; default about 1/64 of the shorter side of the first field (even when
        sampled).
    full_resolution_below : int
        Fields whose shorter side is below this are used at every pixel.
    """

    def __init__(self, *, dark: float = 0.0, spread: float = 3.0, grid: int = 8, block: int | None = None,
                 full_resolution_below: int = 512) -> None:
        self.dark = float(dark)
        self.spread = float(spread)
        self.grid = int(grid)
        self.block = block
        self.full_resolution_below = int(full_resolution_below)
        self.shape: tuple[int, ...] | None = None
        self._sum: np.ndarray | None = None
        self._count: np.ndarray | None = None
        self._sq: np.ndarray | None = None
        self._sqn: np.ndarray | None = None
        self._bins: np.ndarray | None = None
        self.count = 0

    def _setup(self, shape: tuple[int, int, int]) -> None:
        c, y, x = shape
        self.stride = 2 if min(y, x) >= self.full_resolution_below else 1
        if self.block is None:
            b = max(1, min(y, x) // 64)
            self.block = b + (b % 2) if self.stride == 2 and b > 1 else b
        b, s = self.block, self.stride
        self.nbins = (-(-y // b), -(-x // b))
        n = self.nbins[0] * self.nbins[1]
        self._sum = np.zeros((c, n), np.float64)
        self._count = np.zeros((c, n), np.int64)
        self._sq = np.zeros((c, n), np.float64)
        self._sqn = np.zeros((c, n), np.int64)
        self.shape = shape

    def add(self, field: np.ndarray) -> None:
        """Add one (C, Y, X) field."""
        field = np.asarray(field)
        if field.ndim != 3:
            raise ValueError(f"expected a (c, y, x) field; got shape {field.shape}")
        if self.shape is None:
            self._setup(field.shape)
        elif field.shape != self.shape:
            raise ValueError(f"field shape {field.shape} differs from earlier fields {self.shape}")
        s = self.stride
        if self._bins is None:  # each sampled pixel's bin (not pickled: a worker's partial travels small)
            rows = (np.arange(0, field.shape[1], s) // self.block).astype(np.intp)
            cols = (np.arange(0, field.shape[2], s) // self.block).astype(np.intp)
            self._bins = (rows[:, None] * self.nbins[1] + cols[None, :]).ravel()
        dark = np.float32(self.dark)
        for c, plane in enumerate(field):
            sample = plane[::s, ::s].astype(np.float32)
            if self.dark:
                sample -= dark
            ints = plane[::s, ::s] if np.issubdtype(plane.dtype, np.unsignedinteger) else None
            spreads = (self.spread, 2 * self.spread)
            glob, rows = self._thresholds(sample, spreads, ints=ints)
            # pixel-scale noise of the background (photon transfer, see estimate_dark): the
            # squared second difference of a sampled pixel and its two horizontal neighbours at
            # full resolution, / 6 (the noise variance for white noise; a linear gradient, e.g. a
            # cell's halo, cancels), where all three are below a threshold twice as wide (a
            # tighter one cuts the noise's upper tail and biases the variance low); with sampling
            # the neighbours are the unsampled columns either side
            odd = plane[::s, 1::s].astype(np.float32) - dark if s > 1 else sample
            x0, x1, wx = _grid_axis(sample.shape[1], rows.shape[2]) if rows.shape[2] else (
                np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0, np.float32))
            _accumulate_background(sample, odd, s > 1, rows, x0, x1, wx, np.array(spreads, np.float32), glob,
                                   self._bins, self._sum[c], self._count[c], self._sq[c], self._sqn[c])
        self.count += 1

    def __getstate__(self) -> dict:
        return {**vars(self), "_bins": None}  # derived from the shape; 8 bytes per sampled pixel

    def merge(self, other: "BackgroundAccumulator") -> None:
        """Add the fields of ``other``: an accumulator of other fields of the same shape, built
        with the same parameters."""
        if other.shape is None:
            return
        if self.shape is None:
            for k, v in vars(other).items():
                setattr(self, k, v.copy() if isinstance(v, np.ndarray) else v)
            return
        same = (other.shape, other.dark, other.spread, other.grid, other.block, other.stride) == (
            self.shape, self.dark, self.spread, self.grid, self.block, self.stride)
        if not same:
            raise ValueError(f"cannot merge accumulators of fields {other.shape} and {self.shape} "
                             "or with other parameters")
        self._sum += other._sum
        self._count += other._count
        self._sq += other._sq
        self._sqn += other._sqn
        self.count += other.count

    def _thresholds(self, plane: np.ndarray, spreads: tuple[float, ...], *,
                    ints: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``p25 + spread * (p25 - p5)`` of the plane, and of each of its ``grid`` x ``grid``
        blocks (bilinearly upsampled), whichever is lower, for each spread: the global value alone
        lies far above the background of vignetted corners (there ``p25 - p5`` measures the
        vignetting, not the noise) and lets dim cells into their background; a block's own value
        is wrong where cells cover the whole block. The percentiles are computed once for all
        spreads (upsampling is linear, so each threshold is one multiply-add away); from
        histograms of ``ints`` (the same pixels as unsigned integers, before ``dark``) when given.

        Returns the global thresholds (float32, one per spread) and the blocks' ``p25`` and
        ``p25 - p5`` grids interpolated to each row, (2, Y, grid) float32 ((2, Y, 0) when the
        plane is too small for blocks), which :func:`_accumulate_background` interpolates along
        each row: the same values as :func:`upsample_grid` of the grids."""
        g = self.grid
        y, x = plane.shape
        by, bx = y // g, x // g
        blocked = not (g < 2 or by < 8 or bx < 8)
        if ints is not None:  # unsigned integer pixels: every percentile from histograms, exactly
            p5, p25 = int_percentiles(ints, [5, 25])[0] - self.dark
            if blocked:
                qb = block_percentiles(ints, [5, 25], grid=g) - self.dark
                q5, q25 = qb[..., 0], qb[..., 1]
        else:
            p5, p25 = np.percentile(plane, [5, 25])
            if blocked:
                blocks = plane[:g * by, :g * bx].reshape(g, by, g, bx).transpose(0, 2, 1, 3).reshape(g, g, -1)
                q5, q25 = np.percentile(blocks, [5, 25], axis=-1)
        width = max(float(p25 - p5), 1e-6)
        glob = np.array([float(p25) + sp * width for sp in spreads], np.float32)
        if not blocked:
            return glob, np.zeros((2, y, 0), np.float32)
        return glob, np.stack([_grid_rows(q25, y), _grid_rows(np.maximum(q25 - q5, 1e-6), y)])

    def background(self) -> np.ndarray:
        """(C, Y, X) float32 mean background, pooled in ``block``-sized bins and interpolated back
        to full size."""
        if self._sum is None:
            raise ValueError("no fields were added")
        return self._pooled(self._sum, self._count)

    def noise(self) -> np.ndarray:
        """(C, Y, X) float32 pixel-scale noise variance of the background (the mean squared
        horizontal second difference / 6), pooled like :meth:`background`: it grows linearly
        with the background above the dark offset (shot noise), which :func:`estimate_dark` uses."""
        if self._sum is None:
            raise ValueError("no fields were added")
        return self._pooled(self._sq, self._sqn)

    def _pooled(self, total: np.ndarray, count: np.ndarray) -> np.ndarray:
        c, y, x = self.shape
        b = self.block
        ny, nx = self.nbins
        out = np.empty((c, y, x), dtype=np.float32)
        for k in range(c):
            n = count[k].reshape(ny, nx)
            small = total[k].reshape(ny, nx) / np.maximum(n, 1)
            if not n.all():  # bins never background: nearest bin that was
                if not n.any():
                    small = np.zeros_like(small)
                else:
                    idx = ndi.distance_transform_edt(n == 0, return_distances=False, return_indices=True)
                    small = small[tuple(idx)]
            out[k] = upsample_grid(small, (y, x)) if b > 1 else small
        return out
