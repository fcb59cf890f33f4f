"""Benchmark: segmentation + tiling throughput and accuracy on generated fields.

Compares, in the same run and on the same fields:

* ``cmcl`` — :func:`pipeline.segmentation.segment_nuclei` / ``segment_cells`` + single-cell crops
  + 128 px field tiles (what ingestion does per field, minus I/O);
* ``skimage`` — a plain scikit-image script: Otsu threshold, distance-transform watershed for
  nuclei, Otsu mask + intensity watershed from the nuclei for cells (the usual tutorial recipe);
* ``cellpose`` — only with ``--cellpose-model PATH`` (local weights; cellpose 3.1.x on CPU).

F1 at IoU 0.5 against the generator's ground truth is reported separately for in-focus and
out-of-focus fields. Run: ``python benchmarks/segment.py [--size 1080] [--fields 2]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.segmentation import watershed

from pipeline.illumination import apply
from pipeline.scoring import match_objects
from pipeline.segmentation import segment_cells, segment_nuclei
from pipeline.synthetic import illumination_fields, phenotype_from_smiles, render_field
from pipeline.tiles import crop_cells, field_tiles


def skimage_peer(dna: np.ndarray, cyto: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The plain scikit-image recipe (no background handling, fixed seed distance)."""
    smooth = gaussian(dna, sigma=1, preserve_range=True)
    mask = ndi.binary_fill_holes(smooth > threshold_otsu(smooth))
    dist = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=5, labels=ndi.label(mask)[0])
    markers = np.zeros(dna.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    nuclei = watershed(-dist, markers, mask=mask)
    c = gaussian(cyto, sigma=1.5, preserve_range=True)
    cells = watershed(-c, nuclei, mask=(c > threshold_otsu(c)) | (nuclei > 0))
    return nuclei, cells


def _f1(t: np.ndarray) -> float:
    return 2 * t[0] / max(2 * t[0] + t[1] + t[2], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1080, help="field edge in pixels")
    ap.add_argument("--fields", type=int, default=2, help="fields per focus condition")
    ap.add_argument("--cellpose-model", default=None, help="local cellpose nuclei weights file")
    ap.add_argument("--cellpose-diameter", type=float, default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    illum = illumination_fields(args.size, 0)
    ph = phenotype_from_smiles("CC(=O)Oc1ccccc1C(=O)O")
    fields = [(oof, *render_field(ph, size=args.size, rng=rng, illumination=illum, out_of_focus=oof))
              for oof in (False, True) for _ in range(args.fields)]

    def cmcl(dna, cyto, image):
        nuclei = segment_nuclei(dna)
        cells = segment_cells(nuclei, cyto)
        crop_cells(image, nuclei, cells)
        field_tiles(image, tile_size=128)
        return nuclei, cells

    methods = {"cmcl (seg+crops+tiles)": cmcl, "skimage script": lambda d, c, i: skimage_peer(d, c)}
    if args.cellpose_model:
        from pipeline.cellpose_seg import segment_nuclei_cellpose

        def cp(dna, cyto, image):
            nuclei = segment_nuclei_cellpose(dna, model_path=args.cellpose_model, diameter=args.cellpose_diameter)
            return nuclei, segment_cells(nuclei, cyto)

        methods["cellpose nuclei (CPU) + cmcl cells"] = cp
    n_true = int(np.mean([f[2].max() for f in fields]))
    print(f"{len(fields)} fields of {args.size}x{args.size} (~{n_true} nuclei each), half out of focus")
    rows = []
    for name, fn in methods.items():
        acc = {False: [np.zeros(3, int), np.zeros(3, int)], True: [np.zeros(3, int), np.zeros(3, int)]}
        seconds = 0.0
        for oof, image, true_n, true_c in fields:
            corr = apply(image, illum)
            t0 = time.perf_counter()
            nuclei, cells = fn(corr[0], corr[3], corr)
            seconds += time.perf_counter() - t0
            acc[oof][0] += match_objects(true_n, nuclei)
            acc[oof][1] += match_objects(true_c, cells)
        rows.append((name, len(fields) / seconds, *[_f1(acc[o][k]) for o in (False, True) for k in (0, 1)]))
    base = rows[0][1]
    print(f"{'method':36s} {'fields/s':>9s} {'vs cmcl':>8s} {'nuc F1':>7s} {'cell F1':>8s} {'nuc F1 oof':>11s} {'cell F1 oof':>12s}")
    for name, fps, nf, cf, nfo, cfo in rows:
        print(f"{name:36s} {fps:9.3f} {fps / base:7.2f}x {nf:7.3f} {cf:8.3f} {nfo:11.3f} {cfo:12.3f}")


if __name__ == "__main__":
    main()
