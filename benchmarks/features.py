"""Benchmark: CellProfiler features per field, and what they add to whole-plate ingestion.

Two measurements in the same run:

1. **Per field, one process**: a generated 1080 x 1080 field with ~300 cells (nuclei radius 12,
   segmented by cmcl) measured by :func:`pipeline.features.measure.measure_objects` with the
   ``default`` and ``full`` sets, beside the same default features computed by cp_measure's own
   functions one compartment and channel at a time (what ``measure_objects`` did before
   cmcl's compiled kernels in :mod:`pipeline.features`), beside cp_measure called naively
   (``cp_measure.featurizer.featurize`` with its default configuration, every feature but
   Costes, on Nuclei / Cells / Cytoplasm), and beside CellProfiler's MeasureObjectIntensity as measured
   on this machine for the issue (2.3 s/field, quoted, not rerun: CellProfiler is not
   installed here).
2. **Whole plate**: :func:`pipeline.ingest.run.ingest_plate` of the same generated plate with
   ``features='none'`` and ``features='default'``, one worker process each, alternating, best of
   two; the ratio is the cost of the default feature set (target: within 1.5x).

Run: ``python benchmarks/features.py [--size 1080] [--wells 4] [--sites 2] [--plate-size 1080]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.features.measure import measure_objects
from pipeline.images.illumination import apply
from pipeline.images.segmentation.classical import segment_cells, segment_nuclei
from pipeline.store.paths import CHANNELS
from pipeline.synthetic import illumination_fields, phenotype_from_smiles, render_field

CELLPROFILER_INTENSITY_S = 2.3  # MeasureObjectIntensity, s/field, this machine (issue 14)


def _field(size: int):
    rng = np.random.default_rng(0)
    illum = illumination_fields(size, 0)
    ph = phenotype_from_smiles("CC(=O)Oc1ccccc1C(=O)O")
    image = render_field(ph, size=size, rng=rng, illumination=illum, nucleus_radius=12.0)[0]
    corr = apply(image, illum)
    nuclei = segment_nuclei(corr[0])
    return corr, nuclei, segment_cells(nuclei, corr[3])


def _naive(image, nuclei, cells) -> int:
    from cp_measure.featurizer import featurize, make_featurizer_config

    cyto = np.where(nuclei > 0, 0, cells)
    # its default configuration minus Costes (~1 min per channel pair, 20 directed pairs x 3 objects)
    config = make_featurizer_config(list(CHANNELS), objects=["Nuclei", "Cells", "Cytoplasm"], correlation_costes=False)
    pixels = np.clip(image / 65535.0, 0, 1)[None]
    data, columns, rows = featurize(pixels, np.stack([nuclei, cells, cyto])[None], config)
    return len(columns)


def _cp_measure_default(image, nuclei, cells) -> int:
    """The default set's measurements with cp_measure's functions, per compartment and channel."""
    from cp_measure.bulk import get_core_measurements, get_correlation_measurements
    from cp_measure.core.numba.measureobjectintensity import get_intensity
    from cp_measure.core.numba.measuretexture import get_texture
    from skimage.segmentation import relabel_sequential

    from pipeline.features.measure import DEFAULT_PAIRS

    shape = get_core_measurements(sanitize=False)["sizeshape"]
    pearson = get_correlation_measurements(sanitize=False)["pearson"]
    pixels = np.clip(image.astype(np.float64) / 65535.0, 0, 1)
    n = 0
    for name, lab in (("Nuclei", nuclei), ("Cells", cells), ("Cytoplasm", np.where(nuclei > 0, 0, cells))):
        clean = relabel_sequential(lab.astype(np.int64))[0]
        if name != "Cytoplasm":
            n += len(shape(clean, pixels[0], calculate_advanced=False, new_features=False))
        for c in range(len(CHANNELS)):
            n += len(get_intensity(clean, pixels[c], edge_measurements=False))
            if name == "Cells":
                n += len(get_texture(clean, pixels[c], scale=3))
        if name == "Cells":
            for a, b in DEFAULT_PAIRS:
                n += len(pearson(pixels[CHANNELS.index(a)], pixels[CHANNELS.index(b)], clean))
    return n


def _time(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1080, help="field edge for the per-field measurement")
    ap.add_argument("--wells", type=int, default=4, help="wells of the whole-plate measurement")
    ap.add_argument("--sites", type=int, default=2)
    ap.add_argument("--plate-size", type=int, default=1080, help="field edge of the whole-plate measurement")
    ap.add_argument("--skip-naive", action="store_true", help="skip cp_measure's featurize (minutes per field)")
    args = ap.parse_args()

    image, nuclei, cells = _field(args.size)
    n = int(len(np.unique(nuclei)) - 1)
    measure_objects(image[:, :128, :128], nuclei[:128, :128], cells[:128, :128], channel_names=CHANNELS)  # load kernels
    t_def, f_def = _time(lambda: measure_objects(image, nuclei, cells, channel_names=CHANNELS), repeat=2)
    t_full, f_full = _time(lambda: measure_objects(image, nuclei, cells, channel_names=CHANNELS, feature_set="full"))
    _cp_measure_default(image[:, :128, :128], nuclei[:128, :128], cells[:128, :128])  # load kernels
    t_cpm, _ = _time(lambda: _cp_measure_default(image, nuclei, cells), repeat=2)
    rows = [("cmcl features, default set", t_def, f_def.shape[1] - 1),
            ("same set, cp_measure per function", t_cpm, f_def.shape[1] - 1),
            ("cmcl features, full set", t_full, f_full.shape[1] - 1)]
    if not args.skip_naive:
        t_naive, n_naive = _time(lambda: _naive(image, nuclei, cells))
        rows.append(("cp_measure featurize (naive, all but Costes)", t_naive, n_naive))
    rows.append(("CellProfiler MeasureObjectIntensity*", CELLPROFILER_INTENSITY_S, None))
    print(f"one {args.size}x{args.size} field, {n} cells, one process")
    print(f"{'method':40s} {'s/field':>8s} {'ms/cell':>8s} {'features':>9s} {'vs default':>11s}")
    for name, t, nf in rows:
        print(f"{name:40s} {t:8.2f} {1000 * t / n:8.1f} {nf if nf is not None else '-':>9} {t / t_def:10.2f}x")
    print("* quoted (issue 14: 2.3 s/field on this machine), intensity only, not rerun here")

    from pipeline.ingest.run import IngestSettings, ingest_plate
    from pipeline.store.paths import Store
    from pipeline.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        plate = generate(Path(tmp) / "in", plate_id="BF", n_wells=args.wells, sites=args.sites, size=args.plate_size, seed=0)
        out = {}
        for rep in range(2):  # alternating, best of two each (the first also loads compiled kernels)
            for fs in ("none", "default"):
                t, r = _time(lambda: ingest_plate(plate, Store(Path(tmp) / f"s-{fs}-{rep}"),
                                                  IngestSettings(crop_size=64, features=fs), processes=1))
                if fs not in out or t < out[fs][0]:
                    out[fs] = (t, r)
        n_fields = out["none"][1].n_fields
        print(f"\nwhole plate: {n_fields} fields of {args.plate_size} px, {out['none'][1].n_cells} cells, one process")
        for fs, (t, r) in out.items():
            print(f"ingest, features={fs:8s} {t:8.1f} s  {n_fields / t:6.3f} fields/s  segment+tile {r.seconds['segment_tile']:.1f} s")
        print(f"ratio with default features / without: {out['default'][0] / out['none'][0]:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
