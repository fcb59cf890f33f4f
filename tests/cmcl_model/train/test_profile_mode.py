"""Profile-mode pre-training on a store holding only imported (real LINCS) profiles."""

import json

import numpy as np
import pytest
import torch

from cmcl_model.evaluation.run import evaluate
from cmcl_model.evaluation.metrics import bootstrap_ci, fullpool, hit101, per_query_metrics
from cmcl_model.data.profiles import ProfileDataError, ProfileDataset, StratifiedBatchSampler
from cmcl_model.train.checkpoints import load_checkpoint
from cmcl_model.train.config import TrainConfig
from cmcl_model.train.loop import train
from pipeline.store.paths import Store
from tests.cmcl_model.profile_store import imported_profile_store


def _config(**overrides) -> TrainConfig:
    base = dict(image_source="profiles", epochs=3, batch_size=16, mlp_widths=(64, 32), split_fractions=(0.6, 0.2, 0.2))
    return TrainConfig.quick(**{**base, **overrides})


@pytest.fixture(scope="module")
def pstore(tmp_path_factory):
    """The LINCS plate imported twice, as two labs (plates P0, P1), with its compounds standardized."""
    return imported_profile_store(tmp_path_factory.mktemp("profiles") / "store", plates=2)


def test_dataset_pairs_compounds_doses_and_standardizes_per_batch(pstore):
    ds = ProfileDataset(pstore)
    assert ds.x.dtype == np.float32 and ds.n_features == 454
    # one item per (parent, dose): the compounds with a Hub structure (45-48 of 58), (up to) 6 doses each
    trt = ds.meta[(ds.meta["Metadata_ControlType"] == "trt") & ds.meta["Metadata_Parent"].notna()]
    n = len(ds.keys)
    assert n >= 45 and n == trt["Metadata_Parent"].nunique()
    assert len(ds) == len(trt.drop_duplicates(["Metadata_Parent", "Metadata_Concentration"])) and 5 * n < len(ds) <= 6 * n
    g, x = ds[0]
    assert x.shape == (4, 454) and g.x.shape[1] == 9
    # each batch (source x plate) is centred on its DMSO wells
    neg = (ds.meta["Metadata_ControlType"] == "negcon").to_numpy()
    for b in ("import:lab0|P0", "import:lab1|P1"):
        rows = neg & (ds.meta["Metadata_Batch"] == b).to_numpy()
        assert np.abs(np.median(ds.x[rows], axis=0)).max() < 1e-5
    assert np.abs(ds.x).max() <= 10.0


def test_within_source_batches_hold_one_stratum(pstore):
    ds = ProfileDataset(pstore, negatives="within_source")
    assert len(ds) == 2 * len(ProfileDataset(pstore))  # items also split by stratum (lab)
    sampler = ds.batch_sampler(16, seed=3)
    batches = sampler.batches()
    assert batches and sum(map(len, batches)) >= 0.9 * len(ds)
    for b in batches:
        assert len({ds.strata[i] for i in b}) == 1
        assert len({ds.groups[i] for i in b}) == len(b)
    mixed = StratifiedBatchSampler(["a", "a", "b"], ["s", "t", "s"], 2, drop_last=False)
    assert sorted(map(sorted, mixed.batches())) == [[0, 2]]  # 'a' twice never shares a batch; lone 't' batch dropped (< 2)


def test_no_structures_is_one_clear_error(tmp_path, pstore):
    (tmp_path / "tables").mkdir()
    with pytest.raises(ProfileDataError, match="cmcl compounds"):
        ProfileDataset(Store(tmp_path))


def test_per_query_metrics_average_to_the_protocols():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((30, 8))
    i = g + 0.8 * rng.standard_normal((30, 8))
    per = per_query_metrics(g, i, seeds=(0, 1))
    h, _ = hit101(g, i, seeds=(0, 1))
    f, _ = fullpool(g, i)
    for d in h:
        for m, v in h[d].items():
            assert per["hit101"][d][m].mean() == pytest.approx(v)
        for m, v in f[d].items():
            assert per["fullpool"][d][m].mean() == pytest.approx(v)
    ci = bootstrap_ci(g, i, seeds=(0,), n_boot=200)
    lo, hi = ci["fullpool"]["graph_to_image"]["recall@5"]
    assert lo <= f["graph_to_image"]["recall@5"] <= hi and hi - lo > 0.05


def test_train_evaluate_on_imported_profiles_only(pstore):
    run = train(pstore, _config(), run_id="20260101-000000-prof00", progress=False)
    cfg = load_checkpoint(run)["config"]
    assert cfg["profile_features"] == 454 and cfg["image_source"] == "profiles"
    result = evaluate(pstore.root, run, probe_dataset=None, seeds=(0, 1))
    assert result["image_source"] == "profiles" and result["split"]["test_evaluated"] >= 5
    assert set(result["baselines"]) == {"untrained", "morgan_ridge", "morgan_cca"}
    assert set(result["ci"]) == {"model", "untrained", "morgan_ridge", "morgan_cca"}
    n = result["n_candidates"]["fullpool"]
    assert result["chance"]["fullpool"]["graph_to_image"]["recall@1"] == pytest.approx(1 / n)
    for d in ("graph_to_image", "image_to_graph"):
        lo, hi = result["ci"]["model"]["fullpool"][d]["mrr"]
        assert lo <= result["model"]["fullpool"][d]["mrr"] <= hi
    saved = json.loads((pstore.root / "reports" / run.name / "metrics.json").read_text())
    assert saved["ci"] == result["ci"]
    html = (pstore.root / "reports" / run.name / "report.html").read_text()
    assert "bootstrap intervals" in html and "morgan_cca" in html
    # zero-shot: a training compound's own SMILES finds compounds with their profiles
    from cmcl_model.evaluation.query import query_smiles, query_well

    smiles = pstore.read("compounds")["Metadata_SMILES"].iloc[0]
    hits = query_smiles(pstore.root, run, smiles, top=5)
    assert len(hits) == 5 and hits["Score"].is_monotonic_decreasing and (hits["N_Profiles"] >= 1).all()
    assert hits.attrs["profiles"].shape == (5, 454)
    assert list(hits.attrs["profiles"].index) == list(hits["Metadata_InChIKey"])
    with pytest.raises(ValueError, match="profile-mode run"):
        query_well(pstore.root, run, "P0", "A01")


def test_profile_mode_resumes_exactly(pstore):
    opts = dict(negatives="within_source", mgm_weight=0.3, ggim_weight=0.3, epochs=2, batch_size=32, gin_hidden=32)
    a = train(pstore, _config(**opts), run_id="20260101-000000-profa0", progress=False)
    b = train(pstore, _config(**opts, max_steps=3), run_id="20260101-000000-profb0", progress=False)
    b = train(pstore, _config(**opts), run_id="20260101-000000-profb0", progress=False, resume=True)
    ma, mb = load_checkpoint(a, "last")["model"], load_checkpoint(b, "last")["model"]
    for k in ma:
        torch.testing.assert_close(ma[k], mb[k], rtol=1e-5, atol=1e-6)
