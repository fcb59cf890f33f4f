"""Illumination correction in the manner of CellProfiler's CorrectIlluminationCalculate/Apply.

Per plate and channel the fields are combined (mean, as CellProfiler's "Each: All" mode, or a
per-pixel median), smoothed with a large median filter (computed on a downsampled image and
upsampled back, which is what the JUMP recipe does for speed), rescaled so that its robust minimum
(2nd percentile) is 1 (values floored at 1), and applied by division. A corrected image is thus
never brighter than the raw one, and a flat field is left unchanged.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from skimage.transform import resize

__all__ = ["estimate", "smooth", "apply", "MeanAccumulator"]


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
    robust_percentile: float = 2.0,
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
        The function is divided by this percentile of itself and floored at 1.

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
    method: Literal["mean", "median"] = "mean",
    filter_fraction: float = 1 / 8,
    downsample: int | None = None,
    robust_percentile: float = 2.0,
) -> np.ndarray:
    """Illumination function of one channel from a stack of its fields.

    Parameters
    ----------
    images : (n_fields, Y, X) ndarray
        Fields of one channel of one plate.
    method : {'mean', 'median'}
        How fields are combined per pixel: the mean (CellProfiler) or the median (robust to a
        few bright or debris-laden fields, accurate with a dozen fields).

    Returns
    -------
    (Y, X) float32 ndarray, values >= 1. Divide raw images by it (:func:`apply`).
    """
    images = _check_stack(images)
    if method == "mean":
        combined = images.mean(axis=0, dtype=np.float64)
    elif method == "median":
        combined = np.median(images, axis=0)
    else:
        raise ValueError(f"method {method!r} is not one of 'mean', 'median'")
    return smooth(combined, filter_fraction=filter_fraction, downsample=downsample,
                  robust_percentile=robust_percentile)


def apply(image: np.ndarray, function: np.ndarray) -> np.ndarray:
    """Correct ``image`` (Y, X) or (C, Y, X) by dividing by ``function`` of the same shape.

    Returns
    -------
    float32 ndarray of ``image``'s shape.
    """
    image = np.asarray(image)
    function = np.asarray(function, dtype=np.float32)
    if image.shape != function.shape:
        raise ValueError(f"image shape {image.shape} does not match illumination function shape {function.shape}")
    return image.astype(np.float32) / function


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
