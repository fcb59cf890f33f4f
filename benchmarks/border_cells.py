"""Benchmark: how many nuclei reach the cells table (and so the features and profiles) when a
crop whose box crosses the field's edge is zero-padded (``border='pad'``, the default) rather
than skipped (``border='skip'``, cmcl before issue 25), and what padding costs.

Cases, measured in the same run with the functions ingestion calls (illumination correction,
:func:`pipeline.images.segmentation.classical.segment_nuclei` / ``segment_cells``, :func:`pipeline.images.crops.crop_cells`):

* real fields (``tests/data``): the JUMP Phenix fields BR00143976 C03 f3 (with CellProfiler's own
  nuclei: how many it measured, its border objects discarded) and BR00121482 A01 f1,
  1080 x 1080, 64 px crops;
* generated fields at the real scale (1080 px, ``nucleus_radius`` = REAL_NUCLEUS_RADIUS: the
  calibrated generator), 64 px crops, against the generator's true nuclei;
* a generated 256-px plate (16 fields, default nucleus radius 8) through the whole
  :func:`pipeline.ingest.run.ingest_plate`: cells-table rows against the true nuclei.

"true" counts every true nucleus; "true inside" those not touching the field's edge (the ones
CellProfiler's convention measures). "recovered" counts distinct true nuclei (not touching
the edge) whose crop centre lies in them. Run: ``python benchmarks/border_cells.py
[--fields 3] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from pipeline.images.borders import edge_labels
from pipeline.images.segmentation.scoring import labels_from_outlines
from pipeline.images.segmentation.classical import segment_cells, segment_nuclei
from pipeline.images.crops import crop_cells


def _true_counts(truth: np.ndarray | None, table: pd.DataFrame) -> tuple[int, int, int]:
    """(true nuclei, true nuclei not touching the edge, those hit by a crop centre)."""
    if truth is None:
        return -1, -1, -1
    ids = np.unique(truth)
    ids = ids[ids > 0]
    inside = np.setdiff1d(ids, edge_labels(truth))
    hit = np.unique(truth[table["Crop_CenterY"].to_numpy(), table["Crop_CenterX"].to_numpy()])
    return len(ids), len(inside), len(np.intersect1d(hit, inside))


def _crops(image, nuclei, cells, border, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = crop_cells(image, nuclei, cells, crop_size=64, border=border)
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def field_rows(name: str, image: np.ndarray, truth: np.ndarray | None, repeats: int) -> dict:
    """One field through segmentation and both border modes."""
    nuclei = segment_nuclei(image[0])
    cells = segment_cells(nuclei, image[3])
    (_, skip), t_skip = _crops(image, nuclei, cells, "skip", repeats)
    (_, pad), t_pad = _crops(image, nuclei, cells, "pad", repeats)
    n_true, n_inside, hit_skip = _true_counts(truth, skip)
    hit_pad = _true_counts(truth, pad)[2]
    return dict(field=name, true=n_true, true_inside=n_inside, segmented=int(nuclei.max()),
                touching_edge=len(edge_labels(nuclei)), rows_skip=len(skip), rows_pad=len(pad),
                padded=int(pad["Metadata_CropPadded"].sum()), recovered_skip=hit_skip, recovered_pad=hit_pad,
                s_skip=t_skip, s_pad=t_pad)


def real_fields(data: Path) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(name, (5, Y, X) float32 image in DNA, ER, RNA, AGP, Mito order, CellProfiler nuclei or None)."""
    out = []
    a = data / "phenix_BR00143976_C03"
    img = np.stack([tifffile.imread(a / "Images" / f"r03c03f03p01-ch{c}sk1fk1fl1.tiff") for c in (5, 2, 6, 3, 4)])
    cp = labels_from_outlines(tifffile.imread(a / "cellprofiler" / "NucleiOutlines_BR00143976_C03_3.tiff"))
    out.append(("JUMP BR00143976 C03 f3 (truth: CellProfiler)", img.astype(np.float32), cp))
    from pipeline.plates.discovery import discover_plate
    from pipeline.store.paths import CHANNELS

    b = discover_plate(data / "phenix_BR00121482")  # channels from the export's Index.idx.xml
    files = b.images.set_index("Metadata_Channel")["File"]
    img = np.stack([tifffile.imread(b.root / files[c]) for c in CHANNELS]).astype(np.float32)
    out.append(("JUMP BR00121482 A01 f1", img, None))
    return out


def generated_fields(n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from pipeline.images.illumination import apply
    from pipeline.synthetic import illumination_fields, phenotype_from_smiles, render_field
    from pipeline.synthetic.render import REAL_NUCLEUS_RADIUS

    rng = np.random.default_rng(11)
    illum = illumination_fields(1080, 11)
    ph = phenotype_from_smiles("CC(=O)Oc1ccccc1C(=O)O")
    out = []
    for k in range(n):
        image, nuclei, _ = render_field(ph, size=1080, rng=rng, illumination=illum, nucleus_radius=REAL_NUCLEUS_RADIUS)
        out.append((f"generated 1080 px #{k + 1}", apply(image, illum), nuclei))
    return out


def plate_256(tmp: Path, border: str) -> tuple[int, int, int, int]:
    """(true nuclei, true inside, cells-table rows, recovered) of a 16-field 256-px plate ingested with ``border``."""
    from pipeline.ingest.run import IngestSettings, ingest_plate
    from pipeline.store.paths import Store
    from pipeline.synthetic import generate

    plate = tmp / "inbox" / "B256"
    if not plate.exists():
        plate = generate(tmp / "inbox", plate_id="B256", n_wells=8, sites=2, size=256, seed=21)
    store = Store(tmp / f"store-{border}")
    ingest_plate(plate, store, IngestSettings(crop_size=64, border=border), processes=1)
    cells = store.read("cells")
    n_true = n_inside = hit = 0
    for f in sorted((plate / "ground_truth" / "labels").glob("*.npz")):
        well, site = f.stem.split("_s")
        rows = cells[(cells.Metadata_Well == well) & (cells.Metadata_Site == int(site))]
        t = _true_counts(np.load(f)["nuclei"], rows)
        n_true, n_inside, hit = n_true + t[0], n_inside + t[1], hit + t[2]
    return n_true, n_inside, len(cells), hit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=3, help="generated 1080 px fields")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats of crop_cells per field (median)")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data")
    ap.add_argument("--no-plate", action="store_true", help="skip the 256-px plate ingestion")
    args = ap.parse_args()
    rows = [field_rows(n, img, t, args.repeats) for n, img, t in real_fields(args.data) + generated_fields(args.fields)]
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print("per field (64 px crops): rows = cells-table rows; recovered = true nuclei not touching the edge with a row")
    print(df.drop(columns=["s_skip", "s_pad"]).to_string(index=False))
    gen = df[df.field.str.startswith("generated")]
    if len(gen):
        s = gen.sum(numeric_only=True)
        print(f"\ngenerated 1080 px, {len(gen)} fields: rows {s.rows_skip} -> {s.rows_pad} (+{s.rows_pad - s.rows_skip}, "
              f"{(s.rows_pad / s.rows_skip - 1) * 100:.1f} %); rows / true nuclei {s.rows_skip / s.true:.3f} -> "
              f"{s.rows_pad / s.true:.3f}; recovered / true inside {s.recovered_skip / s.true_inside:.3f} -> "
              f"{s.recovered_pad / s.true_inside:.3f}")
    print(f"crop_cells seconds per field, median: skip {df.s_skip.median():.4f}, pad {df.s_pad.median():.4f} "
          f"(pad / skip {df.s_pad.sum() / df.s_skip.sum():.2f}x, same run)")
    if not args.no_plate:
        with tempfile.TemporaryDirectory() as tmp:
            for border in ("skip", "pad"):
                n_true, n_inside, n_rows, hit = plate_256(Path(tmp), border)
                print(f"256-px plate, 16 fields, border={border!r}: {n_true} true nuclei ({n_inside} not touching the "
                      f"edge), {n_rows} cells-table rows = {n_rows / n_true:.3f} of the true nuclei; "
                      f"{hit} / {n_inside} = {hit / max(n_inside, 1):.3f} of those not touching the edge recovered")


if __name__ == "__main__":
    main()
