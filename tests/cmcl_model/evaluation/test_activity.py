"""Phenotypic activity side by side (cmcl_model.evaluation.activity.activity_comparison) and its report section."""

import numpy as np
import pandas as pd

from cmcl_model.evaluation.activity import activity_comparison
from cmcl_model.reports.sections import activity_html
from cmcl_model.reports.validation import metrics_schema, validate_json
from pipeline.store.paths import Store


def _plates(rng, shift):
    """2 plates x (16 DMSO + 6 compounds); compounds C0-C2 move along one direction, C3-C5 do not."""
    rows, x = [], []
    d = rng.normal(size=16)
    for plate in ("P1", "P2"):
        for i in range(16):
            rows.append((plate, "", "negcon"))
            x.append(rng.normal(size=16))
        for c in range(6):
            rows.append((plate, f"C{c}", "trt"))
            x.append(rng.normal(size=16) + (shift * d if c < 3 else 0))
    wells = pd.DataFrame(rows, columns=["Metadata_Plate", "Metadata_CompoundID", "Metadata_ControlType"])
    return wells, np.array(x)


def test_activity_calls_against_truth_and_in_metrics_and_report(tmp_path):
    rng = np.random.default_rng(0)
    strong, weak = _plates(rng, 6.0), _plates(rng, 0.0)
    truth = pd.DataFrame({"Metadata_CompoundID": [f"C{c}" for c in range(6)], "active": [True] * 3 + [False] * 3})
    act = activity_comparison(Store(tmp_path), {"model": strong, "untrained": weak}, ground_truth=truth, null_size=2000)
    assert set(act) == {"model", "untrained"}  # no CellProfiler profiles in an empty store
    m = act["model"]
    assert m["n_compounds"] == 6 and m["n_truly_active"] == 3
    assert m["recall"] == 1.0 and m["precision"] >= 0.75  # 3 of 3 active found, at most 1 false call
    assert act["untrained"]["n_retrieved"] <= 1
    assert act["model"]["mean_map"] > act["untrained"]["mean_map"]
    validate_json(act, metrics_schema()["properties"]["activity"], root=metrics_schema())
    page = activity_html(act)
    assert "precision" in page and "trained image encoder" in page and "100.0" in page and "75.0" in page
