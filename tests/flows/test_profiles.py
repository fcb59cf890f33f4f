"""Profiles end to end: `cmcl import-profiles` + `cmcl profile` on the real LINCS plate, and the
activity mAP against copairs called directly on the same table."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.features.measure import feature_columns
from pipeline.store.paths import Store

runner = CliRunner()
LINCS = Path(__file__).resolve().parents[1] / "data" / "profiles_lincs_SQ00015054"


def _ok(args):
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def lincs_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("lincs")
    out = _ok(["--quiet", "import-profiles", str(LINCS / "SQ00015054_normalized_feature_select.csv.gz"),
               "--store", str(store), "--samples", str(LINCS / "repurposing_samples_20200324.txt"),
               "--drugs", str(LINCS / "repurposing_simple.tsv")])
    assert "384 wells x 454 features" in out
    out = _ok(["--quiet", "profile", "--store", str(store), "--null-size", "2000"])
    assert "compounds retrieved" in out
    return Store(store)


def test_import_then_profile_writes_the_activity_table(lincs_store):
    act = lincs_store.read("activity")
    assert {"Metadata_InChIKey", "mean_average_precision", "p_value", "corrected_p_value"} <= set(act.columns)
    assert len(act) == 58  # every compound of the plate (DMSO excluded); 6 or 12 wells each
    assert act["Metadata_InChIKey"].notna().sum() >= 40  # joined through the Drug Repurposing Hub
    assert act["Metadata_InChIKey"].dropna().str.fullmatch(r"[A-Z]{14}-[A-Z]{10}-[A-Z]").all()
    assert ((act["p_value"] >= 0) & (act["p_value"] <= 1)).all()
    assert (act["corrected_p_value"] >= act["p_value"] - 1e-12).all()
    wells = lincs_store.read("profiles_imported")
    assert len(wells) == 384 and (wells["Metadata_ControlType"] == "negcon").sum() == 24
    assert wells["Metadata_MOA"].notna().sum() > 300
    assert set(wells.loc[wells["Metadata_InChIKey"].notna(), "Metadata_Identity"]) == {"map:Metadata_broad_sample"}
    assert lincs_store.read("profiles_selected")["Metadata_Source"].unique().tolist() == [wells["Metadata_Source"][0]]
    # rerun: nothing to do
    assert "0 plate(s) profiled" in _ok(["--quiet", "profile", "--store", str(lincs_store.root), "--null-size", "2000"])


def test_activity_equals_copairs_called_directly(lincs_store):
    from copairs import map as cmap
    from copairs.matching import assign_reference_index

    raw = pd.read_csv(LINCS / "SQ00015054_normalized_feature_select.csv.gz")
    feats = feature_columns(raw.columns)
    meta = raw[["Metadata_Plate", "Metadata_broad_sample"]].copy()
    meta = assign_reference_index(meta, "Metadata_broad_sample == 'DMSO'", reference_col="ref", default_value=-1)
    pos = ["Metadata_broad_sample", "ref"]
    ap = cmap.average_precision(meta, raw[feats].to_numpy(), pos_sameby=pos, pos_diffby=[],
                                neg_sameby=["Metadata_Plate"], neg_diffby=pos, progress_bar=False)
    ap = ap[ap["Metadata_broad_sample"] != "DMSO"]
    direct = cmap.mean_average_precision(ap, pos, null_size=2000, threshold=0.05, seed=0, progress_bar=False)
    direct = direct.set_index("Metadata_broad_sample").sort_index()
    ours = lincs_store.read("activity").set_index("Metadata_CompoundID").sort_index()
    assert list(ours.index) == list(direct.index)
    np.testing.assert_allclose(ours["mean_average_precision"], direct["mean_average_precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["p_value"], direct["p_value"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["corrected_p_value"], direct["corrected_p_value"], rtol=0, atol=1e-12)


def test_profile_tables_read_back_with_pycytominer_infer(lincs_store):
    import pycytominer
    from pycytominer.cyto_utils import infer_cp_features

    for name in ("profiles_imported", "profiles_selected", "profiles_consensus"):
        df = lincs_store.read(name)
        assert infer_cp_features(df) == feature_columns(df.columns) and len(feature_columns(df.columns)) == 454
        out = pycytominer.feature_select(df, features="infer", operation="variance_threshold")
        assert 0 < len(feature_columns(out.columns)) <= 454


def test_import_refuses_a_table_without_features(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"Metadata_Plate": ["P"], "Metadata_Well": ["A01"], "x": [1.0]}).to_csv(bad, index=False)
    result = runner.invoke(app, ["import-profiles", str(bad), "--store", str(tmp_path / "s")])
    assert result.exit_code != 0 and "feature columns" in result.output


def test_moa_consistency_where_labels_exist(lincs_store):
    cons = lincs_store.read("consistency")
    wells = lincs_store.read("profiles_selected")
    shared = wells[wells["Metadata_ControlType"] == "trt"].groupby("Metadata_MOA")["Metadata_CompoundID"].nunique()
    assert set(cons["Metadata_MOA"]) == set(shared.index[shared >= 2])  # every MOA with 2+ compounds
    assert (cons["Metadata_N_Compounds"] >= 2).all()
    assert ((cons["p_value"] >= 0) & (cons["p_value"] <= 1)).all()


def test_moa_consistency_summary_in_metrics_and_report(lincs_store):
    from cmcl_model.evaluation.activity import consistency_summary
    from cmcl_model.reports.sections import consistency_html
    from cmcl_model.reports.validation import metrics_schema, validate_json

    summary = consistency_summary(lincs_store)
    cons = lincs_store.read("consistency")
    (source, s), = summary.items()  # one source: the imported plate
    assert source.startswith("import:") and s["n_moas"] == len(cons) >= 2
    assert s["n_consistent"] == int(cons["below_corrected_p"].sum())
    assert s["mean_map"] == pytest.approx(cons["mean_average_precision"].mean())
    validate_json(summary, metrics_schema()["properties"]["consistency"], root=metrics_schema())
    page = consistency_html(summary)
    assert "MOA consistency" in page and f"<td>{s['n_moas']}</td>" in page
    assert consistency_summary(Store(lincs_store.root / "empty")) == {}
