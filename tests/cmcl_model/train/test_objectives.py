"""Objectives as a list: the loop sums the registered objectives, a new one is one registration
line, and the numbers of a quick run are pinned (the refactor into config/objectives/loop must
not move them)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cmcl_model.train.ablation import ablation_variants, columns, run_ablation, variant_config
from cmcl_model.train.checkpoints import load_checkpoint, load_model
from cmcl_model.train.config import TrainConfig
from cmcl_model.train.layout import checkpoint_path, metrics_path
from cmcl_model.train.loop import train
from cmcl_model.train.objectives import OBJECTIVES, Objective, ObjectiveInputs, enabled_objectives, register, unregister
from tests.cmcl_model.conftest import quick_config

#: the epoch rows of two quick runs on ``syn_store`` (2 epochs x 3 steps of 16), computed by the
#: code before issue #26 split the training loop (main at d89e4b4). The tolerance (0.5 %) absorbs
#: float32 summation order (thread count, CPU: 1 vs 2 threads moves val_loss by 2e-4 relative);
#: a change in what the loop draws, weights or sums moves these by far more
PINNED = {
    "gic": [
        dict(step=3, train_loss=2.7129933834075928, train_infonce=2.8288710912068686, train_margin=1.6700944900512695,
             val_loss=3.085736036300659, val_mrr=0.1445967445230258),
        dict(step=6, train_loss=2.164174199104309, train_infonce=2.2489874760309854, train_margin=1.400855580965678,
             val_loss=2.9140496253967285, val_mrr=0.20359527380408388),
    ],
    "all": [
        dict(step=3, train_loss=4.2796562512715655, train_ggim=0.6676083207130432, train_infonce=2.775893052419027,
             train_margin=2.0456843773523965, train_mgm=4.588337739308675, val_loss=3.09114933013916,
             val_mrr=0.16591335438873378),
        dict(step=6, train_loss=3.729930559794108, train_ggim=0.6607895096143087, train_infonce=2.443174123764038,
             train_margin=1.7857066790262859, train_mgm=3.847554365793864, val_loss=3.035285711288452,
             val_mrr=0.19079003259600413),
    ],
}
PINNED_OPTS = {"gic": {}, "all": dict(mgm_weight=0.3, ggim_weight=0.3, gin_dropout=0.1)}


def _rows(run_dir):
    return [json.loads(line) for line in metrics_path(run_dir).read_text().splitlines()]


@pytest.mark.parametrize("variant", ["gic", "all"])
def test_quick_run_numbers_are_pinned(syn_store, variant):
    cfg = quick_config(epochs=2, batch_size=16, **PINNED_OPTS[variant])
    run = train(syn_store, cfg, run_id=f"20260101-000000-pin{variant}", progress=False)
    rows = _rows(run)
    assert len(rows) == len(PINNED[variant])
    for got, want in zip(rows, PINNED[variant]):
        assert {k for k in got if k.startswith("train_") and k != "train_samples_per_s"} == \
            {k for k in want if k.startswith("train_")}
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=5e-3, abs=1e-6), (variant, got["epoch"], key)


def _toy_head(graph_dim: int, proj_dim: int) -> nn.Module:
    return nn.Linear(proj_dim, 1)


def _toy(x: ObjectiveInputs) -> tuple[torch.Tensor, float]:
    """A toy objective with its own head: the head's score of every image embedding, pushed to 1."""
    score = x.model.head("toy")(F.normalize(x.all_image_emb, dim=-1)).squeeze(-1)
    term = (score - 1).pow(2).mean()
    return term, float(term.detach())


@pytest.fixture
def toy():
    """Register the toy objective: the loss above plus this one line."""
    objective = register(Objective("toy", _toy, head=_toy_head, default_weight=0.25))
    try:
        yield objective
    finally:
        unregister("toy")
    assert "toy" not in OBJECTIVES


def test_a_registered_objective_trains_and_is_ablated(syn_store, toy):
    base = quick_config(epochs=1, batch_size=32)  # 48 training compounds: one step
    assert enabled_objectives(base) == []
    cfg = dataclass_replace(base, objective_weights={"toy": 0.5})
    assert [o.name for o in enabled_objectives(cfg)] == ["toy"] and toy.weight(cfg) == 0.5
    run = train(syn_store, cfg, run_id="20260101-000000-toy000", progress=False)
    row = _rows(run)[0]
    assert row["step"] == 1 and row["train_toy"] > 0
    # the total is GIC (0.9 InfoNCE + 0.1 margin) plus 0.5 x the toy term
    assert row["train_loss"] == pytest.approx(0.9 * row["train_infonce"] + 0.1 * row["train_margin"] + 0.5 * row["train_toy"],
                                              rel=1e-5)
    ckpt = load_checkpoint(run, "last")
    assert any(k.startswith("toy_head.") for k in ckpt["model"]) and checkpoint_path(run, "best").is_file()
    model, loaded = load_model(run)
    assert loaded.objective_weights == {"toy": 0.5} and model.head_names == ("toy",)
    # the ablation picks it up by name: a variant, a weight column, its default weight
    assert ablation_variants() == {"gic": (), "gic+mgm": ("mgm",), "gic+ggim": ("ggim",), "gic+toy": ("toy",),
                                   "all": ("mgm", "ggim", "toy")}
    assert variant_config(base, "gic+toy").objective_weights == {"toy": 0.25}
    assert variant_config(cfg, "gic").objective_weights == {"toy": 0.0}
    df = run_ablation(syn_store, base, variants=("gic+toy",), evaluate_test=False)
    assert list(df.columns) == columns() and "toy_weight" in df.columns
    assert df.loc[0, "toy_weight"] == 0.25 and df.loc[0, "mgm_weight"] == 0
    assert "train_toy" in _rows(syn_store.run_dir(df.loc[0, "run_id"]))[0]


def test_objective_registry_rejects_bad_names_and_weights(toy):
    with pytest.raises(ValueError, match="cannot register objective 'toy'"):
        register(Objective("toy", _toy))
    with pytest.raises(ValueError, match="cannot register objective 'all'"):
        register(Objective("all", _toy))
    with pytest.raises(ValueError, match="unregistered objectives \\['nope'\\]"):
        enabled_objectives(TrainConfig.quick(objective_weights={"nope": 1.0}))
    with pytest.raises(ValueError, match="objective_weights must be finite and >= 0"):
        TrainConfig.quick(objective_weights={"toy": -1.0})
    assert TrainConfig.parse_overrides(['objective_weights={"toy": 1}']) == {"objective_weights": {"toy": 1.0}}
    with pytest.raises(ValueError, match="must be a JSON object"):
        TrainConfig.parse_overrides(["objective_weights=3"])


def dataclass_replace(config: TrainConfig, **changes) -> TrainConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)
