"""How close a field is to the real JUMP fields the generator is calibrated to.

:func:`field_stats` measures one 5-channel field with cmcl's own segmentation (the same code on
real and generated fields): cell count, nuclear size and shape, how many nuclei and cells touch,
cell size and shape, DNA texture, and per channel the background level, its spread (p5 / p50),
the signal (p99 / p50) and the cytoplasm's contrast. :data:`TOLERANCES` says, per statistic, how
far the generator may be from the real values; :func:`compare` applies them.
``benchmarks/realism.py`` writes the table (``docs/realism.md``); ``tests/pipeline/
test_realism.py`` holds the real values as constants and checks default fields against them.

Pixel statistics are in pixels of the real fields (0.598 um): a field rendered at another scale
passes ``scale`` (real pixels per pixel, ``REAL_NUCLEUS_RADIUS / nucleus_radius``), which
multiplies areas by ``scale**2`` and brings the cell count to a real field's area (1080 x 1080).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import regionprops

from pipeline.images.segmentation.classical import segment_cells, segment_nuclei
from pipeline.store.paths import CHANNELS

__all__ = ["REAL_FIELD_SIZE", "Tolerance", "TOLERANCES", "REFERENCE", "field_stats", "mean_stats", "compare"]

#: Edge (px) of the real fields.
REAL_FIELD_SIZE = 1080
#: The real field whose density is typical (39 cells); the other one (BR00121482 A01, an edge
#: well) holds 3 cells, so its density-dependent statistics (counts, cover, p99) are not targets.
REFERENCE = "BR00143976 C03 f3"


@dataclass(frozen=True)
class Tolerance:
    """The accepted interval of a statistic, from the real values.

    ``kind``: ``'factor'``: ``[min / width, max * width]`` of the real values; ``'plus'``:
    ``[min - width, max + width]``. ``reference_only``: use only the value of
    :data:`REFERENCE` (statistics that depend on the cell density).
    """

    kind: Literal["factor", "plus"]
    width: float
    reference_only: bool = False

    def interval(self, real: dict[str, float]) -> tuple[float, float]:
        values = [v for k, v in real.items() if not self.reference_only or k == REFERENCE]
        values = [v for v in values if np.isfinite(v)]
        lo, hi = min(values), max(values)
        if self.kind == "factor":
            return lo / self.width, hi * self.width
        return max(lo - self.width, 0.0), hi + self.width

    def describe(self) -> str:
        rng = f"{REFERENCE.split()[0]} {REFERENCE.split()[1]}" if self.reference_only else "real range"
        return f"{rng} ×/÷ {self.width:g}" if self.kind == "factor" else f"{rng} ± {self.width:g}"


def _tolerances() -> dict[str, Tolerance]:
    t = {
        "nuclei per field": Tolerance("factor", 1.5, reference_only=True),
        "nuclear area median (px)": Tolerance("factor", 1.2),
        "nuclear area p10 / median": Tolerance("plus", 0.12, reference_only=True),
        "nuclear area p90 / median": Tolerance("plus", 0.15, reference_only=True),
        "nucleus aspect ratio (median)": Tolerance("plus", 0.1),
        "touching nuclei": Tolerance("plus", 0.1),
        "touching cells": Tolerance("plus", 0.12, reference_only=True),
        "cell area / field": Tolerance("factor", 1.5, reference_only=True),
        "cell / nucleus area (median)": Tolerance("factor", 1.3),
        "cell aspect ratio (median)": Tolerance("plus", 0.25),
        "cell solidity (median)": Tolerance("plus", 0.05),
        "DNA texture (CV in nuclei)": Tolerance("factor", 1.2),
    }
    for name in CHANNELS:
        t[f"{name} background p50 (ADU)"] = Tolerance("factor", 1.25)
        t[f"{name} p5 / p50"] = Tolerance("plus", 0.1)
        t[f"{name} p99 / p50"] = Tolerance("factor", 1.5, reference_only=True)
        if name != "DNA":
            t[f"{name} cytoplasm / background"] = Tolerance("factor", 1.5, reference_only=True)
    return t


#: Statistic name -> accepted deviation from the real fields.
TOLERANCES: dict[str, Tolerance] = _tolerances()


def _touching(labels: np.ndarray) -> float:
    """Fraction of objects whose one-pixel dilation meets another object."""
    n = int(labels.max())
    if n == 0:
        return float("nan")
    grown = ndi.grey_dilation(labels, size=3)
    touch = (grown != labels) & (labels > 0) & (grown > 0)
    shrunk = ndi.grey_erosion(np.where(labels > 0, labels, labels.max() + 1), size=3)
    touch |= (shrunk != labels) & (labels > 0) & (shrunk <= n)
    return len(np.unique(labels[touch])) / n


def field_stats(image: np.ndarray, *, scale: float = 1.0) -> dict[str, float]:
    """The statistics of :data:`TOLERANCES` for one (5, Y, X) field in :data:`CHANNELS` order.

    Parameters
    ----------
    image : (5, Y, X) ndarray
        Raw field (no illumination correction), any numeric dtype.
    scale : float
        Real-field pixels per pixel of ``image`` (1 for a field at the real scale).

    Returns
    -------
    dict
        Statistic name -> value (NaN where a field has no nuclei).
    """
    image = np.asarray(image).astype(np.float32)
    y, x = image.shape[1:]
    nuclei = segment_nuclei(image[0])
    cells = segment_cells(nuclei, image[CHANNELS.index("AGP")])
    n = int(nuclei.max())
    nan = float("nan")
    out: dict[str, float] = {"nuclei per field": n * REAL_FIELD_SIZE**2 / (y * x * scale**2)}
    areas = np.bincount(nuclei.ravel(), minlength=n + 1)[1:].astype(float)
    cell_areas = np.bincount(cells.ravel(), minlength=n + 1)[1:n + 1].astype(float)
    med = float(np.median(areas)) if n else nan
    out["nuclear area median (px)"] = med * scale**2
    out["nuclear area p10 / median"] = float(np.percentile(areas, 10)) / med if n else nan
    out["nuclear area p90 / median"] = float(np.percentile(areas, 90)) / med if n else nan
    nuc_props, cell_props = regionprops(nuclei), regionprops(cells)

    def aspect(props) -> float:
        return float(np.median([p.axis_major_length / max(p.axis_minor_length, 1.0) for p in props])) if props else nan

    out["nucleus aspect ratio (median)"] = aspect(nuc_props)
    out["touching nuclei"] = _touching(nuclei)
    out["touching cells"] = _touching(cells)
    out["cell area / field"] = float((cells > 0).mean())
    out["cell / nucleus area (median)"] = float(np.median(cell_areas / np.maximum(areas, 1))) if n else nan
    out["cell aspect ratio (median)"] = aspect(cell_props)
    out["cell solidity (median)"] = float(np.median([p.solidity for p in cell_props])) if cell_props else nan
    if n:
        idx = np.arange(1, n + 1)
        mean = ndi.mean(image[0], nuclei, idx)
        sd = ndi.standard_deviation(image[0], nuclei, idx)
        out["DNA texture (CV in nuclei)"] = float(np.mean(sd / np.maximum(mean, 1e-6)))
    else:
        out["DNA texture (CV in nuclei)"] = nan
    # background: pixels more than half a nucleus radius from any cell
    radius = np.sqrt(med / np.pi) if n else 10.0
    far = ~ndi.binary_dilation(cells > 0, iterations=max(1, int(round(0.5 * radius))))
    cyto = (cells > 0) & (nuclei == 0)
    for c, name in enumerate(CHANNELS):
        p5, p50, p99 = np.percentile(image[c], [5, 50, 99])
        out[f"{name} background p50 (ADU)"] = float(p50)
        out[f"{name} p5 / p50"] = float(p5 / max(p50, 1e-6))
        out[f"{name} p99 / p50"] = float(p99 / max(p50, 1e-6))
        if name != "DNA":
            bg = float(np.median(image[c][far])) if far.any() else nan
            out[f"{name} cytoplasm / background"] = float(np.median(image[c][cyto])) / bg if cyto.any() else nan
    return out


def mean_stats(stats: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each statistic over fields (NaNs ignored)."""
    return {k: float(np.nanmean([s[k] for s in stats])) for k in stats[0]}


def compare(synthetic: dict[str, float], real: dict[str, dict[str, float]]) -> list[dict[str, object]]:
    """Each statistic of :data:`TOLERANCES`: real values, synthetic value, interval, pass.

    Parameters
    ----------
    synthetic : dict
        Statistic -> value of the generator (e.g. :func:`mean_stats` of several fields).
    real : dict
        Real field name -> its :func:`field_stats`; must include :data:`REFERENCE`.

    Returns
    -------
    list of dict
        Keys ``statistic``, ``real`` (field name -> value), ``synthetic``, ``interval``
        (lo, hi), ``tolerance`` (text) and ``ok``.
    """
    rows = []
    for name, tol in TOLERANCES.items():
        values = {field: stats[name] for field, stats in real.items()}
        lo, hi = tol.interval(values)
        value = synthetic[name]
        rows.append({"statistic": name, "real": values, "synthetic": value, "interval": (lo, hi),
                     "tolerance": tol.describe(), "ok": bool(lo <= value <= hi)})
    return rows
