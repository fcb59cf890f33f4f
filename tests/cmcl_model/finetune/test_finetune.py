"""Fine-tuning: masked losses, batching, scores, one tiny training, baselines, run init and report."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import Batch

from cmcl_model.finetune.run import (
    FinetuneConfig,
    GraphTensors,
    attribute_masking_pretrain,
    finetune_once,
    masked_bce,
    masked_mse,
    morgan_baseline,
    random_encoder,
    run_methods,
    task_scores,
)
from cmcl_model.reports.finetune import finetune_schema, format_table, run_finetune
from cmcl_model.finetune.labelled import load_shipped, prepare_labelled, split_molecules
from cmcl_model.reports.validation import validate_json

TINY = FinetuneConfig(epochs=2, batch_size=16, layers=2, hidden=16)


@pytest.fixture(scope="module")
def small():
    """60 BBBP molecules with a second, half-missing task."""
    frame, spec = load_shipped("bbbp")
    frame = frame.iloc[::34].reset_index(drop=True).head(60)
    frame["half"] = np.where(np.arange(len(frame)) % 2 == 0, frame["p_np"].to_numpy(float), np.nan)
    frame.loc[[0, 2], "half"] = [0.0, 1.0]
    data = prepare_labelled(frame, smiles_col="smiles", tasks=["p_np", "half"], name="small")
    return data, split_molecules(data.smiles, mode="scaffold")


def test_masked_bce_ignores_missing_labels():
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5], [-0.7, 4.0]], requires_grad=True)
    labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0], [float("nan"), float("nan")]])
    loss = masked_bce(logits, labels)
    keep = ~torch.isnan(labels)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits[keep], labels[keep])
    assert abs(loss.item() - ref.item()) < 1e-6
    loss.backward()
    assert (logits.grad[~keep] == 0).all() and (logits.grad[keep] != 0).all()
    assert masked_bce(logits, torch.full((3, 2), float("nan"))).item() == 0.0
    pred = torch.tensor([[1.0], [2.0], [5.0]])
    assert abs(masked_mse(pred, torch.tensor([[0.0], [float("nan")], [3.0]])).item() - 2.5) < 1e-6


def test_graph_tensors_batch_equals_pyg_batch(small):
    data, _ = small
    gt = GraphTensors(data.graphs)
    ids = torch.tensor([5, 0, 17, 3, 3])
    x, ei, ea, b, g = gt.batch(ids)
    ref = Batch.from_data_list([data.graphs[i] for i in ids.tolist()])
    assert g == 5
    for mine, theirs in ((x, ref.x), (ei, ref.edge_index), (ea, ref.edge_attr), (b, ref.batch)):
        assert torch.equal(mine, theirs)


def test_task_scores_skip_one_class_tasks():
    labels = np.array([[1, 0], [0, 0], [1, np.nan], [0, 0]], dtype=float)
    pred = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.5], [0.4, 0.2]])
    mean, per = task_scores(pred, labels, "classification")
    assert per == [1.0, None] and mean == 1.0
    mean, per = task_scores(np.array([[1.0], [3.0]]), np.array([[0.0], [np.nan]]), "regression")
    assert per == [1.0] and mean == 1.0


def test_finetune_once_is_seeded_and_learns_both_tasks(small):
    data, split = small
    runs = [finetune_once(random_encoder(TINY)(0), data, split, config=TINY, seed=s) for s in (0, 0, 1)]
    assert runs[0]["epochs_run"] == 2 and len(runs[0]["curve"]["val"]) == 2
    assert runs[0]["test"] == runs[1]["test"] and runs[0]["curve"] == runs[1]["curve"]
    assert runs[0]["curve"] != runs[2]["curve"]
    assert 0.0 <= runs[0]["test"] <= 1.0 and len(runs[0]["per_task_test"]) == 2
    stopped = finetune_once(random_encoder(TINY)(0), data, split, config=FinetuneConfig(
        epochs=30, batch_size=16, layers=2, hidden=16, patience=1), seed=0)
    assert stopped["select"] == "best_val" and stopped["epochs_run"] < 30
    assert stopped["test"] == stopped["test_best_val"]


@pytest.mark.parametrize("patience", [None, 3])
def test_a_stopped_run_resumes_to_the_numbers_of_an_uninterrupted_one(small, tmp_path, patience):
    """Stopped after its third of six epochs (the state is written before the epoch callback),
    then started again with the same state file and key: the same curves, best epoch, weights
    and test scores as a run never stopped; the file is gone at the end; another key starts over."""
    data, split = small
    cfg = FinetuneConfig(epochs=6, batch_size=16, layers=2, hidden=16, dropout=0.5, patience=patience)
    whole = finetune_once(random_encoder(cfg)(0), data, split, config=cfg, seed=0)
    state = tmp_path / "cell.pt"

    class Stop(Exception):
        pass

    def stop_at_3(epoch, epochs, val):
        if epoch == 3:
            raise Stop

    with pytest.raises(Stop):
        finetune_once(random_encoder(cfg)(0), data, split, config=cfg, seed=0, state_path=state, state_key="k",
                      on_epoch=stop_at_3)
    assert state.is_file()
    seen = []
    resumed = finetune_once(random_encoder(cfg)(0), data, split, config=cfg, seed=0, state_path=state, state_key="k",
                            on_epoch=lambda e, n, v: seen.append(e))
    assert seen and seen[0] == 4 and not state.exists()  # epochs 4.. only, then the state is removed
    for k in ("curve", "test", "test_last", "test_best_val", "best_epoch", "epochs_run", "per_task_test"):
        assert resumed[k] == whole[k], k
    for a, b in zip(whole["_model"].state_dict().values(), resumed["_model"].state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(Stop):
        finetune_once(random_encoder(cfg)(0), data, split, config=cfg, seed=0, state_path=state, state_key="k",
                      on_epoch=stop_at_3)
    fresh = []
    finetune_once(random_encoder(cfg)(1), data, split, config=cfg, seed=1, state_path=state, state_key="other",
                  on_epoch=lambda e, n, v: fresh.append(e))
    assert fresh[0] == 1  # another cell's state is not resumed


def test_regression_rmse_is_in_label_units():
    frame, _ = load_shipped("esol")
    data = prepare_labelled(frame.iloc[:80], smiles_col="smiles", tasks=["logp"], kind="regression", name="esol")
    split = split_molecules(data.smiles, mode="random")
    r = finetune_once(random_encoder(TINY)(0), data, split, config=TINY, seed=0)
    sd = np.nanstd(data.labels)
    assert 0.1 * sd < r["test"] < 5 * sd
    m = morgan_baseline(data, split, model="linear")
    assert 0.1 * sd < m["test"] < 5 * sd


def test_run_methods_table_and_schema(small):
    data, split = small
    res = run_methods(data, split, methods=["gin_random", "probe_random", "morgan_lr"], seeds=[0, 1],
                      encoders={"random": random_encoder(TINY)}, config=TINY)
    assert len(res["gin_random"]["test"]["per_seed"]) == 2 and len(res["morgan_lr"]["test"]["per_seed"]) == 1
    assert res["gin_random"]["test"]["sd"] >= 0 and set(res["morgan_lr"]["per_task_test"]) == {"p_np", "half"}
    assert "gin_random" in format_table([{"dataset": "small", "metric": "roc_auc", "methods": res}])
    with pytest.raises(ValueError, match="needs a 'pretrained' encoder"):
        run_methods(data, split, methods=["gin_pretrained"], seeds=[0], encoders={}, config=TINY)


def test_attribute_masking_changes_the_encoder(small):
    data, _ = small
    enc = random_encoder(TINY)(0)
    before = [p.detach().clone() for p in enc.parameters()]
    info = attribute_masking_pretrain(enc, data.graphs, epochs=2, batch_size=16)
    assert info["steps"] == 8 and np.isfinite(info["final_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, enc.parameters()))


def test_finetune_from_a_run_writes_json_split_and_report_section(syn_store, quick_run, small, tmp_path):
    from cmcl_model.reports.finetune import update_report

    data, _ = small
    csv = tmp_path / "small.csv"
    pd.DataFrame({"smiles": data.input_smiles, "p_np": data.labels[:, 0]}).to_csv(csv, index=False)
    report = syn_store.report_dir(quick_run.name) / "report.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("<html><body><h1>run</h1></body></html>")
    doc, path = run_finetune(csv=csv, smiles_col="smiles", tasks=["p_np"], init=quick_run.name, store=syn_store.root,
                             seeds=1, baselines=True, config=TINY)
    assert path == syn_store.report_dir(quick_run.name) / "finetune" / "small.json"
    validate_json(json.loads(path.read_text()), finetune_schema())
    assert set(doc["methods"]) == {"gin_pretrained", "gin_random_run", "gin_ssl", "gin_random", "morgan_lr", "morgan_rf"}
    assert doc["extra"]["pretrained_run"]["run"] == quick_run.name and doc["extra"]["ssl_pretraining"]["steps"] > 0
    split = pd.read_csv(path.with_name("small.split.csv"))
    assert len(split) == doc["n_molecules"] and sum(doc["split"]["sizes"].values()) == len(split)
    html = report.read_text()
    assert html.startswith("<html><body><h1>run</h1>") and "Downstream fine-tuning" in html and "gin_ssl" in html
    update_report(report.parent)  # replaces the section, never appends a second one
    assert report.read_text() == html
    with pytest.raises(FileNotFoundError, match="not found"):
        run_finetune(csv=csv, tasks=["p_np"], init="no-such-run", store=syn_store.root, config=TINY)


def test_hu2020_protocol_keeps_the_smiles_as_given():
    frame = pd.DataFrame({"smiles": ["NCCc1ccccc1.Cl", "CC(=O)[O-].[Na+]", "not a smiles", "c1ccccc1O"], "y": [1, 0, 1, 0]})
    cmcl = prepare_labelled(frame, smiles_col="smiles", tasks=["y"], name="t")
    hu = prepare_labelled(frame, smiles_col="smiles", tasks=["y"], name="t", protocol="hu2020")
    assert hu.protocol == "hu2020" and cmcl.protocol == "cmcl"
    assert hu.rows.tolist() == [0, 1, 3] and [r["row"] for r in hu.invalid] == [2] and hu.n_changed == 0
    assert hu.smiles[0] == "Cl.NCCc1ccccc1" and "." not in cmcl.smiles[0]
    assert hu.graphs[0].num_nodes == cmcl.graphs[0].num_nodes + 1  # the chloride is featurised too
    assert (hu.featurizer, cmcl.featurizer) == ("hu2020", "ogb")
    assert hu.graphs[0].x.shape[1] == 2 and cmcl.graphs[0].x.shape[1] == 9
    with pytest.raises(ValueError, match="protocol='x' is not one of cmcl, hu2020"):
        prepare_labelled(frame, smiles_col="smiles", tasks=["y"], protocol="x")


def test_hu2020_protocol_gives_the_published_dataset_sizes():
    """Hu et al. (2020), Table 5: BBBP 2,039 and ClinTox 1,478 molecules; scaffold split 80/10/10.
    Hu et al.'s featurizer has no index for the dummy atom of ClinTox's row 0 (``*C(=O)...``;
    their ``list(range(1, 119)).index(0)`` raises), so that row is reported, not featurised."""
    for name, featurizer, n in (("clintox", "ogb", 1478), ("clintox", "hu2020", 1477), ("bbbp", "hu2020", 2039)):
        frame, spec = load_shipped(name)
        data = prepare_labelled(frame, smiles_col=spec.smiles_col, tasks=spec.tasks, kind=spec.kind, name=name,
                                protocol="hu2020", featurizer=featurizer)
        split = split_molecules(data.smiles, mode="scaffold")
        assert len(data) == n and (split == "train").sum() == int(0.8 * n)
        if featurizer == "hu2020" and name == "clintox":
            assert [r["row"] for r in data.invalid if "*" in r["smiles"]] == [0]


def test_bf16_autocast_trains_and_one_pass_scoring_equals_two(small):
    from cmcl_model.finetune.run import predict

    data, split = small
    cfg = FinetuneConfig(epochs=1, batch_size=16, layers=2, hidden=16, precision="bf16")
    r = finetune_once(random_encoder(cfg)(0), data, split, config=cfg, seed=0)
    assert 0.0 <= r["test"] <= 1.0 and all(p.dtype == torch.float32 for p in r["_model"].parameters())
    gt = GraphTensors(data.graphs)
    val, test = (torch.from_numpy(np.flatnonzero(split == k)) for k in ("val", "test"))
    both = predict(r["_model"], gt, torch.cat([val, test]), 1024)
    apart = np.concatenate([predict(r["_model"], gt, val, 1024), predict(r["_model"], gt, test, 1024)])
    np.testing.assert_allclose(both, apart, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="precision='fp16' is not one of"):
        FinetuneConfig(precision="fp16")
