"""Phase 2: exact resume, early stopping, MGM / GGIM objectives in training."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cmcl_model.train.build import build_model
from cmcl_model.train.checkpoints import load_checkpoint
from cmcl_model.train.loop import train
from pipeline.store.paths import Store
from tests.cmcl_model.conftest import quick_config


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


OPTS = dict(epochs=3, batch_size=16, gin_dropout=0.1, mgm_weight=0.3, ggim_weight=0.3)


@pytest.fixture(scope="module")
def full_run(syn_store, quick_run):
    # quick_run is requested first so the store's split (written once) has the test fractions
    # 48 training compounds / 16 = 3 steps per epoch
    return train(syn_store, quick_config(**OPTS), run_id="20260101-000001-full00", progress=False)


def _assert_same_run(a_dir, b_dir):
    a, b = _rows(a_dir), _rows(b_dir)
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b):
        for k in ("train_loss", "val_loss", "val_mrr", "val_hit@10", "lr"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), k
    ma, mb = load_checkpoint(a_dir, "last")["model"], load_checkpoint(b_dir, "last")["model"]
    for k in ma:
        torch.testing.assert_close(ma[k], mb[k], rtol=1e-5, atol=1e-6)


def test_kill_and_resume_matches_uninterrupted(syn_store, full_run):
    opts, cfg, full = OPTS, quick_config(**OPTS), full_run
    # "kill" in the middle of epoch 2 (after 4 steps), then resume with the same configuration
    part = train(syn_store, quick_config(**opts, max_steps=4), run_id="20260101-000002-part00", progress=False)
    assert load_checkpoint(part, "last")["position"] == {"epoch": 1, "batch": 1, "step": 4}
    assert len(_rows(part)) == 1
    train(syn_store, cfg, run_id=part.name, progress=False, resume=True)
    _assert_same_run(full, part)


_CHILD = """
import sys
from cmcl_model.train.loop import train
from pipeline.store.paths import Store
from tests.cmcl_model.conftest import quick_config
from tests.cmcl_model.train.test_resume import OPTS
train(Store(sys.argv[1]), quick_config(**OPTS, checkpoint_every_steps=1), run_id=sys.argv[2], progress=False)
"""


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(syn_store, full_run):
    """A real ``kill -9`` of a training process right after its first mid-epoch checkpoint."""
    run_id = "20260101-000004-kill00"
    last = Path(syn_store.run_dir(run_id)) / "checkpoints" / "last.pt"
    repo = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(syn_store.root), run_id], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not last.exists():
            if proc.poll() is not None:
                pytest.fail(f"training process ended (rc={proc.returncode}) before a checkpoint: {proc.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    pos = load_checkpoint(last.parent.parent, "last")["position"]
    assert pos["step"] < 9  # killed before the end of the run
    train(syn_store, quick_config(**OPTS, checkpoint_every_steps=1), run_id=run_id, progress=False, resume=True)
    _assert_same_run(full_run, last.parent.parent)


def test_resume_refuses_a_different_config(syn_store, quick_run):
    with pytest.raises(ValueError, match="lr"):
        train(syn_store, quick_config(lr=0.5), run_id=quick_run.name, progress=False, resume=True)
    with pytest.raises(ValueError, match="already exists"):
        train(syn_store, quick_config(), run_id=quick_run.name, progress=False)


def test_early_stopping(syn_store, quick_run):
    run = train(syn_store, quick_config(epochs=30, lr=1e-7, warmup_epochs=0, patience=2),
                run_id="20260101-000003-early0", progress=False)
    assert len(_rows(run)) < 30


def test_mgm_and_ggim_heads(syn_store):
    from cmcl_model.data.pairs import PairDataset, collate_pairs
    from cmcl_model.train.objectives import compute_losses, build_loss

    cfg = quick_config(mgm_weight=1.0, ggim_weight=1.0)
    torch.manual_seed(0)
    model, loss_fn = build_model(cfg), build_loss(cfg)
    ds = PairDataset(syn_store, keys=None, crops_per_sample=2, norm_crops=64)
    batch = collate_pairs([ds[i] for i in range(6)])
    loss, parts, g, i = compute_losses(model.train(), loss_fn, batch, cfg)
    assert {"infonce", "margin", "mgm", "ggim"} <= set(parts)
    assert parts["mgm"] == pytest.approx(torch.log(torch.tensor(119.0)).item(), rel=0.3)  # near uniform at init
    assert parts["ggim"] == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=0.3)
    loss.backward()
    assert model.mgm_head[0].weight.grad.abs().sum() > 0 and model.ggim_head[0].weight.grad.abs().sum() > 0
    assert model.mgm_logits(torch.zeros(4, model.graph_encoder.out_dim), torch.tensor([0, 0, 1, 5]), i).shape == (4, 119)
    assert model.ggim_logits(g, i).shape == (6,)
    plain = build_model(quick_config())
    with pytest.raises(RuntimeError, match="without the .mgm. head"):
        plain.mgm_logits(torch.zeros(1, 64), torch.tensor([0]), torch.zeros(1, 32))
