"""Objective ablation: variant configs and the one-call table."""

import pandas as pd
import pytest

from cmcl_model.ablation import COLUMNS, run_ablation, variant_config
from cmcl_model.train import TrainConfig
from tests.cmcl_model.conftest import quick_config


def test_variant_configs():
    base = TrainConfig.quick(ggim_weight=0.2)
    assert (variant_config(base, "gic").mgm_weight, variant_config(base, "gic").ggim_weight) == (0.0, 0.0)
    assert (variant_config(base, "gic+mgm").mgm_weight, variant_config(base, "gic+mgm").ggim_weight) == (0.5, 0.0)
    assert variant_config(base, "gic+ggim").ggim_weight == 0.2  # the base's own weight is kept
    allc = variant_config(base, "all", mgm_weight=0.7)
    assert (allc.mgm_weight, allc.ggim_weight) == (0.7, 0.2)
    assert variant_config(base, "all").seed == base.seed and variant_config(base, "all").lr == base.lr
    with pytest.raises(ValueError, match="unknown ablation variant"):
        variant_config(base, "gic+foo")


def test_run_ablation_writes_table(syn_store, quick_run):
    with pytest.raises(ValueError, match="repeated"):
        run_ablation(syn_store.root, quick_config(), variants=("gic", "gic"))
    df = run_ablation(syn_store.root, quick_config(epochs=1, max_steps=2), variants=("gic", "all"), evaluate_test=False)
    assert list(df.columns) == COLUMNS and list(df["variant"]) == ["gic", "all"]
    assert df.loc[1, "mgm_weight"] == 0.5 and df.loc[1, "ggim_weight"] == 0.5 and df.loc[0, "mgm_weight"] == 0
    assert (df["train_seconds"] > 0).all() and df["final_val_loss"].notna().all()
    for rid in df["run_id"]:
        assert (syn_store.run_dir(rid) / "checkpoints" / "best.pt").exists()
    back = pd.read_csv(df.attrs["csv"])
    assert list(back["variant"]) == ["gic", "all"]
    from pathlib import Path

    assert Path(df.attrs["csv"]).with_suffix(".md").read_text().count("| gic") == 1
