"""`cmcl demo --real --quick`: the shipped real profiles imported, profile-mode training, held-out retrieval."""

import json

import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.store.paths import Store

runner = CliRunner()


@pytest.mark.slow
def test_demo_real_quick_trains_both_negative_settings(tmp_path):
    store = tmp_path / "store"
    result = runner.invoke(app, ["--quiet", "demo", "--real", "--quick", "--store", str(store)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "IDR0133" in out and "chance" in out and "morgan_cca" in out and "within_source" in out
    st = Store(store)
    runs = st.runs()
    assert len(runs) == 2
    negatives = set()
    for run in runs:
        m = json.loads((st.report_dir(run) / "metrics.json").read_text())
        negatives.add(m["negatives"])
        # ~150 real compounds: a scaffold split leaves a few dozen test compounds, all ranked
        assert 10 <= m["split"]["test_evaluated"] <= 60
        assert m["n_candidates"]["hit101"] == m["n_candidates"]["fullpool"] == m["split"]["test_evaluated"]
        lo, hi = m["ci"]["model"]["fullpool"]["graph_to_image"]["recall@10"]
        assert lo <= m["model"]["fullpool"]["graph_to_image"]["recall@10"] <= hi
        assert "bootstrap intervals" in (st.report_dir(run) / "report.html").read_text()
    assert negatives == {"any", "within_source"}
    # both real sources were imported and standardized
    sources = set(st.read("profiles_imported", ["Metadata_Source"])["Metadata_Source"])
    assert sources == {"import:idr0133_cell_injury.parquet", "import:SQ00015054_normalized_feature_select.csv.gz"}
