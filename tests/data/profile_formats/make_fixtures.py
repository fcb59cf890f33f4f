"""Rebuild the profile-format fixtures of this folder from the real files they come from.

    python tests/data/profile_formats/make_fixtures.py REALDATA_DIR

REALDATA_DIR holds ``profiles_lincs_SQ00015054/``, ``jump_compound_platemaps/``,
``jump_compound_ids/`` and ``cell_injury_idr0133/`` (see README.md for sources and licences).
Deterministic: the same inputs give the same files.
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
N_FEATURES = 64


def lincs_features(real: Path) -> pd.DataFrame:
    t = pd.read_csv(real / "profiles_lincs_SQ00015054" / "SQ00015054_normalized_feature_select.csv.gz")
    feats = [c for c in t.columns if c.startswith(("Cells_", "Cytoplasm_", "Nuclei_"))][:N_FEATURES]
    return t[feats].round(6)


def jump_moa_style(real: Path, x: pd.DataFrame) -> None:
    """A JUMP-MOA-style pycytominer plate (90 compounds x 4 replicate wells + 24 DMSO wells, as
    JUMP-MOA is laid out): the first 90 treatments of the real JUMP-Target-2 compound metadata,
    annotated the way pycytominer's annotate does (``Metadata_`` + the metadata column:
    ``Metadata_InChIKey``, ``Metadata_smiles``; DMSO wells without a compound), features of the
    real LINCS plate row by row."""
    d = real / "jump_compound_platemaps"
    meta = pd.read_csv(d / "JUMP-Target-2_compound_metadata.tsv", sep="\t").drop_duplicates("broad_sample")
    meta = meta[meta["pert_type"] == "trt"].head(90).drop(columns=["InChI", "target_list", "control_type"])
    wells = [f"{r}{c:02d}" for r in "ABCDEFGHIJKLMNOP" for c in range(1, 25)]
    dmso = [w for w in wells if w[1:] in ("01", "24") and w[0] in "ABCDEFGHIJKL"]
    treated = [w for w in wells if w not in dmso]
    layout = pd.DataFrame({"Well": treated, "broad_sample": list(meta["broad_sample"]) * 4})
    ann = pd.concat([layout.merge(meta, on="broad_sample", how="left"), pd.DataFrame({"Well": dmso})])
    ann = ann.assign(solvent="DMSO").sort_values("Well", ignore_index=True)
    ann = ann.rename(columns={c: "Metadata_" + c for c in ann.columns})
    ann.insert(0, "Metadata_Plate", "BR00117016")
    out = pd.concat([ann, x.iloc[: len(ann)].reset_index(drop=True)], axis=1)
    out.to_csv(HERE / "jump_moa_style_plate.csv.gz", index=False)


def jump_cpg0016_style(real: Path, x: pd.DataFrame) -> None:
    """A JUMP cpg0016-style table: Metadata_Source/Plate/Well/JCP2022 and numbered features
    X_1..X_64 (with the name table), 40 real JCP2022 compounds x 3 wells on 2 sources, 12 DMSO
    wells (JCP2022_033924) and one identifier absent from the map (JCP2022_999999)."""
    ids = pd.read_csv(real / "jump_compound_ids" / "JUMPCP_compounds.csv.gz")
    rng = np.random.default_rng(0)
    pick = ids.iloc[np.sort(rng.choice(len(ids), 40, replace=False))]
    jcp = list(pick["Metadata_JCP2022"]) * 3 + ["JCP2022_033924"] * 12 + ["JCP2022_999999"] * 3
    n = len(jcp)
    wells = [f"{'ABCDEFGHIJKLMNOP'[i // 24]}{i % 24 + 1:02d}" for i in range(n)]
    t = pd.DataFrame({"Metadata_Source": ["source_3" if i % 2 else "source_7" for i in range(n)],
                      "Metadata_Plate": [f"JUMP-P{i % 2 + 1}" for i in range(n)], "Metadata_Well": wells,
                      "Metadata_JCP2022": jcp})
    feats = x.iloc[:n].reset_index(drop=True)
    names = pd.DataFrame({"feature": [f"X_{i + 1}" for i in range(feats.shape[1])], "name": feats.columns})
    t = pd.concat([t, feats.set_axis(names["feature"], axis=1).astype("float32")], axis=1)
    t.to_parquet(HERE / "jump_cpg0016_style.parquet", index=False)
    names.to_csv(HERE / "jump_cpg0016_feature_names.csv", index=False)
    extra = ids.iloc[np.sort(rng.choice(len(ids), 200, replace=False))]
    sub = pd.concat([pick, ids[ids["Metadata_JCP2022"] == "JCP2022_033924"], extra]).drop_duplicates()
    sub.sort_values("Metadata_JCP2022").to_csv(HERE / "jump_compound_ids_subset.csv.gz", index=False)


def idr0133(real: Path) -> None:
    """The treatment hold-out file byte for byte; every 7th well of the well hold-out (161 wells)."""
    d = real / "cell_injury_idr0133"
    (HERE / "idr0133_fs_treatment_holdout.csv.gz").write_bytes((d / "fs_treatment_holdout.csv.gz").read_bytes())
    wells = pd.read_csv(d / "fs_well_holdout.csv.gz", low_memory=False).iloc[::7]
    wells.to_csv(HERE / "idr0133_fs_well_holdout_every7th.csv.gz", index=False)


if __name__ == "__main__":
    real = Path(sys.argv[1])
    x = lincs_features(real)
    jump_moa_style(real, x)
    jump_cpg0016_style(real, x)
    idr0133(real)
