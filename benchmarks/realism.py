"""Real Cell Painting fields beside the generator's: statistics, tolerances, montages.

Measures, with the same code on both (:func:`pipeline.synthetic.calibration.field_stats`: cmcl's
segmentation, raw pixels), the two real Phenix fields in ``tests/data`` and default generated
fields (:func:`pipeline.synthetic.render_field`, DMSO, 1080 px at the real scale
``nucleus_radius = REAL_NUCLEUS_RADIUS``, under the simulated microscope's flat fields), and
checks each statistic against its tolerance (:data:`pipeline.synthetic.calibration.TOLERANCES`).

Writes (``--out DIR``): ``realism.md`` (the table), ``real_vs_synthetic.png`` (real field |
generated field, same channels, each channel scaled by the same rule, 1st-99.8th percentile of
its own image; below, native-resolution crops of every channel) and ``synthetic_field.png`` (one
generated field: five channels and a composite with the ground-truth outlines). Run:
``python benchmarks/realism.py [--out docs] [--fields 8]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile

from pipeline.store.paths import CHANNELS
from pipeline.synthetic import DMSO, illumination_fields, render_field
from pipeline.synthetic.calibration import REFERENCE, compare, field_stats, mean_stats
from pipeline.synthetic.render import REAL_NUCLEUS_RADIUS, REAL_PIXEL_SIZE_UM

#: Vendor channel number of each stain in the two real exports (from the Harmony index of
#: BR00121482 and the CellProfiler table of BR00143976).
REAL = {"BR00121482 A01 f1": ("phenix_BR00121482", "r01c01f01p01", {"DNA": 5, "ER": 4, "RNA": 3, "AGP": 2, "Mito": 1}),
        "BR00143976 C03 f3": ("phenix_BR00143976_C03", "r03c03f03p01", {"DNA": 5, "ER": 2, "RNA": 6, "AGP": 3, "Mito": 4})}
_STAINS = {"DNA": "Hoechst", "ER": "concanavalin A", "RNA": "SYTO 14", "AGP": "phalloidin + WGA", "Mito": "MitoTracker"}


def read_real(data: Path, name: str) -> np.ndarray:
    """(5, 1080, 1080) uint16 real field ``name`` of :data:`REAL` in :data:`CHANNELS` order."""
    folder, stem, chans = REAL[name]
    return np.stack([tifffile.imread(data / folder / "Images" / f"{stem}-ch{chans[c]}sk1fk1fl1.tiff") for c in CHANNELS])


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def _scaled(x: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(x, [1, 99.8])
    return np.clip((x.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)


def _rgb(image: np.ndarray) -> np.ndarray:
    """AGP red, RNA green, DNA blue; each channel to its own 1st-99.8th percentile."""
    return (np.stack([_scaled(image[CHANNELS.index(n)]) for n in ("AGP", "RNA", "DNA")], -1) * 255).astype(np.uint8)


def _montage(real: np.ndarray, synth: np.ndarray, path: Path, crop: tuple[int, int, int, int]) -> None:
    """Composites side by side (540 px each), then a row of native-resolution channel crops of
    each (``crop`` = y, x of the real crop, y, x of the generated one; 216 px)."""
    from PIL import Image

    half = [np.asarray(Image.fromarray(_rgb(im)).resize((540, 540), Image.BILINEAR)) for im in (real, synth)]
    gap = np.full((540, 12, 3), 255, np.uint8)
    top = np.concatenate([half[0], gap, half[1]], axis=1)
    rows = []
    for im, (y, x) in ((real, crop[:2]), (synth, crop[2:])):
        tiles = []
        for c in range(len(CHANNELS)):
            t = (_scaled(im[c])[y:y + 216, x:x + 216] * 255).astype(np.uint8)
            tiles.append(np.repeat(t[..., None], 3, -1))
            tiles.append(np.full((216, 2, 3), 255, np.uint8))
        row = np.concatenate(tiles[:-1], axis=1)
        rows.append(np.pad(row, ((6, 0), (0, top.shape[1] - row.shape[1]), (0, 0)), constant_values=255))
    Image.fromarray(np.concatenate([top] + rows, axis=0)).save(path, optimize=True)


def _field_figure(image: np.ndarray, nuclei: np.ndarray, cells: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    fig, axes = plt.subplots(2, 3, figsize=(8.2, 5.5), dpi=100)
    for ax, c in zip(axes.ravel(), range(len(CHANNELS))):
        ax.imshow(_scaled(image[c]), cmap="gray", interpolation="bilinear")
        ax.set_title(f"{CHANNELS[c]} ({_STAINS[CHANNELS[c]]})", fontsize=7)
    rgb = _rgb(image).astype(np.float32) / 255
    rgb[find_boundaries(cells, mode="inner")] = (1.0, 1.0, 1.0)
    rgb[find_boundaries(nuclei, mode="inner")] = (0.3, 0.8, 1.0)
    axes[1, 2].imshow(rgb, interpolation="bilinear")
    axes[1, 2].set_title("composite + ground-truth outlines", fontsize=7)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(f"cmcl synthetic Cell Painting field (DMSO), {image.shape[1]} x {image.shape[2]} at the real "
                 f"scale ({REAL_PIXEL_SIZE_UM} um/px), uint16, raw (uncorrected)", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data")
    ap.add_argument("--out", type=Path, default=None,
                    help="write realism.md, real_vs_synthetic.png and synthetic_field.png here")
    ap.add_argument("--fields", type=int, default=8, help="generated fields")
    args = ap.parse_args()
    real_images = {name: read_real(args.data, name) for name in REAL}
    real = {name: field_stats(im) for name, im in real_images.items()}
    size, radius = 1080, REAL_NUCLEUS_RADIUS
    illum = illumination_fields(size, 0)
    synth, stats, seconds = [], [], []
    for k in range(args.fields):
        start = time.perf_counter()
        field = render_field(DMSO, size=size, nucleus_radius=radius, rng=np.random.default_rng([0, k]), illumination=illum)
        seconds.append(time.perf_counter() - start)
        synth.append(field)
        stats.append(field_stats(field[0]))
    rows = compare(mean_stats(stats), real)
    lines = [f"| statistic | real {' | real '.join(REAL)} | generator: mean (min–max) of {args.fields} fields "
             "| tolerance | accepted | pass |", "|---|" + "---|" * (len(REAL) + 4)]
    for row in rows:
        values = [s[row["statistic"]] for s in stats]
        lines.append(f"| {row['statistic']} | " + " | ".join(_fmt(v) for v in row["real"].values())
                     + f" | {_fmt(row['synthetic'])} ({_fmt(np.nanmin(values))}–{_fmt(np.nanmax(values))})"
                     + f" | {row['tolerance']} | {_fmt(row['interval'][0])}–{_fmt(row['interval'][1])}"
                     + f" | {'yes' if row['ok'] else '**no**'} |")
    table = "\n".join(lines)
    passed = sum(r["ok"] for r in rows)
    print(table)
    print(f"\n{passed}/{len(rows)} statistics within tolerance; render {np.median(seconds):.2f} s per field (median)")
    if args.out is None:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    # crops: a group of cells in the real field; in the generated one, around the nucleus nearest the centre
    nuclei = synth[0][1]
    centres = np.array([np.mean(np.nonzero(nuclei == k), axis=1) for k in range(1, int(nuclei.max()) + 1)])
    cy, cx = centres[np.argmin(np.hypot(*(centres - size / 2).T))].astype(int) - 108
    _montage(real_images[REFERENCE], synth[0][0], args.out / "real_vs_synthetic.png",
             (460, 100, int(np.clip(cy, 0, size - 216)), int(np.clip(cx, 0, size - 216))))
    _field_figure(*synth[0], args.out / "synthetic_field.png")
    (args.out / "realism.md").write_text(
        "# Real fields vs the generator\n\n"
        "Measured by `benchmarks/realism.py` with `pipeline.synthetic.calibration.field_stats` on both: cmcl's own "
        "segmentation (nuclei on DNA, cells on AGP), raw pixels, no illumination correction. Real: the two JUMP "
        "Phenix fields in `tests/data` (U2OS, 20x, "
        f"{REAL_PIXEL_SIZE_UM} µm/px, 1080 × 1080; A01 is an edge well with 3 cells, C03 a typical one with 39). "
        f"Generator: {args.fields} default DMSO fields (`render_field`, 1080 px, `nucleus_radius={radius}`, the real "
        "scale; illumination `illumination_fields(1080, 0)`). Areas are in real pixels; counts per 1080 × 1080 "
        "field. Tolerance: the accepted interval around the real values (×/÷ a factor or ± a width); "
        f"statistics that depend on the cell density are compared with {REFERENCE} only. "
        "`tests/pipeline/test_realism.py` checks the same tolerances on default fields at half scale "
        "(512 px, `nucleus_radius=9`).\n\n"
        f"**{passed} of {len(rows)} statistics within tolerance.**\n\n" + table + "\n\n"
        "![real | generated](real_vs_synthetic.png)\n\n"
        "Top: real field BR00143976 C03 f3 (left) and a default generated field (right), AGP red, RNA green, DNA "
        "blue, each channel scaled to the 1st–99.8th percentile of its own image (the same rule on both). Below: "
        "native-resolution 216 px crops of DNA, ER, RNA, AGP and Mito, real (upper row) and generated (lower row).\n\n"
        "What the generator draws (see `render_field`): cells placed in touching groups and clumps over a density "
        "that varies across the field, and from well to well (`write_plate`: ×lognormal(0, 0.2), edge wells "
        "×0.85); elongated, lobed outlines with protrusions that split contested space; oval nuclei ~1/7 of the "
        "cell; a few rounded bright (mitotic) cells and daughter pairs with touching nuclei; optics blur; "
        "backgrounds and vignetting as measured; specks, fibres and out-of-focus blobs as debris; "
        "`bleed_through` between neighbouring dyes is available and off by default.\n\n"
        "Still unlike the real fields: textures are filtered noise, not organelles (the real Mito and ER "
        "networks, stress fibres in AGP); the real fields' cell-to-cell variety (very bright rounded cells, "
        "flattened giant cells) is only partly drawn; the background has no out-of-focus haze around cells.\n")


if __name__ == "__main__":
    main()
