"""Per-cell CellProfiler features (pipeline.features.measure, on cp_measure)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from pipeline.features.measure import FEATURE_PATTERN, feature_columns, labels_from_outlines, measure_objects

CH = ("DNA", "ER", "RNA", "AGP", "Mito")


@pytest.fixture(scope="module")
def field():
    """Three cells (discs) around three nuclei, one nucleus-only object, random pixels."""
    yy, xx = np.mgrid[:96, :96]
    nuclei = np.zeros((96, 96), np.int32)
    cells = np.zeros((96, 96), np.int32)
    for k, (y, x) in enumerate([(24, 24), (24, 70), (70, 40)], start=1):
        cells[(yy - y) ** 2 + (xx - x) ** 2 <= 14 ** 2] = k
        nuclei[(yy - y) ** 2 + (xx - x) ** 2 <= 6 ** 2] = k
    nuclei[88:92, 88:92] = 7  # label gap; its cell is only its nucleus (empty cytoplasm)
    cells[88:92, 88:92] = 7
    rng = np.random.default_rng(0)
    image = rng.uniform(500, 4000, (5, 96, 96)).astype(np.float32)
    return image, nuclei, cells


def test_default_features_are_cellprofiler_named_and_measure_what_they_say(field):
    image, nuclei, cells = field
    f = measure_objects(image, nuclei, cells, channel_names=CH)
    assert f["Metadata_CellID"].tolist() == [1, 2, 3, 7]
    feats = feature_columns(f.columns)
    assert len(feats) == f.shape[1] - 1 and all(f[c].dtype == np.float32 for c in feats)
    for c in ("Cells_AreaShape_Area", "Nuclei_Intensity_MeanIntensity_DNA", "Cytoplasm_Intensity_MeanIntensity_Mito",
              "Cells_Texture_Contrast_RNA_3_00_256", "Cells_Correlation_Correlation_ER_Mito", "Cells_Correlation_Correlation_AGP_RNA"):
        assert c in f.columns
    ids = [1, 2, 3, 7]
    np.testing.assert_array_equal(f["Cells_AreaShape_Area"], ndi.sum(np.ones_like(cells), cells, ids))
    np.testing.assert_array_equal(f["Nuclei_AreaShape_Area"], ndi.sum(np.ones_like(nuclei), nuclei, ids))
    # CellProfiler's units: uint16 full scale is 1.0
    np.testing.assert_allclose(f["Nuclei_Intensity_MeanIntensity_DNA"], ndi.mean(image[0] / 65535, nuclei, ids), rtol=1e-5)
    cyto = np.where(nuclei > 0, 0, cells)
    np.testing.assert_allclose(f["Cytoplasm_Intensity_IntegratedIntensity_ER"][:3],
                               ndi.sum(image[1] / 65535, cyto, ids[:3]), rtol=1e-5)
    assert np.isnan(f["Cytoplasm_Intensity_MeanIntensity_ER"].iloc[3])  # no cytoplasm: NaN, row kept
    # a subset of ids, in the order asked
    sub = measure_objects(image, nuclei, cells, channel_names=CH, ids=np.array([3, 1]))
    pd.testing.assert_frame_equal(sub.reset_index(drop=True), f.iloc[[2, 0]].reset_index(drop=True))


def test_full_set_adds_cellprofiler_modules(field):
    image, nuclei, cells = field
    f = measure_objects(image, nuclei, cells, channel_names=CH, feature_set="full")
    for c in ("Nuclei_AreaShape_Zernike_2_0", "Cells_AreaShape_MaxFeretDiameter", "Cytoplasm_Granularity_2_AGP",
              "Cells_RadialDistribution_FracAtD_Mito_2of4", "Nuclei_Correlation_RWC_DNA_ER", "Nuclei_Correlation_RWC_ER_DNA", "Cells_Correlation_Manders_Mito_AGP",
              "Cytoplasm_Texture_Entropy_ER_3_01_256", "Cells_Intensity_MeanIntensityEdge_RNA"):
        assert c in f.columns, c
    assert f.shape[1] > 2000
    with pytest.raises(ValueError, match="'default', 'full'"):
        measure_objects(image, nuclei, cells, channel_names=CH, feature_set="fast")


def test_agreement_with_cellprofiler_on_the_real_field():
    """Same objects as CellProfiler (rebuilt from its outlines): shape agrees to ~1 %, Pearson
    correlations to ~2 %; intensities (CellProfiler's were illumination-corrected with functions
    not in the export) agree up to a per-channel factor, r > 0.98 across cells."""
    from benchmarks.cellprofiler_agreement import agreement, measured_vs_cellprofiler

    ours, cp = measured_vs_cellprofiler(feature_set="default")
    t = agreement(ours, cp).set_index("column")
    assert len(t) > 150
    for c in ("Nuclei_AreaShape_Area", "Cells_AreaShape_Area"):
        assert t.loc[c, "median_rel_diff"] < 1e-3, c
    for c in ("Nuclei_AreaShape_Perimeter", "Cells_AreaShape_Perimeter", "Cells_AreaShape_Solidity",
              "Nuclei_AreaShape_MajorAxisLength", "Cells_AreaShape_Eccentricity"):
        assert t.loc[c, "median_rel_diff"] < 0.02, c
    pearson = t[t.index.str.contains("Correlation_Correlation")]
    assert len(pearson) >= 1 and (pearson["median_rel_diff"] < 0.03).all()
    means = t[t.index.str.contains("Intensity_MeanIntensity_")]
    assert len(means) == 15 and means["r"].median() > 0.98


def test_labels_from_outlines_rebuilds_touching_objects():
    labels = np.zeros((40, 40), np.int32)
    labels[5:20, 5:20], labels[5:20, 20:35] = 1, 2
    from skimage.segmentation import find_boundaries

    outlines = find_boundaries(labels, mode="inner").astype(np.uint16)
    rebuilt = labels_from_outlines(np.stack([outlines] * 3, axis=-1))
    assert rebuilt.max() == 2
    assert sorted(np.bincount(rebuilt.ravel())[1:].tolist()) == [225, 225]
    assert FEATURE_PATTERN.match("Cytoplasm_AreaShape_Area") and not FEATURE_PATTERN.match("Metadata_Well")


def test_ingest_writes_features_keyed_like_cells(tmp_path, prefect_api):
    from pipeline.ingest.run import IngestSettings, ingest_plate
    from pipeline.store.paths import Store
    from pipeline.synthetic import generate
    from pipeline.store.verify import verify_store

    plate = generate(tmp_path / "in", plate_id="FT", n_wells=8, sites=1, size=160, seed=1)
    store = Store(tmp_path / "s")
    r = ingest_plate(plate, store, IngestSettings(crop_size=32, features="default"), processes=1)
    cells = store.read("cells")
    feats = store.read("features")
    assert len(feats) == len(cells) == r.n_cells > 0
    key = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_CellID", "Metadata_CropIndex"]
    pd.testing.assert_frame_equal(feats[key], cells[key])
    np.testing.assert_array_equal(feats["Cells_AreaShape_Area"], cells["AreaShape_CellArea"])
    np.testing.assert_allclose(feats["Cells_Intensity_MeanIntensity_DNA"] * 65535, cells["Intensity_Mean_DNA"], rtol=1e-4)
    assert verify_store(store.root) == []
    # the demo's path: well profiles and consensus from these cells, read back by pycytominer
    import pycytominer
    from pycytominer.cyto_utils import infer_cp_features

    from flows.profiles import profile_flow

    out = profile_flow(str(store.root), null_size=200)
    assert out["plates_profiled"] == ["FT"]
    for name in ("profiles_wells", "profiles_selected", "profiles_consensus"):
        df = store.read(name)
        assert infer_cp_features(df) == feature_columns(df.columns) and len(infer_cp_features(df)) > 0
        pycytominer.feature_select(df, features="infer", operation="drop_na_columns")
    wells = store.read("profiles_wells")
    assert len(wells) == 8 and wells["Metadata_Count_Cells"].sum() == len(cells)
    dmso = wells[wells["Metadata_ControlType"] == "negcon"]
    assert np.allclose(dmso["Cells_AreaShape_Area"].median(), 0, atol=1e-6)  # mad_robustize centres DMSO
    assert verify_store(store.root) == []
    assert profile_flow(str(store.root), null_size=200)["plates_profiled"] == []  # incremental
