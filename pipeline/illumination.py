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
    with the dark offset given, its error against the true flat field is 0.4-1.3 % per channel
    (mean: 4.5-10 %, median: up to 50 %) and it flattens the background 7-13x
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
vendor's flat-field profile (Harmony's, :func:`pipeline.acquisition.flatfield_image`).

The combined image is then smoothed with a large median filter (computed on a downsampled image and
upsampled back, which is what the JUMP recipe does for speed), rescaled so that its minimum is 1,
and applied by division. A corrected image is thus
never brighter than the raw one, and a flat field is left unchanged.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from skimage.transform import resize

__all__ = ["METHODS", "estimate", "estimate_dark", "flatness", "compare_profiles", "smooth", "apply", "subsample",
           "MeanAccumulator", "BackgroundAccumulator"]

Method = Literal["mean", "median", "background"]
#: Valid ``method`` values of :func:`estimate`.
METHODS: tuple[str, ...] = ("mean", "median", "background")


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
    func = resize(small, combined.shape, order=1, preserve_range=True).astype(np.float32)
    low = np.percentile(func, robust_percentile)
    if not np.isfinite(low) or low <= 0:
        low = float(func[func > 0].min()) if np.any(func > 0) else 1.0
    return np.maximum(func / low, 1.0).astype(np.float32)


def estimate(
    images: np.ndarray,
    *,
    method: Method = "background",
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
    from scipy.stats import theilslopes

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
    with np.errstate(invalid="ignore"):  # its confidence interval is NaN for an exact line
        g, a = theilslopes(v, b)[:2]
    if not np.isfinite(g) or g <= 0:
        return 0.0
    return float(np.clip(-a / g, 0.0, max(top, 0.0)))


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
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(map(repr, METHODS))}")


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
    return out / function


class MeanAccumulator:
    """Streaming per-pixel mean of (C, Y, X) fields: the plate is never held in memory.

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
        field = np.asarray(field, dtype=np.float64)
        if self._sum is None:
            self._sum = np.zeros_like(field)
        elif field.shape != self._sum.shape:
            raise ValueError(f"field shape {field.shape} differs from earlier fields {self._sum.shape}")
        self._sum += field
        self.count += 1

    def mean(self) -> np.ndarray:
        if self._sum is None:
            raise ValueError("no fields were added")
        return (self._sum / self.count).astype(np.float32)


class BackgroundAccumulator:
    """Streaming per-pixel mean of the background pixels of (C, Y, X) fields.

    In each field and channel, after subtracting ``dark``, a pixel is background when it is below
    ``p25 + k * (p25 - p5)`` of that plane (``k`` = ``spread``): cells cover well under 75 % of a
    Cell Painting field and are far brighter than the background, so the 25th percentile lies in
    the background and ``p25 - p5`` measures its noise. Sums and counts are kept per pixel;
    :meth:`background` pools them in ``block`` x ``block`` bins so that pixels covered by cells in
    every field still get a value.

    Parameters
    ----------
    dark : float
        Dark offset subtracted from every pixel.
    spread : float
        Threshold width in units of ``p25 - p5``.
    grid : int
        Blocks per side for the local threshold (:meth:`_threshold`); 1 = one global threshold.
    """

    def __init__(self, *, dark: float = 0.0, spread: float = 3.0, grid: int = 8) -> None:
        self.dark = float(dark)
        self.spread = float(spread)
        self.grid = int(grid)
        self._sum: np.ndarray | None = None
        self._count: np.ndarray | None = None
        self.count = 0

    def add(self, field: np.ndarray) -> None:
        """Add one (C, Y, X) field."""
        field = np.asarray(field, dtype=np.float32)
        if field.ndim != 3:
            raise ValueError(f"expected a (c, y, x) field; got shape {field.shape}")
        if self._sum is None:
            self._sum = np.zeros(field.shape, dtype=np.float64)
            self._count = np.zeros(field.shape, dtype=np.int32)
            self._sq = np.zeros(field.shape, dtype=np.float64)
            self._sqn = np.zeros(field.shape, dtype=np.int32)
        elif field.shape != self._sum.shape:
            raise ValueError(f"field shape {field.shape} differs from earlier fields {self._sum.shape}")
        for c, plane in enumerate(field):
            plane = plane - np.float32(self.dark)
            mask = plane <= self._threshold(plane, self.spread)
            self._sum[c] += np.where(mask, plane, 0.0)
            self._count[c] += mask
            # pixel-scale noise of the background (photon transfer, see estimate_dark): squared
            # deviation from the 3 x 3 mean, under a threshold twice as wide (a tighter one cuts
            # the noise's upper tail and biases the variance low), where the whole 3 x 3
            # neighbourhood is below it
            inner = ndi.minimum_filter(plane <= self._threshold(plane, 2 * self.spread), size=3)
            hp = plane - ndi.uniform_filter(plane, size=3)
            self._sq[c] += np.where(inner, hp * hp, 0.0)
            self._sqn[c] += inner
        self.count += 1

    def _threshold(self, plane: np.ndarray, spread: float) -> np.ndarray | float:
        """``p25 + spread * (p25 - p5)`` of the plane, and of each of its ``grid`` x ``grid``
        blocks (upsampled), whichever is lower: the global value alone lies far above the
        background of vignetted corners (there ``p25 - p5`` measures the vignetting, not the
        noise) and lets dim cells into their background; a block's own value is wrong where cells
        cover the whole block."""
        p5, p25 = np.percentile(plane, [5, 25])
        t = p25 + spread * max(p25 - p5, 1e-6)
        g = self.grid
        y, x = plane.shape
        by, bx = y // g, x // g
        if g < 2 or by < 8 or bx < 8:
            return t
        blocks = plane[:g * by, :g * bx].reshape(g, by, g, bx).transpose(0, 2, 1, 3).reshape(g, g, -1)
        q5, q25 = np.percentile(blocks, [5, 25], axis=-1)
        local = q25 + spread * np.maximum(q25 - q5, 1e-6)
        local = resize(local, plane.shape, order=1, mode="edge", preserve_range=True)
        return np.minimum(local, t)

    def background(self, *, block: int | None = None) -> np.ndarray:
        """(C, Y, X) float32 mean background, pooled in ``block``-sized bins (default ~1/64 of
        the shorter side) and interpolated back to full size."""
        if self._sum is None:
            raise ValueError("no fields were added")
        return self._pooled(self._sum, self._count, block)

    def noise(self, *, block: int | None = None) -> np.ndarray:
        """(C, Y, X) float32 pixel-scale noise variance of the background (x 8/9, the variance
        of a pixel minus its 3 x 3 mean), pooled like :meth:`background`: it grows linearly with
        the background above the dark offset (shot noise), which :func:`estimate_dark` uses."""
        if self._sum is None:
            raise ValueError("no fields were added")
        return self._pooled(self._sq, self._sqn, block)

    def _pooled(self, total: np.ndarray, count: np.ndarray, block: int | None) -> np.ndarray:
        c, y, x = total.shape
        b = block or max(1, min(y, x) // 64)
        ny, nx = -(-y // b), -(-x // b)
        pad = ((0, 0), (0, ny * b - y), (0, nx * b - x))
        s = np.pad(total, pad).reshape(c, ny, b, nx, b).sum(axis=(2, 4))
        n = np.pad(count, pad).reshape(c, ny, b, nx, b).sum(axis=(2, 4))
        out = np.empty((c, y, x), dtype=np.float32)
        for k in range(c):
            small = s[k] / np.maximum(n[k], 1)
            if not n[k].all():  # bins never background: nearest bin that was
                idx = ndi.distance_transform_edt(n[k] == 0, return_distances=False, return_indices=True)
                small = small[tuple(idx)]
            out[k] = resize(small, (y, x), order=1, preserve_range=True) if b > 1 else small
        return out
