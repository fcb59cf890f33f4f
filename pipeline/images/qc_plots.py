"""Pictures of a plate for quality control: per-well heatmaps and a field with its outlines.

Pure functions from tables and arrays to images (numpy RGB arrays or matplotlib figures);
saving is left to the caller.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from skimage.segmentation import find_boundaries

from pipeline.plates.discovery import split_well
from pipeline.store.paths import CHANNELS

__all__ = ["well_summary", "plate_heatmaps", "field_composite"]

# display colours (RGB) of DNA, ER, RNA, AGP, Mito in the composite
_COLOURS = np.array([[0.2, 0.4, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 1.0]])


def well_summary(platemap: pd.DataFrame, cells: pd.DataFrame, quarantine: pd.DataFrame) -> pd.DataFrame:
    """One row per well of the plate map: cells, mean cell intensity per channel, quarantined images.

    Returns
    -------
    DataFrame with ``Metadata_Well``, ``Metadata_ControlType``, ``Count_Cells``,
    ``Intensity_Mean_<channel>`` and ``Count_Quarantined``, sorted by well.
    """
    agg = cells.groupby("Metadata_Well").agg(
        Count_Cells=("Metadata_CropIndex", "size"),
        **{f"Intensity_Mean_{c}": (f"Intensity_Mean_{c}", "mean") for c in CHANNELS})
    q = quarantine.dropna(subset=["Metadata_Well"]).groupby("Metadata_Well").size().rename("Count_Quarantined")
    out = platemap[["Metadata_Well", "Metadata_ControlType"]].set_index("Metadata_Well").join(agg).join(q)
    out["Count_Cells"] = out["Count_Cells"].fillna(0).astype(int)
    out["Count_Quarantined"] = out["Count_Quarantined"].fillna(0).astype(int)
    return out.reset_index().sort_values("Metadata_Well", ignore_index=True)


def _grid(summary: pd.DataFrame, column: str, shape: tuple[int, int]) -> np.ndarray:
    grid = np.full(shape, np.nan)
    for well, value in zip(summary["Metadata_Well"], summary[column]):
        r, c = split_well(well)
        grid[ord(r) - ord("A"), c - 1] = value
    return grid


def plate_heatmaps(summary: pd.DataFrame, *, title: str = ""):
    """A matplotlib figure of plate heatmaps: cells per well, quarantined images, channel intensities.

    The plate shape (8x12 or 16x24) is inferred from the wells present.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(ord(split_well(w)[0]) - ord("A") + 1 for w in summary["Metadata_Well"])
    cols = max(split_well(w)[1] for w in summary["Metadata_Well"])
    shape = (16, 24) if rows > 8 or cols > 12 else (8, 12)
    panels = ["Count_Cells", "Count_Quarantined", *[f"Intensity_Mean_{c}" for c in CHANNELS]]
    fig, axes = plt.subplots(2, 4, figsize=(17, 6.5))
    for ax, col in zip(axes.flat, panels):
        im = ax.imshow(_grid(summary, col, shape), cmap="magma" if col.startswith("Count") else "viridis")
        ax.set_title(col.replace("Intensity_Mean_", "mean ").replace("Count_", "").lower())
        ax.set_xticks(range(0, shape[1], 2 if shape[1] > 12 else 1),
                      [str(i + 1) for i in range(0, shape[1], 2 if shape[1] > 12 else 1)], fontsize=6)
        ax.set_yticks(range(shape[0]), [chr(ord("A") + i) for i in range(shape[0])], fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.035)
    neg = summary["Metadata_ControlType"].eq("negcon")
    axes.flat[-1].axis("off")
    axes.flat[-1].text(0, 0.5, f"{len(summary)} wells\n{int(neg.sum())} DMSO wells\n"
                       f"{int(summary['Count_Cells'].sum())} cells\n{int(summary['Count_Quarantined'].sum())} "
                       "quarantined images", fontsize=11, va="center")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def field_composite(image: np.ndarray, nuclei: np.ndarray | None = None, cells: np.ndarray | None = None,
                    *, percentile: float = 99.5) -> np.ndarray:
    """An RGB uint8 composite of a (C, Y, X) field with nucleus (white) and cell (cyan) outlines."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, Y, X); got shape {image.shape}")
    lo = np.percentile(image, 1, axis=(1, 2), keepdims=True)
    hi = np.percentile(image, percentile, axis=(1, 2), keepdims=True)
    norm = np.clip((image - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
    rgb = np.tensordot(norm, _COLOURS[: image.shape[0]], axes=([0], [0])) / 1.6
    rgb = np.clip(rgb, 0, 1)
    if cells is not None:
        rgb[find_boundaries(cells, mode="inner")] = (0.0, 0.9, 0.9)
    if nuclei is not None:
        rgb[find_boundaries(nuclei, mode="inner")] = (1.0, 1.0, 1.0)
    return (rgb * 255).astype(np.uint8)
