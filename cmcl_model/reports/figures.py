"""The pictures of the reports, as PNG bytes: crop composites and grids, training curves, rank
histograms, molecule drawings, the embedding map and per-plate QC heatmaps.

Each ``*_png`` function returns the bytes of one PNG (matplotlib's Agg backend, or Pillow for
crop grids); :func:`img_tag` embeds them in HTML as base64 so a report is one self-contained
file. :func:`phenotype_classes` names the ground-truth class a figure is coloured by.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cmcl_model.evaluation.metrics import ranks_fullpool
from pipeline.store.paths import CHANNELS, Store

__all__ = [
    "pyplot",
    "png_bytes",
    "img_tag",
    "crop_rgb",
    "crop_grid_png",
    "phenotype_classes",
    "training_curves_png",
    "normalize_rows",
    "rank_histograms_png",
    "molecules_png",
    "compound_crops",
    "embedding_map_png",
    "plate_qc_png",
]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    pyplot().close(fig)
    return buf.getvalue()


def crop_rgb(crops: np.ndarray, *, channels: Sequence[str] = ("AGP", "ER", "DNA")) -> np.ndarray:
    """RGB composite of raw crops: (k, C, S, S) uint16 -> (k, S, S, 3) float in [0, 1].

    ``channels`` name the red, green and blue sources (of :data:`pipeline.store.paths.CHANNELS`);
    each is ``log1p``-scaled and stretched between its 1st and 99.5th percentile over all
    ``k`` crops, so crops in one call are comparable.

    Raises
    ------
    ValueError
        If ``crops`` is not 4-D with one plane per channel, or a channel name is unknown.
    """
    x = np.asarray(crops)
    if x.ndim != 4 or x.shape[1] != len(CHANNELS):
        raise ValueError(f"expected crops of shape (k, {len(CHANNELS)}, S, S), got {x.shape}")
    bad = [c for c in channels if c not in CHANNELS]
    if bad:
        raise ValueError(f"unknown channels {bad}; known: {list(CHANNELS)}")
    out = np.zeros((x.shape[0], x.shape[2], x.shape[3], 3))
    for j, name in enumerate(channels):
        v = np.log1p(x[:, CHANNELS.index(name)].astype(np.float64))
        lo, hi = np.percentile(v, [1, 99.5]) if v.size else (0.0, 1.0)
        out[..., j] = np.clip((v - lo) / max(hi - lo, 1e-9), 0, 1)
    return out


def crop_grid_png(rows: Sequence[np.ndarray], labels: Sequence[str], *, tile: int = 64, label_width: int = 180) -> bytes:
    """PNG of a grid: one row per entry of ``rows`` ((k, C, S, S) uint16 raw crops, shown as
    :func:`crop_rgb` composites stretched jointly over all rows, each scaled to ``tile`` px),
    labelled on the left with ``labels``.

    Raises
    ------
    ValueError
        If ``rows`` and ``labels`` differ in length or ``rows`` is empty.
    """
    from PIL import Image, ImageDraw

    if len(rows) != len(labels) or not rows:
        raise ValueError(f"need one label per row of crops and at least one row, got {len(rows)} rows, {len(labels)} labels")
    rgb = crop_rgb(np.concatenate(rows))
    ncol = max(r.shape[0] for r in rows)
    gap = 2
    canvas = Image.new("RGB", (label_width + ncol * (tile + gap), len(rows) * (tile + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    at = 0
    for r, crops in enumerate(rows):
        y = gap + r * (tile + gap)
        draw.text((4, y + tile // 2 - 6), str(labels[r])[:44], fill="black")
        for c in range(crops.shape[0]):
            im = Image.fromarray((rgb[at + c] * 255).astype(np.uint8)).resize((tile, tile), Image.NEAREST)
            canvas.paste(im, (label_width + c * (tile + gap), y))
        at += crops.shape[0]
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


_SCALES = ("nuclear_area", "dna_intensity", "er_intensity", "rna_intensity", "agp_intensity", "mito_intensity", "cell_size")
_SHIFTS = ("toxicity", "texture", "mito_fragmentation")


def phenotype_classes(phenotypes: pd.DataFrame) -> pd.DataFrame:
    """Ground-truth phenotype class per well from a per-well phenotype table.

    Parameters
    ----------
    phenotypes : DataFrame
        ``Metadata_Plate``, ``Metadata_Well``, ``active`` and any of the morphology fields of
        :class:`pipeline.synthetic.Phenotype` (the generator's ``ground_truth/phenotypes.csv``).

    Returns
    -------
    DataFrame
        Columns ``Metadata_Plate``, ``Metadata_Well``, ``Phenotype_Class``: 'inactive' when the
        well's ``active`` flag is false, else the morphology field with the largest effect
        (``|log|`` of a multiplier, or a shift).

    Raises
    ------
    ValueError
        If a required column is missing.
    """
    missing = [c for c in ("Metadata_Plate", "Metadata_Well", "active") if c not in phenotypes.columns]
    if missing:
        raise ValueError(f"ground-truth phenotype table lacks columns {missing}; has {list(phenotypes.columns)}")
    df = phenotypes.reset_index(drop=True)
    eff = pd.DataFrame({f: np.abs(np.log(df[f].clip(lower=1e-9))) for f in _SCALES if f in df} | {f: df[f].abs() for f in _SHIFTS if f in df})
    active = df["active"].astype(bool)
    cls = np.where(active, eff.idxmax(axis=1), "inactive") if not eff.empty else np.where(active, "active", "inactive")
    return pd.DataFrame({"Metadata_Plate": df["Metadata_Plate"].astype(str), "Metadata_Well": df["Metadata_Well"], "Phenotype_Class": cls})


def training_curves_png(run_dir: Path) -> bytes | None:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    plt = pyplot()
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(df["epoch"], df["train_loss"], label="train")
    if "val_loss" in df:
        ax[0].plot(df["epoch"], df["val_loss"], label="val")
    ax[0].set_xlabel("epoch"), ax[0].set_ylabel("loss"), ax[0].legend()
    for col in ("val_hit@10", "val_mrr"):
        if col in df:
            ax[1].plot(df["epoch"], df[col], label=col.replace("_", " "))
    ax[1].set_xlabel("epoch"), ax[1].set_ylim(0, 1), ax[1].legend()
    fig.tight_layout()
    return png_bytes(fig)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def rank_histograms_png(graph: np.ndarray, image: np.ndarray) -> bytes:
    plt = pyplot()
    sim = normalize_rows(graph) @ normalize_rows(image).T
    n = sim.shape[0]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
    for a, (d, s) in zip(ax, (("graph_to_image", sim), ("image_to_graph", sim.T))):
        r = ranks_fullpool(s)
        a.hist(r, bins=np.arange(0.5, n + 1.5, max(1, n // 30)), color="#4477aa")
        a.axhline(len(r) / n * max(1, n // 30), color="grey", ls="--", label="chance (uniform)")
        a.set_title(f"{d}: rank of the positive among {n}", fontsize=9)
        a.set_xlabel("rank (1 = best)")
        a.legend(fontsize=7)
    ax[0].set_ylabel("queries")
    fig.tight_layout()
    return png_bytes(fig)


def molecules_png(smiles: Sequence[str], legends: Sequence[str]) -> bytes:
    from rdkit import Chem
    from rdkit.Chem import Draw

    img = Draw.MolsToGridImage([Chem.MolFromSmiles(s) for s in smiles], molsPerRow=len(smiles), subImgSize=(200, 160), legends=list(legends))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def compound_crops(dataset, idx: int, k: int) -> np.ndarray:
    pairs = dataset.crops[idx][:k]
    out = []
    for code, row in pairs:
        out.append(dataset.readers[dataset.plates[int(code)]].read(np.array([row])))
    return np.concatenate(out)


def embedding_map_png(dataset, image: np.ndarray, ground_truth: pd.DataFrame | None) -> tuple[bytes, str]:
    from sklearn.decomposition import PCA

    plt = pyplot()
    xy = PCA(n_components=2, random_state=0).fit_transform(normalize_rows(image)) if image.shape[0] > 2 else np.zeros((image.shape[0], 2))
    gt = phenotype_classes(ground_truth) if ground_truth is not None else None
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    if gt is not None:
        wells = [(w.split("/")[0], w.split("/")[1]) for w in (ws[0] for ws in dataset.wells)]
        look = gt.set_index(["Metadata_Plate", "Metadata_Well"])["Phenotype_Class"]
        cls = np.array([look.get(w, "unknown") for w in wells])
        for name in sorted(set(cls)):
            m = cls == name
            ax.scatter(xy[m, 0], xy[m, 1], s=14, label=f"{name} ({m.sum()})", alpha=0.8)
        ax.legend(fontsize=7, loc="best")
        what = "ground-truth phenotype class (first well of each compound)"
    else:
        counts = np.array([len(c) / max(1, len(set(w))) for c, w in zip(dataset.crops, dataset.wells)])
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=counts, s=14, cmap="viridis")
        fig.colorbar(sc, ax=ax, label="cells per well")
        what = "cells per well (no ground truth given)"
    ax.set_xlabel("PC 1"), ax.set_ylabel("PC 2")
    ax.set_title(f"test compounds' image embeddings (PCA), n={image.shape[0]}", fontsize=9)
    fig.tight_layout()
    return png_bytes(fig), what


def plate_qc_png(store: Store) -> bytes | None:
    cells = store.read("cells", ["Metadata_Plate", "Metadata_Well"])
    if cells.empty:
        return None
    plt = pyplot()
    plates = sorted(cells["Metadata_Plate"].unique())
    counts = cells.groupby(["Metadata_Plate", "Metadata_Well"]).size()
    rows = [ord(w[0]) - 65 for w in counts.index.get_level_values(1)]
    cols = [int(w[1:]) - 1 for w in counts.index.get_level_values(1)]
    nr, nc = (16, 24) if max(rows) >= 8 or max(cols) >= 12 else (8, 12)
    ncols = min(3, len(plates))
    nrows = -(-len(plates) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.0 * nrows), squeeze=False)
    vmax = float(counts.max())
    for ax, plate in zip(axes.ravel(), plates):
        grid = np.full((nr, nc), np.nan)
        for w, v in counts.loc[plate].items():
            grid[ord(w[0]) - 65, int(w[1:]) - 1] = v
        im = ax.imshow(grid, cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(f"{plate}: cells per well (blank = none)", fontsize=8)
        ax.set_xticks(range(0, nc, 4), [str(c + 1) for c in range(0, nc, 4)], fontsize=6)
        ax.set_yticks(range(nr), [chr(65 + r) for r in range(nr)], fontsize=6)
        fig.colorbar(im, ax=ax, shrink=0.8)
    for ax in axes.ravel()[len(plates):]:
        ax.axis("off")
    fig.tight_layout()
    return png_bytes(fig)
