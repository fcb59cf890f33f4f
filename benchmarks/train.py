"""Training throughput: model steps/s, samples/s, data-loader samples/s alone, and their ratio.

Usage::

    python benchmarks/train.py [--store PATH] [--preset demo|quick] [--steps 10] [--workers 0]

Without ``--store`` a synthetic store shaped like the CPU demo (32 px crops, two plates,
500 compounds, 60 crops per well) is generated in a temporary directory.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cmcl_model.data import PairDataset, UniqueCompoundBatchSampler, collate_pairs
from cmcl_model.synthetic import make_synthetic_store
from cmcl_model.train import TrainConfig, build_loss, build_model, compute_losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path)
    ap.add_argument("--preset", choices=["demo", "quick"], default="demo")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--compounds", type=int, default=500)
    args = ap.parse_args()
    config = getattr(TrainConfig, args.preset)(num_workers=args.workers)
    torch.manual_seed(0)
    tmp = None
    root = args.store
    if root is None:
        tmp = tempfile.TemporaryDirectory()
        t = time.perf_counter()
        root = make_synthetic_store(
            Path(tmp.name) / "store", n_compounds=args.compounds, cells_per_well=60, crop_size=32, min_rings=0
        ).root
        print(f"synthetic store: {args.compounds} compounds x 2 plates, 32 px, built in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    ds = PairDataset(root, crops_per_sample=config.crops_per_sample, augment=True, norm_crops=config.norm_crops,
                     cache_bytes=config.cache_mb * 2**20)
    print(f"dataset: {len(ds)} compounds, init (incl. normalisation) {time.perf_counter() - t:.2f} s")
    bs = min(config.batch_size, len(ds))
    sampler = UniqueCompoundBatchSampler(ds.keys, bs, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_pairs, num_workers=args.workers)

    def batches():
        epoch = 0
        while True:
            ds.set_epoch(epoch)
            sampler.set_epoch(epoch)
            yield from loader
            epoch += 1

    # 1. loader alone (first epoch: cold chunk cache)
    it = batches()
    t = time.perf_counter()
    n = 0
    for _ in range(args.steps):
        n += len(next(it))
    loader_sps = n / (time.perf_counter() - t)
    # 2. model alone on a fixed batch
    model, loss_fn = build_model(config), build_loss(config)
    opt = torch.optim.AdamW(list(model.parameters()), lr=config.lr)
    batch = next(it)
    model.train()
    for _ in range(2):  # warm-up
        loss, *_ = compute_losses(model, loss_fn, batch, config)
        opt.zero_grad(); loss.backward(); opt.step()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        loss, *_ = compute_losses(model, loss_fn, batch, config)
        opt.zero_grad(); loss.backward(); opt.step()
        times.append(time.perf_counter() - t)
    step_s = float(np.median(times))  # median: robust to other processes on a shared machine
    # 3. end to end (loader + model), median seconds per step
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        b = next(it)
        loss, *_ = compute_losses(model, loss_fn, b, config)
        opt.zero_grad(); loss.backward(); opt.step()
        times.append(time.perf_counter() - t)
    e2e_sps = bs / float(np.median(times))
    model_sps = bs / step_s
    print(f"preset={args.preset} batch={bs} K={config.crops_per_sample} crops/step={bs * config.crops_per_sample} "
          f"threads={torch.get_num_threads()} workers={args.workers}")
    print(f"model step (median): {step_s:.3f} s/step = {1 / step_s:.2f} steps/s, {model_sps:.1f} samples/s")
    print(f"loader alone:      {loader_sps:.1f} samples/s")
    print(f"end to end (median): {e2e_sps:.1f} samples/s")
    print(f"loader/model ratio: {loader_sps / model_sps:.2f} (>1: the loader keeps up)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
