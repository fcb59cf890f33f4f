"""Fixtures: a synthetic store with a learnable molecule -> phenotype link, and one quick run."""

from __future__ import annotations

import pytest

from pipeline.synthetic.store import make_synthetic_store
from cmcl_model.train.config import TrainConfig
from cmcl_model.train.loop import train

#: split fractions giving ~24 validation and test compounds, so Hit@10 is below 1 by chance
FRACTIONS = (0.5, 0.25, 0.25)


def quick_config(**overrides) -> TrainConfig:
    return TrainConfig.quick(split_fractions=FRACTIONS, norm_crops=128, **overrides)


@pytest.fixture(scope="session")
def syn_store(tmp_path_factory):
    """96 compounds x 2 plates (one well each) + 4 DMSO wells per plate, 8 crops of 16 px per well."""
    return make_synthetic_store(tmp_path_factory.mktemp("store") / "store", n_compounds=96, seed=0)


@pytest.fixture(scope="session")
def quick_run(syn_store):
    """One short training run on ``syn_store`` (writes its split)."""
    return train(syn_store, quick_config(), run_id="20260101-000000-quick0", progress=False)
