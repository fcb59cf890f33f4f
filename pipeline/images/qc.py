"""Per-field image QC and analysis choices: the focus score of a field and the stain cells are
grown on.

:func:`focus_score` rates how sharp a field's nuclei are (ingestion flags fields far below the
plate's median as out of focus); :func:`cyto_channel` picks the cytoplasm stain a plate has.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from numba import njit
from scipy import ndimage as ndi

__all__ = ["focus_score", "cyto_channel", "CytoChannel", "CYTO_CHANNELS", "CYTO_PREFERENCE"]


def focus_score(dna: np.ndarray, nuclei: np.ndarray) -> float:
    """Sharpness of the nuclei's edges, about one over the edge's width in pixels: per nucleus,
    the median Sobel gradient on its boundary pixels over its contrast (its mean DNA minus the
    median outside all nuclei); the field's score is the median over nuclei, so one blurred
    object (debris, a mitotic cell) does not decide it. Unlike the variance of the Laplacian it
    depends neither on how many nuclei a field holds nor on a few saturated specks (on the
    generator's plates the Laplacian's range among in-focus fields was 0.4-75 and overlapped
    the defocused ones'; this score's is ~0.38-0.43 against ~0.18-0.20).

    Parameters
    ----------
    dna : (Y, X) ndarray
        The field's (illumination-corrected) DNA channel.
    nuclei : (Y, X) integer ndarray
        Its nucleus labels (0 background).

    Returns
    -------
    float
        The field's score; NaN without nuclei.
    """
    x = np.ascontiguousarray(dna, np.float32)
    lab = np.ascontiguousarray(nuclei)
    labels, gx, gy, sums, counts = _boundary_sobel(x, lab, int(lab.max()))
    fg = lab[::4, ::4] > 0
    outside = x[::4, ::4][~fg]
    if labels.size == 0 or outside.size == 0:
        return float("nan")
    ids = np.unique(labels)
    edge = np.asarray(ndi.median(np.hypot(gx, gy) / 8, labels=labels, index=ids), np.float64)
    contrast = sums[ids] / counts[ids] - float(np.median(outside))
    return float(np.median(edge / np.maximum(contrast, 1e-6)))


@njit(cache=True)
def _on_boundary(lab, r, c, k):
    """Pixel (r, c) of object ``k`` touches another label (4-neighbours), away from the edge."""
    h, w = lab.shape
    return 0 < r < h - 1 and 0 < c < w - 1 and (
        lab[r - 1, c] != k or lab[r + 1, c] != k or lab[r, c - 1] != k or lab[r, c + 1] != k)


@njit(cache=True)
def _boundary_sobel(x, lab, n_lab):
    """For :func:`focus_score`, in one pass: the label and the Sobel gradients (float32) of
    every boundary pixel of an object away from the image's edge (a pixel whose 4-neighbours
    hold another label), in raster order, and each object's pixel sum (float64, raster order)
    and count (labels up to ``n_lab``)."""
    h, w = lab.shape
    sums = np.zeros(n_lab + 1)
    counts = np.zeros(n_lab + 1, np.int64)
    n = 0
    for r in range(h):
        for c in range(w):
            k = lab[r, c]
            if k == 0:
                continue
            sums[k] += x[r, c]
            counts[k] += 1
            if _on_boundary(lab, r, c, k):
                n += 1
    labels = np.empty(n, lab.dtype)
    gx = np.empty(n, np.float32)
    gy = np.empty(n, np.float32)
    two = np.float32(2)
    i = 0
    for r in range(1, h - 1):
        for c in range(1, w - 1):
            k = lab[r, c]
            if k == 0 or not _on_boundary(lab, r, c, k):
                continue
            labels[i] = k
            gx[i] = (x[r - 1, c + 1] + two * x[r, c + 1] + x[r + 1, c + 1]) - (
                x[r - 1, c - 1] + two * x[r, c - 1] + x[r + 1, c - 1])
            gy[i] = (x[r + 1, c - 1] + two * x[r + 1, c] + x[r + 1, c + 1]) - (
                x[r - 1, c - 1] + two * x[r - 1, c] + x[r - 1, c + 1])
            i += 1
    return labels, gx, gy, sums, counts


#: The cytoplasm stains a user may prefer for growing cells (``IngestSettings.cyto_channel``).
CytoChannel = Literal["RNA", "AGP"]
CYTO_CHANNELS: tuple[str, ...] = get_args(CytoChannel)

#: Cytoplasm stains for growing cells, best first (AGP outlines cells; RNA and ER fill them).
CYTO_PREFERENCE: tuple[str, ...] = ("AGP", "RNA", "ER", "Mito")


def cyto_channel(channels: tuple[str, ...], preferred: str = "AGP") -> str | None:
    """The channel cells are grown on: ``preferred`` if the plate has it, else the best one it
    has (:data:`CYTO_PREFERENCE`), else None (a DNA-only plate: cells are the nuclei).

    Parameters
    ----------
    channels : tuple of str
        The plate's channel names, e.g. ``("DNA", "ER", "RNA", "AGP", "Mito")``.
    preferred : str, default 'AGP'
        The stain asked for (one of :data:`CYTO_CHANNELS`).
    """
    for c in (preferred, *CYTO_PREFERENCE):
        if c in channels:
            return c
    return None

