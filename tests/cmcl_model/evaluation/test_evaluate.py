import base64
import io
import json
import re

import pytest

from cmcl_model.evaluation.run import evaluate
from cmcl_model.reports.validation import validate_metrics

HIT = {"hit@1", "hit@3", "hit@5", "hit@10", "mrr", "mean_rank"}
FULL = {"recall@1", "recall@5", "recall@10", "mrr", "mean_rank"}


def _check_r(r, n):
    assert set(r) == {"hit101", "fullpool"}
    for proto, names in (("hit101", HIT), ("fullpool", FULL)):
        assert set(r[proto]) == {"graph_to_image", "image_to_graph"}
        for d in r[proto].values():
            assert set(d) == names
            for k, v in d.items():
                assert (1 <= v <= n) if k == "mean_rank" else (0 <= v <= 1)


@pytest.fixture(scope="module")
def evaluated(quick_run, syn_store):
    return evaluate(syn_store.root, quick_run, seeds=(0, 1), probe_folds=3, probe_max_molecules=150)


def test_evaluate_writes_metrics(evaluated, quick_run, syn_store):
    result = evaluated
    path = syn_store.report_dir(quick_run.name) / "metrics.json"
    written = json.loads(path.read_text())
    assert written == json.loads(json.dumps(result))
    validate_metrics(written)  # the layout declared in schemas/reports/metrics.json
    n = result["n_candidates"]["fullpool"]
    assert result["n_candidates"]["hit101"] == min(101, n)
    assert result["split"]["test"] == n == result["split"]["test_evaluated"]
    for r in [result["model"], result["chance"], *result["baselines"].values()]:
        _check_r(r, n)
    _check_r(result["crop_level"], result["crop_level_n"]["crops"])
    _check_r(result["crop_level_chance"], result["crop_level_n"]["crops"])
    assert result["crop_level_n"]["compounds"] == n
    assert set(result["baselines"]) == {"untrained", "morgan_ridge", "morgan_cca"}
    # the planted signal is learnable: the trained model beats chance and the untrained model
    m = result["model"]["fullpool"]
    assert m["graph_to_image"]["mrr"] > 1.5 * result["chance"]["fullpool"]["graph_to_image"]["mrr"]
    assert m["graph_to_image"]["mrr"] > result["baselines"]["untrained"]["fullpool"]["graph_to_image"]["mrr"]
    # ... and single crops carry it too, less reliably than the mean of a compound's crops
    c = result["crop_level"]["fullpool"]["image_to_graph"]
    assert c["mrr"] > result["crop_level_chance"]["fullpool"]["image_to_graph"]["mrr"]


def test_probe_in_metrics(evaluated):
    p = evaluated["probe"]
    assert p["dataset"] == "solubility" and p["metric"] == "rmse" and p["n_molecules"] == 150
    assert set(p["results"]) == {"pretrained_gin", "random_gin", "morgan", "train_mean"}
    for v in p["results"].values():
        assert len(v["per_fold"]) == 3 and v["mean"] > 0
    # real structure-property signal: fingerprints beat predicting the mean
    assert p["results"]["morgan"]["mean"] < p["results"]["train_mean"]["mean"]


def test_metrics_validation_rejects_bad_layout(evaluated):
    bad = json.loads(json.dumps(evaluated))
    bad["model"]["hit101"]["graph_to_image"]["hit@10"] = 1.5
    with pytest.raises(ValueError, match=r"model\.hit101\.graph_to_image\.hit@10"):
        validate_metrics(bad)
    del bad["crop_level"]
    with pytest.raises(ValueError, match="missing keys"):
        validate_metrics(bad)


def test_report_embeds_decodable_images(evaluated, quick_run, syn_store):
    from PIL import Image

    text = (syn_store.report_dir(quick_run.name) / "report.html").read_text()
    assert text.startswith("<!doctype html>")
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert len(srcs) == len(re.findall(r"<img ", text))
    # curves, rank histograms, 3 example queries (molecule + crops), embedding map, plate QC
    assert len(srcs) >= 1 + 1 + 6 + 1 + 1
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        img.load()
        assert img.size[0] > 50 and img.size[1] > 50
    for heading in ("Training", "Retrieval", "Rank histograms", "Example queries", "Embedding map", "Plate QC", "Downstream probe"):
        assert f"<h2>{heading}" in text
    assert "morgan_cca" in text and "crop level" in text
