"""Data-parallel training: 2 gloo processes follow one process's loss curve, resume exactly, and
the gathered contrastive loss is the one-process loss of the global batch."""

from __future__ import annotations

import json
import os
import re
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cmcl_model.nn.losses import GICLoss
from pipeline.store.paths import Store
from pipeline.synthetic.store import make_synthetic_store
from cmcl_model.train.checkpoints import load_checkpoint
from cmcl_model.train.config import TrainConfig
from cmcl_model.train.loop import train

#: tiny model, all three objectives; no dropout, the only randomness drawn per rank
OPTS = dict(
    epochs=2, batch_size=8, crops_per_sample=2, gin_layers=2, gin_hidden=32, gin_dropout=0.0, cnn_widths=[8, 16],
    proj_dim=16, norm_crops=64, mgm_weight=0.3, ggim_weight=0.3, split_fractions=[0.5, 0.25, 0.25],
)


def _config(**extra) -> TrainConfig:
    return TrainConfig.quick(**{**OPTS, **extra})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, store: str, run_id: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        if True:
            # the gathered loss on this rank's half of a fixed batch: value and gradients
            gen = torch.Generator().manual_seed(0)
            g_all, i_all = torch.randn(8, 16, generator=gen), torch.randn(8, 16, generator=gen)
            g = g_all[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
            i = i_all[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
            from torch.distributed.nn.functional import all_gather

            loss, _ = GICLoss()(torch.cat(all_gather(g)), torch.cat(all_gather(i)))
            loss.backward()
            torch.save({"loss": loss.detach(), "g_grad": g.grad, "i_grad": i.grad}, f"{out}.rank{rank}.pt")
        # stop after 4 of 6 steps (mid epoch 2), then resume from the checkpoint on disk
        train(Store(store), _config(max_steps=4), run_id=run_id, progress=False)
        if rank == 0:
            torch.save(torch.load(f"{store}/runs/{run_id}/checkpoints/last.pt", weights_only=True)["position"],
                       f"{out}.position.pt")
        train(Store(store), _config(), run_id=run_id, progress=False, resume=True)
    finally:
        dist.destroy_process_group()


def _spawn(store, run_id, out):
    mp.spawn(_worker, args=(2, _free_port(), str(store), run_id, str(out)), nprocs=2, join=True)


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_synthetic_store(tmp_path_factory.mktemp("ddp") / "store", n_compounds=48, n_dmso=2, cells_per_well=4)


def test_two_processes_match_one_and_resume_exactly(store, tmp_path):
    one = train(store, _config(), run_id="20260101-000000-single", progress=False)
    # 2 ranks: the gathered loss of a fixed batch, then 4 steps, stop, resume to the end
    _spawn(store.root, "20260101-000000-ddp000", tmp_path / "gic")
    part = store.run_dir("20260101-000000-ddp000")
    assert torch.load(tmp_path / "gic.position.pt") == {"epoch": 1, "batch": 1, "step": 4}

    meta = json.loads((part / "config.json").read_text())
    assert meta["world_size"] == 2 and meta["resumes"] == [{"world_size": 2, "step": 4}]
    assert json.loads((one / "config.json").read_text())["world_size"] == 1
    a, b = _rows(one), _rows(part)
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        for k in ("train_loss", "train_infonce", "train_margin", "train_mgm", "train_ggim", "val_loss", "val_mrr", "lr"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-5), k
    ma, mb = load_checkpoint(one, "last")["model"], load_checkpoint(part, "last")["model"]
    assert ma.keys() == mb.keys()
    # biases that feed a batch norm have a zero gradient in exact arithmetic: Adam turns their
    # rounding-noise gradients into steps, different in each run, that no output sees (the norm
    # removes them; its running mean follows them). Every other tensor agrees.
    invariant = re.compile(r"graph_encoder\.convs\.\d+\.mlp\.[03]\.bias$|(mlp\.1|norms\.\d+)\.running_mean$")
    close = {k: torch.allclose(mb[k].float(), ma[k].float(), rtol=1e-3, atol=1e-4) for k in ma}
    assert all(close[k] for k in ma if not invariant.search(k)), [k for k in ma if not close[k]]
    assert sum(not invariant.search(k) for k in ma) > 40

    # the gathered loss equals the one-process loss of the global batch; each rank's gradient is
    # world_size x the one-process gradient of its rows (DDP's averaging divides it back)
    gen = torch.Generator().manual_seed(0)
    g, i = torch.randn(8, 16, generator=gen).requires_grad_(True), torch.randn(8, 16, generator=gen).requires_grad_(True)
    loss, _ = GICLoss()(g, i)
    loss.backward()
    for rank in range(2):
        got = torch.load(tmp_path / f"gic.rank{rank}.pt")
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(got["g_grad"], 2 * g.grad[rank * 4:(rank + 1) * 4], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(got["i_grad"], 2 * i.grad[rank * 4:(rank + 1) * 4], rtol=1e-5, atol=1e-7)


def test_batch_must_split_over_processes(store, tmp_path):
    from cmcl_model.train.distributed import ShardedBatches

    batches = ShardedBatches([[0, 1, 2, 3, 4, 5], [6, 7]], rank=1, world_size=3)
    with pytest.raises(ValueError, match="batch of 2 samples cannot be split over 3"):
        list(batches)
    assert list(ShardedBatches([[0, 1, 2, 3, 4, 5]], rank=1, world_size=3)) == [[2, 3]]


def test_bf16_on_cpu_trains_close_to_fp32(store):
    f32 = train(store, _config(epochs=1, max_steps=3), run_id="20260101-000000-fp32", progress=False)
    b16 = train(store, _config(epochs=1, max_steps=3, precision="bf16"), run_id="20260101-000000-bf16",
                progress=False)
    la, lb = load_checkpoint(f32, "last"), load_checkpoint(b16, "last")
    assert lb["config"]["precision"] == "bf16"
    # the same steps in bf16 autocast: weights move alike but not identically (bf16 keeps 8 bits)
    diffs = [float((lb["model"][k].float() - la["model"][k].float()).abs().max()) for k in la["model"]
             if la["model"][k].is_floating_point()]
    assert 0 < max(diffs) < 0.05
    with pytest.raises(ValueError, match="needs CUDA"):
        train(store, _config(precision="fp16", device="cpu"), run_id="20260101-000000-fp16", progress=False)


def test_torchrun_launcher_runs_two_ranks_and_rejects_bad_settings(store, tmp_path, capsys):
    from cmcl_model.train.distributed import launch, torchrun_command
    from cmcl_model.train.worker import main

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(_config(epochs=1).to_dict()))
    # what `cmcl train --nproc 2` runs: torchrun, env:// rendezvous, gloo
    launch(2, ["--store", str(store.root), "--config", str(cfg), "--run-id", "20260101-000000-trun00", "--quiet"])
    run = store.run_dir("20260101-000000-trun00")
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert len(_rows(run)) == 1 and (run / "checkpoints" / "best.pt").is_file()
    assert torchrun_command(3, ["--store", "S"])[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3",
                                                         "-m", "cmcl_model.train.worker", "--store", "S"]
    assert main(["--store", str(store.root), "--set", "epochs=zero"]) == 2
    assert "epochs must be an integer" in capsys.readouterr().err
