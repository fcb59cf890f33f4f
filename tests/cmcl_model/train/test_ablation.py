"""Objective ablation: variant configs and the one-call table."""

import pandas as pd
import pytest

from cmcl_model.train.ablation import columns, run_ablation, summarize, variant_config
from cmcl_model.train.config import TrainConfig
from tests.cmcl_model.conftest import quick_config


def test_variant_configs():
    base = TrainConfig.quick(ggim_weight=0.2)
    assert (variant_config(base, "gic").mgm_weight, variant_config(base, "gic").ggim_weight) == (0.0, 0.0)
    assert (variant_config(base, "gic+mgm").mgm_weight, variant_config(base, "gic+mgm").ggim_weight) == (0.5, 0.0)
    assert variant_config(base, "gic+ggim").ggim_weight == 0.2  # the base's own weight is kept
    allc = variant_config(base, "all", weights={"mgm": 0.7})
    assert (allc.mgm_weight, allc.ggim_weight) == (0.7, 0.2)
    assert variant_config(base, "all").seed == base.seed and variant_config(base, "all").lr == base.lr
    with pytest.raises(ValueError, match="unknown ablation variant"):
        variant_config(base, "gic+foo")


def test_run_ablation_writes_table(syn_store, quick_run):
    with pytest.raises(ValueError, match="repeated"):
        run_ablation(syn_store, quick_config(), variants=("gic", "gic"))
    with pytest.raises(ValueError, match="seeds"):
        run_ablation(syn_store, quick_config(), seeds=(1, 1))
    df = run_ablation(syn_store, quick_config(epochs=1, max_steps=2), variants=("gic", "all"), seeds=(0, 1),
                      evaluate_test=False)
    assert list(df.columns) == columns() and list(df["variant"]) == ["gic", "gic", "all", "all"]
    assert list(df["seed"]) == [0, 1, 0, 1] and df["run_id"].nunique() == 4
    assert df.loc[2, "mgm_weight"] == 0.5 and df.loc[2, "ggim_weight"] == 0.5 and df.loc[0, "mgm_weight"] == 0
    assert (df["train_seconds"] > 0).all() and df["final_val_loss"].notna().all()
    for rid in df["run_id"]:
        assert (syn_store.run_dir(rid) / "checkpoints" / "best.pt").exists()
    import json

    last = json.loads((syn_store.run_dir(df.loc[2, "run_id"]) / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["train_mgm"] > 0 and last["train_ggim"] > 0  # every objective's term is logged
    back = pd.read_csv(df.attrs["csv"])
    assert list(back["variant"]) == ["gic", "gic", "all", "all"]
    from pathlib import Path

    md = Path(df.attrs["csv"]).with_suffix(".md").read_text()
    assert "Mean and sd over seeds [0, 1]" in md and md.count("| gic |") == 3  # summary row + 2 runs


def test_summarize_means_and_sds():
    df = pd.DataFrame({
        "variant": ["gic", "gic", "all"], "seed": [0, 1, 0], "test_mrr": [0.2, 0.4, 0.5],
        "final_val_loss": [3.0, 3.2, 2.0], "test_chance_hit@10": [0.1, 0.1, 0.1],
    })
    s = summarize(df).set_index("variant")
    assert list(s.index) == ["gic", "all"] and s.loc["gic", "n_seeds"] == 2
    assert s.loc["gic", "test_mrr"] == pytest.approx(0.3) and s.loc["gic", "test_mrr_sd"] == pytest.approx(0.1414, abs=1e-4)
    assert s.loc["all", "test_mrr"] == 0.5 and pd.isna(s.loc["all", "test_mrr_sd"])
