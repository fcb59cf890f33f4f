"""Agreement of cmcl's cp_measure features with CellProfiler's own values on one real field.

``tests/data/phenix_BR00143976_C03`` holds a Phenix field (plate BR00143976, well C03, site 3)
with CellProfiler's nuclei and cell outlines and its per-cell table (5 cells, JUMP feature set).
The objects are rebuilt from the outlines (:func:`pipeline.features.measure.labels_from_outlines`),
matched to CellProfiler's rows by their centres, and measured with
:func:`pipeline.features.measure.measure_objects` (``feature_set='full'``) on the raw channels;
CellProfiler measured illumination-corrected channels whose illumination functions are not
part of the export, so intensity-scaled features can only agree up to a smooth per-channel
factor (their correlation across cells is reported), while shape and scale-free features
(Pearson correlation) can agree exactly.

Prints, per feature family and for a few named columns, the median relative difference and the
Pearson r across cells. Run: ``python benchmarks/cellprofiler_agreement.py [--csv OUT]``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from pipeline.features.measure import labels_from_outlines, measure_objects

ROOT = Path(__file__).resolve().parents[1] / "tests" / "data" / "phenix_BR00143976_C03"
#: Phenix channel numbers of this export (see tests/data/README.md); CellProfiler names them Corr<name>
CHANNELS = {"DNA": 5, "ER": 2, "RNA": 6, "AGP": 3, "Mito": 4}


def measured_vs_cellprofiler(root: Path = ROOT, *, feature_set: str = "full") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ours, CellProfiler's) tables, row for row the same objects, on the columns both have."""
    cp = pd.read_parquet(root / "cellprofiler" / "BR00143976_shrunken.parquet")
    nuc = labels_from_outlines(tifffile.imread(root / "cellprofiler" / "NucleiOutlines_BR00143976_C03_3.tiff"))
    cel = labels_from_outlines(tifffile.imread(root / "cellprofiler" / "CellsOutlines_BR00143976_C03_3.tiff"))
    nuclei, cells = np.zeros_like(nuc), np.zeros_like(cel)
    for k, r in enumerate(cp.itertuples(index=False), start=1):  # CellProfiler's objects, by their centres
        nl = nuc[int(round(r.Nuclei_AreaShape_Center_Y)), int(round(r.Nuclei_AreaShape_Center_X))]
        cl = cel[int(round(r.Cells_AreaShape_Center_Y)), int(round(r.Cells_AreaShape_Center_X))]
        if nl == 0 or cl == 0:
            raise ValueError(f"CellProfiler object {k} has no rebuilt outline at its centre")
        nuclei[nuc == nl], cells[cel == cl] = k, k
    image = np.stack([tifffile.imread(root / "Images" / f"r03c03f03p01-ch{c}sk1fk1fl1.tiff") for c in CHANNELS.values()])
    ours = measure_objects(image.astype(np.float32), nuclei, cells, channel_names=tuple(CHANNELS), feature_set=feature_set)
    # CellProfiler's pipeline named the corrected images Corr<channel>
    ours.columns = [re.sub(r"(?<=_)(DNA|ER|RNA|AGP|Mito)(?=_|$)", r"Corr\1", c) for c in ours.columns]
    cols = [c for c in ours.columns if c in cp.columns]
    return ours[cols].reset_index(drop=True), cp[cols].reset_index(drop=True)


def agreement(ours: pd.DataFrame, cp: pd.DataFrame) -> pd.DataFrame:
    """Per column: median |ours - cp| / |cp| over cells and Pearson r across cells."""
    rows = []
    for c in ours.columns:
        a, b = ours[c].to_numpy(float), cp[c].to_numpy(float)
        ok = np.isfinite(a) & np.isfinite(b)
        rel = np.median(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-12)) if ok.any() else np.nan
        r = np.corrcoef(a[ok], b[ok])[0, 1] if ok.sum() > 2 and a[ok].std() > 0 and b[ok].std() > 0 else np.nan
        rows.append((c, rel, r))
    return pd.DataFrame(rows, columns=["column", "median_rel_diff", "r"])


FAMILIES = ("AreaShape", "Intensity", "Correlation_Correlation", "Correlation_(K|Manders|RWC|Costes|Overlap)",
            "Texture", "Granularity", "RadialDistribution")
NAMED = ("Nuclei_AreaShape_Area", "Cells_AreaShape_Area", "Cytoplasm_AreaShape_Area", "Nuclei_AreaShape_Perimeter",
         "Cells_AreaShape_Perimeter", "Nuclei_AreaShape_Solidity", "Cells_AreaShape_Eccentricity",
         "Cells_AreaShape_FormFactor", "Nuclei_AreaShape_Zernike_2_0", "Nuclei_Intensity_MeanIntensity_CorrDNA",
         "Cells_Intensity_MeanIntensity_CorrAGP", "Cells_Correlation_Correlation_CorrER_CorrRNA",
         "Nuclei_Correlation_Correlation_CorrDNA_CorrRNA", "Cells_Texture_Contrast_CorrRNA_3_00_256",
         "Cells_Granularity_2_CorrDNA")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=None, help="write the per-column table here")
    args = ap.parse_args()
    ours, cp = measured_vs_cellprofiler()
    table = agreement(ours, cp)
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(f"{len(cp)} CellProfiler cells, {len(table)} columns in common (full feature set)")
    print(f"{'family':44s} {'cols':>5s} {'median rel diff':>16s} {'<1 % cols':>10s} {'median r':>9s}")
    for fam in FAMILIES:
        s = table[table["column"].str.contains(fam)]
        print(f"{fam:44s} {len(s):5d} {s['median_rel_diff'].median():16.4f} {(s['median_rel_diff'] < 0.01).mean():10.2f} "
              f"{s['r'].median():9.4f}")
    print()
    for c in NAMED:
        s = table[table["column"] == c]
        if len(s):
            print(f"{c:50s} rel diff {s['median_rel_diff'].iloc[0]:8.4f}   r {s['r'].iloc[0]:7.4f}")


if __name__ == "__main__":
    main()
