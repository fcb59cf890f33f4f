import json
import re

import torch

from cmcl_model.evaluation.metrics import chance
from cmcl_model.nn.model import CMCLModel
from cmcl_model.train.checkpoints import load_model
from cmcl_model.train.config import TrainConfig
from cmcl_model.train.rundir import new_run_id


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_short_run_learns(quick_run):
    rows = _metrics(quick_run)
    assert len(rows) == TrainConfig.quick().epochs
    assert rows[-1]["train_loss"] < 0.8 * rows[0]["train_loss"]
    # the loss terms are logged, and GIC = 0.9 InfoNCE + 0.1 margin adds up to the total
    assert "train_mgm" not in rows[0] and "train_ggim" not in rows[0]
    for r in rows:
        assert abs(0.9 * r["train_infonce"] + 0.1 * r["train_margin"] - r["train_loss"]) < 1e-4
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    n = rows[-1]["val_n_candidates"]
    assert n >= 15
    assert max(r["val_hit@10"] for r in rows[-5:]) > chance(n)["hit@10"] + 0.1
    assert rows[-1]["val_mrr"] > 1.5 * chance(n)["mrr"]


def test_run_dir_contents(quick_run, syn_store):
    cfg = json.loads((quick_run / "config.json").read_text())
    assert cfg["config"] == TrainConfig.from_dict(cfg["config"]).to_dict()
    assert any(k.startswith("tables/graphs") for k in cfg["data"]["fingerprints"])
    assert set(cfg["data"]["n_compounds"]) == {"train", "val", "test"}
    assert syn_store.table_path("split").exists()


def test_checkpoints_load_weights_only(quick_run):
    for which in ("best", "last"):
        ckpt = torch.load(quick_run / "checkpoints" / f"{which}.pt", weights_only=True)
        assert {"model", "optimizer", "config", "normalization", "position"} <= set(ckpt)
    model, config = load_model(quick_run)
    assert isinstance(model, CMCLModel) and not model.training
    assert config.gin_hidden == TrainConfig.quick().gin_hidden
    assert not list(quick_run.glob("checkpoints/*.tmp"))


def test_run_ids_sort_by_time():
    rid = new_run_id()
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", rid)


def test_config_roundtrip_and_validation():
    c = TrainConfig.demo()
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    import pytest

    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="tpu")
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"nope": 1})


def test_training_on_field_tiles(tmp_path, syn_store):
    """image_source='tiles': pairs draw field tiles (2x the crop edge) from the 'tiles' array,
    and evaluation reads the same source from the checkpoint's config."""
    import pytest

    from cmcl_model.data.pairs import PairDataset
    from cmcl_model.evaluation.run import evaluate
    from pipeline.synthetic.store import make_synthetic_store
    from cmcl_model.train.loop import train

    from ..conftest import quick_config

    with pytest.raises(FileNotFoundError, match="field-tile-size"):
        PairDataset(syn_store, source="tiles")
    store = make_synthetic_store(tmp_path / "tiles", n_compounds=48, tiles=True, seed=1)
    ds = PairDataset(store, source="tiles", crops_per_sample=2, norm_crops=64)
    graph, x = ds[0]
    assert x.shape == (2, 5, 32, 32)
    assert all(r.array_name == "tiles" and r.rows.shape[-1] == 32 for r in ds.readers.values())
    run = train(store, quick_config(epochs=3, image_source="tiles"), progress=False)
    rows = _metrics(run)
    assert len(rows) == 3 and rows[-1]["train_loss"] < rows[0]["train_loss"]
    res = evaluate(store.root, run)
    assert res["split"]["test_evaluated"] >= 10


def test_masked_graph_pass_leaves_batchnorm_running_stats_alone(syn_store):
    """MGM re-encodes masked graphs; the batch-norm running statistics must still describe
    unmasked graphs (they are what evaluation uses). With and without MGM, one training step's
    running statistics must be identical, while MGM's gradient still reaches the encoder."""
    from torch.utils.data import DataLoader

    from cmcl_model.data.pairs import PairDataset, UniqueCompoundBatchSampler, collate_pairs
    from cmcl_model.train.build import build_model
    from cmcl_model.train.objectives import build_loss, compute_losses

    ds = PairDataset(syn_store, crops_per_sample=2, norm_crops=64)
    batch = next(iter(DataLoader(ds, batch_sampler=UniqueCompoundBatchSampler(ds.keys, 16, seed=0),
                                 collate_fn=collate_pairs)))
    import copy

    torch.manual_seed(0)
    built = build_model(TrainConfig.quick(mgm_weight=0.5))  # one set of weights for both runs
    stats = {}
    for mgm in (0.0, 0.5):
        cfg = TrainConfig.quick(mgm_weight=mgm)
        model, loss_fn = copy.deepcopy(built), build_loss(cfg)
        model.train()
        loss, parts, _, _ = compute_losses(model, loss_fn, batch, cfg)
        loss.backward()
        assert ("mgm" in parts) == (mgm > 0)
        stats[mgm] = {k: v.clone() for k, v in model.graph_encoder.state_dict().items()
                      if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
        if mgm:
            assert model.graph_encoder.atom_encoder.mask_index is not None
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.mgm_head.parameters())
            assert all(m.momentum == 0.1 for m in model.graph_encoder.modules() if isinstance(m, torch.nn.BatchNorm1d))
    assert stats[0.0].keys() == stats[0.5].keys() and stats[0.0]
    for k in stats[0.0]:
        assert torch.equal(stats[0.0][k], stats[0.5][k]), k
