"""Classical nuclei and cell segmentation (CellProfiler-style, no GPU, no weights).

Nuclei: Gaussian smoothing, an automatic global threshold (Otsu or minimum cross-entropy) on a
background-flattened image, hole filling, declumping by a distance-transform watershed whose
minimum peak distance adapts to the typical nucleus size, and size filters.

Cells: one cell per nucleus, grown from the nuclei by a seeded watershed on the gradient of a
cytoplasm channel (RNA or AGP) inside that channel's foreground, like IdentifySecondaryObjects'
propagation.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, sobel, threshold_li, threshold_otsu
from skimage.measure import regionprops_table
from skimage.segmentation import clear_border, relabel_sequential, watershed

__all__ = ["segment_nuclei", "segment_cells"]

Threshold = Literal["otsu", "li"]


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (y, x) image; got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number):
        raise TypeError(f"{name} must be numeric; got dtype {image.dtype}")
    return image.astype(np.float32, copy=False)


def _threshold(image: np.ndarray, method: Threshold) -> float:
    if method == "otsu":
        return float(threshold_otsu(image))
    if method == "li":
        return float(threshold_li(image))
    raise ValueError(f"threshold {method!r} is not one of 'otsu', 'li'")


def segment_nuclei(
    dna: np.ndarray,
    *,
    sigma: float = 1.0,
    threshold: Threshold = "otsu",
    background_sigma: float | None = None,
    min_distance: int | None = None,
    min_area: int | None = None,
    max_area: int | None = None,
    exclude_border: bool = False,
) -> np.ndarray:
    """Label nuclei in a DNA (Hoechst) image.

    Parameters
    ----------
    dna : (Y, X) ndarray
        DNA channel, raw or illumination-corrected, any numeric dtype.
    sigma : float
        Gaussian smoothing before thresholding.
    threshold : {'otsu', 'li'}
        Global threshold on the log-scaled, background-flattened image ('li' is minimum
        cross-entropy).
    background_sigma : float, optional
        Scale of the smooth background removed before thresholding (handles uncorrected
        vignetting); default 1/8 of the shorter side. ``0`` disables.
    min_distance : int, optional
        Minimum distance between seeds when splitting touching nuclei; default 0.7 x the typical
        nucleus radius, estimated from the foreground components.
    min_area, max_area : int, optional
        Objects outside this pixel-area range are removed; default min is 15 % of the typical
        nucleus area (debris), no maximum.
    exclude_border : bool
        Remove nuclei touching the image border.

    Returns
    -------
    (Y, X) uint32 ndarray: 0 background, 1..N nuclei.
    """
    img = _check_image(dna, "dna")
    if float(img.max()) == float(img.min()):
        return np.zeros(img.shape, np.uint32)
    work = np.log1p(np.maximum(img - float(np.percentile(img, 0.5)), 0))
    if sigma > 0:
        work = gaussian(work, sigma=sigma, preserve_range=True)
    bg_sigma = min(img.shape) / 8 if background_sigma is None else background_sigma
    if bg_sigma > 0:
        # A low percentile filter is costly; subtract a heavily smoothed image of the darker half.
        below = np.minimum(work, np.median(work))
        work = work - gaussian(below, sigma=bg_sigma, preserve_range=True)
    mask = work > _threshold(work, threshold)
    mask = ndi.binary_fill_holes(ndi.binary_opening(mask, iterations=1))
    comp, n = ndi.label(mask)
    if n == 0:
        return np.zeros(img.shape, np.uint32)
    areas = np.bincount(comp.ravel())[1:]
    typical = float(np.median(areas[areas >= max(4, 0.2 * np.median(areas))]))
    radius = np.sqrt(typical / np.pi)
    md = min_distance if min_distance is not None else max(2, int(round(0.7 * radius)))
    dist = ndi.distance_transform_edt(mask)
    dist = gaussian(dist, sigma=max(0.5, radius / 6), preserve_range=True)
    peaks = peak_local_max(dist, min_distance=md, labels=comp, exclude_border=False)
    markers = np.zeros(img.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # components without a peak (tiny or flat) still get one marker
    seeded = np.unique(comp[tuple(peaks.T)]) if len(peaks) else np.array([], int)
    missing = np.setdiff1d(np.arange(1, n + 1), seeded)
    if missing.size:
        centers = ndi.maximum_position(dist, comp, missing)
        for k, c in enumerate(centers, start=len(peaks) + 1):
            markers[c] = k
    labels = watershed(-dist, markers, mask=mask)
    min_a = min_area if min_area is not None else max(4, int(0.15 * typical))
    sizes = np.bincount(labels.ravel())
    drop = sizes < min_a
    if max_area is not None:
        drop |= sizes > max_area
    drop[0] = False
    labels[drop[labels]] = 0
    if exclude_border:
        labels = clear_border(labels)
    return relabel_sequential(labels)[0].astype(np.uint32)


def segment_cells(
    nuclei_labels: np.ndarray,
    cyto: np.ndarray,
    *,
    sigma: float = 1.5,
    threshold: Threshold = "otsu",
    threshold_factor: float = 1.0,
    max_distance: float | None = None,
) -> np.ndarray:
    """Grow one cell per nucleus on a cytoplasm channel.

    Parameters
    ----------
    nuclei_labels : (Y, X) integer ndarray
        Output of :func:`segment_nuclei`.
    cyto : (Y, X) ndarray
        Cytoplasm channel (RNA or AGP).
    sigma : float
        Smoothing of ``cyto``.
    threshold, threshold_factor
        Cytoplasm foreground = smoothed log image above ``factor`` x the automatic threshold
        between background and cells.
    max_distance : float, optional
        Cells extend at most this far (px) from their nucleus; default 4 x the median nucleus
        radius.

    Returns
    -------
    (Y, X) uint32 ndarray where cell ``k`` contains nucleus ``k``; every nucleus gets exactly one
    cell.
    """
    nuclei = np.asarray(nuclei_labels)
    if not np.issubdtype(nuclei.dtype, np.integer):
        raise TypeError(f"nuclei_labels must be an integer label image; got dtype {nuclei.dtype}")
    img = _check_image(cyto, "cyto")
    if nuclei.shape != img.shape:
        raise ValueError(f"nuclei_labels shape {nuclei.shape} differs from cyto shape {img.shape}")
    if nuclei.max() == 0:
        return np.zeros(img.shape, np.uint32)
    work = np.log1p(np.maximum(img - float(np.percentile(img, 0.5)), 0))
    work = gaussian(work, sigma=sigma, preserve_range=True) if sigma > 0 else work
    lo = float(np.percentile(work, 1))
    thr = lo + threshold_factor * (_threshold(work, threshold) - lo)
    mask = (work > thr) | (nuclei > 0)
    if max_distance is None:
        areas = np.bincount(nuclei.ravel())[1:]
        max_distance = 4 * np.sqrt(np.median(areas[areas > 0]) / np.pi)
    dist_to_nucleus = ndi.distance_transform_edt(nuclei == 0)
    mask &= dist_to_nucleus <= max_distance
    elevation = sobel(work)
    cells = watershed(elevation, markers=nuclei.astype(np.int32), mask=mask)
    return cells.astype(np.uint32)


def object_table(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Label, centroid, bounding box and area of every object (a thin regionprops wrapper)."""
    return regionprops_table(labels, properties=("label", "centroid", "bbox", "area"))
