"""Negative controls (pipeline/profiles/controls.py) and what profiling does with a plate that has none
(pipeline/profiles/wells.py), on the real LINCS plate SQ00015054 (tests/data/profiles_lincs_SQ00015054)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.profiles.controls import NegconError, mark_negcon, negcon_mask, parse_negcon, plates_without_negcon
from pipeline.features.measure import feature_columns
from pipeline.profiles.wells import normalize_plate, phenotypic_activity

LINCS = Path(__file__).resolve().parents[2] / "data" / "profiles_lincs_SQ00015054"


def test_parse_negcon_strips_dedups_and_refuses_nothing():
    assert parse_negcon(" DMSO, negcon,,dmso ,Vehicle") == ("DMSO", "negcon", "Vehicle")
    assert parse_negcon(["empty"]) == ("empty",)
    assert parse_negcon(None) == ("DMSO", "negcon", "vehicle", "negative")
    with pytest.raises(NegconError, match="--negcon"):
        parse_negcon(" , ")


def test_negcon_mask_matches_control_type_or_compound_without_case():
    t = pd.DataFrame({"Metadata_ControlType": ["negcon", "Vehicle", "trt", "poscon", None, "trt"],
                      "Metadata_CompoundID": [None, "x", " dmso", "y", "DMSO", "BRD-1"]})
    assert negcon_mask(t).tolist() == [True, True, True, False, True, False]
    assert negcon_mask(t, ["empty"]).tolist() == [False] * 6
    # IDR0133's 'Control Type' column says Negative / Positive
    injury = pd.DataFrame({"Metadata_ControlType": ["Negative", "Positive", None], "Metadata_CompoundID": ["x", "y", "z"]})
    assert negcon_mask(injury).tolist() == [True, False, False]
    marked = mark_negcon(t, ["vehicle"])  # the labels are the definition: 'negcon' unmatched -> 'trt'
    got = marked["Metadata_ControlType"]
    assert got.isna().tolist() == [False] * 4 + [True, False]
    assert got.fillna("-").tolist() == ["trt", "negcon", "trt", "poscon", "-", "trt"]
    assert t["Metadata_ControlType"].iloc[1] == "Vehicle"  # input untouched


@pytest.fixture(scope="module")
def two_plates():
    """The real LINCS plate twice: as is (24 DMSO wells) and as plate 'NODMSO' without its DMSO wells."""
    raw = pd.read_csv(LINCS / "SQ00015054_normalized_feature_select.csv.gz", low_memory=False)
    feats = feature_columns(raw.columns)[:12]
    a = pd.DataFrame({"Metadata_Plate": "SQ00015054", "Metadata_Well": raw["Metadata_Well"],
                      "Metadata_CompoundID": raw["Metadata_broad_sample"].fillna("DMSO"),
                      "Metadata_ControlType": "trt"})
    a = pd.concat([a, raw[feats]], axis=1)
    a = mark_negcon(a)
    b = a[a["Metadata_ControlType"] != "negcon"].assign(Metadata_Plate="NODMSO")
    return pd.concat([a, b], ignore_index=True), feats


def test_a_plate_without_negcon_is_normalized_against_all_its_wells(two_plates):
    wells, feats = two_plates
    assert plates_without_negcon(wells) == ["NODMSO"]
    out = normalize_plate(wells)  # no error
    assert len(out) == len(wells)
    flag = out.groupby("Metadata_Plate")["Metadata_NormalizedTo"].unique()
    assert list(flag["SQ00015054"]) == ["negcon"] and list(flag["NODMSO"]) == ["all"]
    for plate, ref_rows in (("SQ00015054", wells["Metadata_ControlType"].eq("negcon")), ("NODMSO", None)):
        sel = wells["Metadata_Plate"] == plate
        x = wells.loc[sel, feats].to_numpy(float)
        ref = x if ref_rows is None else wells.loc[sel & ref_rows, feats].to_numpy(float)
        med = np.median(ref, axis=0)
        mad = np.median(np.abs(ref - med), axis=0) * 1.4826
        expect = (x - med) / (mad + 1e-18)  # pycytominer's mad_robustize epsilon
        got = out.loc[out["Metadata_Plate"] == plate, feats].to_numpy(float)
        np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)


def test_activity_leaves_out_the_plate_it_cannot_score(two_plates):
    wells, feats = two_plates
    x = wells[feats].to_numpy(float)
    act = phenotypic_activity(wells, x, null_size=200)
    assert act.attrs["plates_without_negcon"] == ["NODMSO"]
    alone = wells["Metadata_Plate"] == "SQ00015054"
    ref = phenotypic_activity(wells[alone], x[alone.to_numpy()], null_size=200)
    assert ref.attrs["plates_without_negcon"] == []
    pd.testing.assert_frame_equal(act, ref)  # the unscorable plate changes nothing
    assert len(act) > 40


def test_platemap_csv_control_type_columns_are_read(tmp_path):
    from pipeline.plates.discovery import read_platemap

    f = tmp_path / "platemap.csv"
    f.write_text("Metadata_Well,Metadata_CompoundID,Metadata_SMILES,Control Type\n"
                 "A01,,,vehicle\nA02,C1,CCO,\nA03,,,\nA04,C2,CCN,poscon\n")
    pm = read_platemap(f, plate="P")
    assert pm["Metadata_ControlType"].tolist() == ["vehicle", "trt", "negcon", "poscon"]
    assert negcon_mask(pm).tolist() == [True, False, True, False]


def test_store_labels_default_then_kept(tmp_path):
    from pipeline.profiles.choices import DEFAULT_NEGCON
    from pipeline.profiles.controls import record_negcon, store_negcon
    from pipeline.store.paths import Store

    st = Store(tmp_path / "store")
    assert store_negcon(st) == DEFAULT_NEGCON and record_negcon(st, None) == DEFAULT_NEGCON
    assert not st.path("profiles_negcon").exists()  # nothing written until labels are given
    record_negcon(st, ["vehicle", "VEHICLE", "empty"])
    assert store_negcon(st) == ("vehicle", "empty")
    with pytest.raises(NegconError):
        record_negcon(st, ",")
    assert store_negcon(st) == ("vehicle", "empty")  # a refused list leaves the store's labels alone
