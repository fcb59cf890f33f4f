"""Benchmark: segmentation accuracy and time on real fields and on generated ones.

Compares, in the same run and on the same fields:

* ``cmcl`` — :func:`pipeline.images.segmentation.classical.segment_nuclei` / ``segment_cells`` (crops and field
  tiles are timed separately on the generated fields);
* ``skimage`` — a plain scikit-image script: Otsu threshold, distance-transform watershed for
  nuclei, Otsu mask + intensity watershed from the nuclei for cells (the usual tutorial recipe);
* ``cellpose`` — only with ``--cellpose-model PATH`` (local weights; cellpose 3.1.x on CPU).

Real fields (``tests/data``, see :func:`real_cases`): F1 at IoU 0.5 against CellProfiler's own
outlines on a JUMP Phenix field and against the manual masks of a Data Science Bowl 2018 image.
Generated fields: F1 against the generator's ground truth, in focus and out of focus. Run:
``python benchmarks/segment.py [--size 1080] [--fields 1] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.segmentation import clear_border, watershed

from pipeline.images.illumination import apply
from pipeline.images.segmentation.scoring import labels_from_outlines, match_objects
from pipeline.images.segmentation.classical import segment_cells, segment_nuclei
from pipeline.synthetic import illumination_fields, phenotype_from_smiles, render_field
from pipeline.images.crops import crop_cells, field_tiles


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


def _cmcl(dna: np.ndarray, cyto: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nuclei = segment_nuclei(dna)
    return nuclei, segment_cells(nuclei, cyto)


def _timed(fn, *args, repeats: int = 3):
    """(result, median seconds) over ``repeats`` calls: the machine is shared, medians are steadier."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def real_cases(data: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """(name, dna, cyto, true nuclei, true cells) of the real fields in ``tests/data``.

    * ``JUMP BR00143976 C03 f3``: a 1080 x 1080 Phenix field (U2OS-like, ~40 cells) with
      CellProfiler's own nuclei and cell outlines filled into labels
      (:func:`pipeline.images.segmentation.scoring.labels_from_outlines`); objects touching the border are left out
      of both sides (CellProfiler discards them).
    * ``DSB 2018 (stardist test image)``: a 512 x 512 fluorescence nuclei image with manual masks
      (125 nuclei), shipped in the ``stardist`` wheel; nuclei only.
    """
    phenix = data / "phenix_BR00143976_C03"
    ch = lambda k: tifffile.imread(phenix / "Images" / f"r03c03f03p01-ch{k}sk1fk1fl1.tiff")  # noqa: E731
    cp = phenix / "cellprofiler"
    nuclei = clear_border(labels_from_outlines(tifffile.imread(cp / "NucleiOutlines_BR00143976_C03_3.tiff")))
    cells = labels_from_outlines(tifffile.imread(cp / "CellsOutlines_BR00143976_C03_3.tiff"))
    cells = clear_border(np.where(np.isin(cells, np.unique(cells[nuclei > 0])), cells, 0))  # cells hold a nucleus
    dsb = data / "dsb2018_nuclei_stardist"
    return [("JUMP BR00143976 C03 f3 (vs CellProfiler)", ch(5), ch(3), nuclei, cells),
            ("DSB 2018 stardist image (vs manual masks)", tifffile.imread(dsb / "image.tif"), None,
             tifffile.imread(dsb / "masks.tif"), None)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1080, help="generated field edge in pixels")
    ap.add_argument("--fields", type=int, default=1, help="generated fields per focus condition")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats per field (median)")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data")
    ap.add_argument("--cellpose-model", default=None, help="local cellpose nuclei weights file")
    ap.add_argument("--cellpose-diameter", type=float, default=None)
    args = ap.parse_args()
    methods = {"cmcl": _cmcl, "plain skimage script": skimage_peer}
    if args.cellpose_model:
        from pipeline.images.segmentation.cellpose import segment_nuclei_cellpose

        def cp(dna, cyto):
            nuclei = segment_nuclei_cellpose(dna, model_path=args.cellpose_model, diameter=args.cellpose_diameter)
            return nuclei, segment_cells(nuclei, cyto)

        methods["cellpose nuclei (CPU) + cmcl cells"] = cp

    print("real fields: F1 at IoU 0.5, seconds per field (median of repeats; nuclei + cells)")
    print(f"{'field':44s} {'method':22s} {'nuc F1':>7s} {'cell F1':>8s} {'s/field':>8s} {'vs plain':>9s}")
    for name, dna, cyto, tn, tc in real_cases(args.data):
        dna = dna.astype(np.float32)
        cy = dna if cyto is None else cyto.astype(np.float32)
        rows = []
        for mname, fn in methods.items():
            (nuclei, cells), sec = _timed(fn, dna, cy, repeats=args.repeats)
            if tc is not None:  # CellProfiler left border objects out: so do we, on both sides
                nuclei, cells = clear_border(nuclei), clear_border(cells)
            nf = _f1(np.array(match_objects(tn, nuclei)))
            cf = _f1(np.array(match_objects(tc, cells))) if tc is not None else float("nan")
            rows.append((mname, nf, cf, sec))
        plain = next(r[3] for r in rows if r[0] == "plain skimage script")
        for mname, nf, cf, sec in rows:
            print(f"{name:44s} {mname:22s} {nf:7.3f} {cf:8.3f} {sec:8.2f} {sec / plain:8.2f}x")

    rng = np.random.default_rng(0)
    illum = illumination_fields(args.size, 0)
    ph = phenotype_from_smiles("CC(=O)Oc1ccccc1C(=O)O")
    fields = [(oof, *render_field(ph, size=args.size, rng=rng, illumination=illum, out_of_focus=oof))
              for oof in (False, True) for _ in range(args.fields)]
    n_true = int(np.mean([f[2].max() for f in fields]))
    print(f"\ngenerator: {len(fields)} fields of {args.size}x{args.size} (~{n_true} nuclei each), half out of focus; "
          "crops + 128 px tiles timed separately")
    print(f"{'method':22s} {'s/field':>8s} {'nuc F1':>7s} {'cell F1':>8s} {'nuc F1 oof':>11s} {'cell F1 oof':>12s}")
    crop_seconds = []
    for mname, fn in methods.items():
        acc = {False: [np.zeros(3, int), np.zeros(3, int)], True: [np.zeros(3, int), np.zeros(3, int)]}
        seconds = 0.0
        for oof, image, true_n, true_c in fields:
            corr = apply(image, illum)
            (nuclei, cells), sec = _timed(fn, corr[0], corr[3], repeats=1)
            seconds += sec
            acc[oof][0] += match_objects(true_n, nuclei)
            acc[oof][1] += match_objects(true_c, cells)
            if mname == "cmcl":
                _, sec = _timed(lambda: (crop_cells(corr, nuclei, cells), field_tiles(corr, tile_size=128)), repeats=1)
                crop_seconds.append(sec)
        print(f"{mname:22s} {seconds / len(fields):8.2f} " + " ".join(
            f"{_f1(acc[o][k]):{w}.3f}" for o, k, w in ((False, 0, 7), (False, 1, 8), (True, 0, 11), (True, 1, 12))))
    print(f"cmcl crops + tiles: {np.mean(crop_seconds):.2f} s/field")


if __name__ == "__main__":
    main()
