import json

from cmcl_model.evaluate import evaluate

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


def test_evaluate_writes_metrics(quick_run, syn_store):
    result = evaluate(syn_store.root, quick_run, seeds=(0, 1))
    path = syn_store.report_dir(quick_run.name) / "metrics.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(result))
    assert (syn_store.report_dir(quick_run.name) / "report.html").read_text().startswith("<!doctype html>")
    n = result["n_candidates"]["fullpool"]
    assert result["n_candidates"]["hit101"] == min(101, n)
    assert result["split"]["test"] == n == result["split"]["test_evaluated"]
    for r in [result["model"], result["chance"], *result["baselines"].values()]:
        _check_r(r, n)
    assert set(result["baselines"]) == {"untrained", "morgan_ridge"}
    # the planted signal is learnable: the trained model beats chance and the untrained model
    m = result["model"]["fullpool"]
    assert m["graph_to_image"]["mrr"] > 1.5 * result["chance"]["fullpool"]["graph_to_image"]["mrr"]
    assert m["graph_to_image"]["mrr"] > result["baselines"]["untrained"]["fullpool"]["graph_to_image"]["mrr"]
