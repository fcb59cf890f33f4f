"""Real Cell Painting fields beside the generator's: the statistics a test bench should match.

Measures, with the same code on both, the real Phenix fields in ``tests/data`` and default
generated fields (:func:`pipeline.synthetic.render_field`, 1080 px, DMSO):

* nuclei per field, nuclear area (median and 10-90 % range, px), fraction of nuclei touching
  another nucleus, fraction of cells touching another cell (cmcl's segmentation on both);
* per channel the background (5th and 50th percentile) and the signal (99th percentile / median);
* texture: mean over nuclei of the coefficient of variation of DNA inside the nucleus.

Writes a Markdown table and a side-by-side montage (real | generated, DNA blue, AGP red, RNA
green, each scaled to its 1st-99.8th percentile). Run:
``python benchmarks/realism.py [--out docs] [--fields 2]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

from pipeline.segmentation import segment_cells, segment_nuclei
from pipeline.store import CHANNELS
from pipeline.synthetic import DMSO, illumination_fields, render_field

#: Vendor channel number of each stain in the two real exports (from the Harmony index of
#: BR00121482 and the CellProfiler table of BR00143976).
REAL = {"BR00121482 A01 f1": ("phenix_BR00121482", "r01c01f01p01", {"DNA": 5, "ER": 4, "RNA": 3, "AGP": 2, "Mito": 1}),
        "BR00143976 C03 f3": ("phenix_BR00143976_C03", "r03c03f03p01", {"DNA": 5, "ER": 2, "RNA": 6, "AGP": 3, "Mito": 4})}


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


def field_stats(image: np.ndarray) -> dict[str, float]:
    """Statistics of one (5, Y, X) field in :data:`CHANNELS` order."""
    image = image.astype(np.float32)
    nuclei = segment_nuclei(image[0])
    cells = segment_cells(nuclei, image[CHANNELS.index("AGP")])
    areas = np.bincount(nuclei.ravel())[1:]
    areas = areas[areas > 0]
    out = {"nuclei per field": float(nuclei.max()),
           "nuclear area median (px)": float(np.median(areas)) if areas.size else np.nan,
           "nuclear area p10-p90 (px)": (float(np.percentile(areas, 10)), float(np.percentile(areas, 90)))
           if areas.size else (np.nan, np.nan),
           "touching nuclei": _touching(nuclei), "touching cells": _touching(cells),
           "cell area / field": float((cells > 0).mean())}
    if nuclei.max():
        idx = np.arange(1, nuclei.max() + 1)
        mean = ndi.mean(image[0], nuclei, idx)
        sd = ndi.standard_deviation(image[0], nuclei, idx)
        out["DNA texture (CV in nuclei)"] = float(np.mean(sd / np.maximum(mean, 1e-6)))
    for c, name in enumerate(CHANNELS):
        p5, p50, p99 = np.percentile(image[c], [5, 50, 99])
        out[f"{name} p5 / p50 (ADU)"] = (float(p5), float(p50))
        out[f"{name} p99 / p50"] = float(p99 / max(p50, 1e-6))
    return out


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return "–".join(f"{x:.0f}" if abs(x) >= 10 else f"{x:.2f}" for x in v)
    return f"{v:.0f}" if abs(v) >= 10 else f"{v:.2f}"


def _rgb(image: np.ndarray) -> np.ndarray:
    out = []
    for name in ("AGP", "RNA", "DNA"):
        x = image[CHANNELS.index(name)].astype(np.float32)
        lo, hi = np.percentile(x, [1, 99.8])
        out.append(np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1))
    return (np.stack(out, -1) * 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data")
    ap.add_argument("--out", type=Path, default=None, help="write realism.md and real_vs_synthetic.png here")
    ap.add_argument("--fields", type=int, default=2, help="generated fields")
    args = ap.parse_args()
    columns, images = {}, {}
    for name, (folder, stem, chans) in REAL.items():
        image = np.stack([tifffile.imread(args.data / folder / "Images" / f"{stem}-ch{chans[c]}sk1fk1fl1.tiff")
                          for c in CHANNELS])
        columns[f"real {name}"] = field_stats(image)
        images[f"real {name}"] = image
    rng = np.random.default_rng(0)
    illum = illumination_fields(1080, 0)
    synth = [render_field(DMSO, size=1080, rng=rng, illumination=illum)[0] for _ in range(args.fields)]
    stats = [field_stats(s) for s in synth]
    columns["generator (mean of fields)"] = {
        k: (tuple(np.mean([s[k][i] for s in stats]) for i in range(2)) if isinstance(stats[0][k], tuple)
            else float(np.mean([s[k] for s in stats]))) for k in stats[0]}
    images["generator"] = synth[0]
    keys = list(next(iter(columns.values())))
    lines = ["| statistic | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {k} | " + " | ".join(_fmt(col.get(k, np.nan)) for col in columns.values()) + " |" for k in keys]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        from PIL import Image

        args.out.mkdir(parents=True, exist_ok=True)
        tiles = [_rgb(images[k]) for k in ("real BR00143976 C03 f3", "generator")]
        gap = np.full((tiles[0].shape[0], 16, 3), 255, np.uint8)
        Image.fromarray(np.concatenate([tiles[0], gap, tiles[1]], axis=1)).resize((1096, 540)).save(
            args.out / "real_vs_synthetic.png")
        (args.out / "realism.md").write_text(
            "# Real fields vs the generator\n\nMeasured by `benchmarks/realism.py` (cmcl's segmentation on both; "
            "raw pixels, no illumination correction).\n\n" + table +
            "\n\n![real | generated](real_vs_synthetic.png)\n\nLeft: real JUMP field BR00143976 C03 f3; right: a "
            "default generated field (AGP red, RNA green, DNA blue).\n")


if __name__ == "__main__":
    main()
