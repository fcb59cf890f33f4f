"""Training throughput: model steps/s, samples/s, data-loader samples/s alone, and their ratio.

Usage::

    python benchmarks/train.py [--store PATH] [--preset demo|quick|default] [--steps 10] [--workers 0,2,4]
        [--precision fp32,bf16] [--device cpu|cuda]
    python benchmarks/train.py --memory [--compounds 150] [--cells 16] [--scales 1,4] [--steps 6]

``--memory`` measures, on synthetic stores whose crop arrays grow by the given factors (more
cells per well), the peak resident memory (``VmHWM``) of a short training run (quick preset,
32 px crops) and the data loader's samples/s alone, each in a fresh process. Memory stays
bounded because crops are read chunk by chunk (16 rows) through an LRU cache of ``cache_mb``
per plate; a random crop costs one 16-row chunk, whatever the store's size. The peer is the
same store with 256-row unsharded chunks read through zarr-python (the layout before sharding).

Without ``--store`` a synthetic store shaped like the CPU demo (32 px crops, two plates,
500 compounds, 60 crops per well) is generated in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cmcl_model.data.pairs import PairDataset, UniqueCompoundBatchSampler, collate_pairs
from pipeline.store.paths import Store
from pipeline.synthetic.store import make_synthetic_store
from cmcl_model.train.build import build_model
from cmcl_model.train.config import TrainConfig
from cmcl_model.train.objectives import build_loss, compute_losses


_CHILD = """
import json, resource, sys, time
from cmcl_model.train.config import TrainConfig
from cmcl_model.train.loop import train
from pipeline.store.paths import Store
root, steps, cache_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cfg = TrainConfig.quick(epochs=1, max_steps=steps, crops_per_sample=4, cache_mb=cache_mb)
t = time.perf_counter()
run = train(Store(root), cfg, progress=False)
seconds = time.perf_counter() - t
# VmHWM is this process's own peak. ru_maxrss is not: Linux carries the parent's high-water
# mark across fork + exec, so it would report the benchmark process that built the stores.
peak = None
try:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
except OSError:
    pass
if peak is None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_rss_mb": peak, "seconds": seconds}))
"""

_LOADER = """
import json, sys, time
from torch.utils.data import DataLoader
from cmcl_model.data.pairs import PairDataset, UniqueCompoundBatchSampler, collate_pairs
from pipeline.store.paths import Store
root, cache_mb = sys.argv[1], int(sys.argv[2])
ds = PairDataset(Store(root), crops_per_sample=4, augment=True, norm_crops=256, cache_bytes=cache_mb * 2**20)
sampler = UniqueCompoundBatchSampler(ds.keys, 32, seed=0)
loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_pairs)
t, n = time.perf_counter(), 0
for epoch in range(3):
    ds.set_epoch(epoch); sampler.set_epoch(epoch)
    n += sum(len(b) for b in loader)
rows = sum(r.rows_read for r in ds.readers.values())
print(json.dumps({"samples_per_s": n / (time.perf_counter() - t), "rows_per_sample": rows / n}))
"""


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _child(code: str, *argv: str, env: dict, cwd: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, env=env, cwd=cwd, check=True)
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def _unsharded_copy(store_root: Path, dest: Path, chunk: int = 256) -> Path:
    """The peer layout: the same store with crop arrays re-chunked to ``chunk`` rows, unsharded
    (what ingestion wrote before sharding; read through zarr-python)."""
    import zarr

    shutil.copytree(store_root, dest)
    for group_dir in (dest / "crops").glob("*.zarr"):
        src = zarr.open_group(str(group_dir), mode="r")["crops"][:]
        group = zarr.open_group(str(group_dir), mode="a")
        del group["crops"]
        group.create_array("crops", shape=src.shape, chunks=(chunk, *src.shape[1:]), dtype=src.dtype,
                           dimension_names=("n", "c", "y", "x"))[:] = src
    return dest


def memory(args: argparse.Namespace) -> None:
    """Peak RSS of a short training run, and loader throughput, as the crop store grows."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    print(f"{'cells/well':>10} {'crops':>8} {'store MB':>9} {'cache MB/plate':>14} {'peak RSS MB':>12} "
          f"{'loader samples/s':>17} {'rows/sample':>12} {'peer samples/s':>15} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (int(x) for x in args.scales.split(",")):
            cells = args.cells * scale
            store = make_synthetic_store(Path(tmp) / f"s{scale}", n_compounds=args.compounds, cells_per_well=cells,
                                         crop_size=32, min_rings=0)
            n_crops = len(store.read("cells"))
            # each measurement in a fresh process, so neither inherits the other's memory
            peak = _child(_CHILD, str(store.root), str(args.steps), str(args.cache_mb), env=env, cwd=repo)["peak_rss_mb"]
            load = _child(_LOADER, str(store.root), str(args.cache_mb), env=env, cwd=repo)
            peer_root = _unsharded_copy(store.root, Path(tmp) / f"p{scale}")
            peer = _child(_LOADER, str(peer_root), str(args.cache_mb), env=env, cwd=repo)
            print(f"{cells:>10} {n_crops:>8} {_dir_mb(store.root / 'crops'):>9.1f} {args.cache_mb:>14} {peak:>12.1f} "
                  f"{load['samples_per_s']:>17.1f} {load['rows_per_sample']:>12.1f} {peer['samples_per_s']:>15.1f} "
                  f"{load['samples_per_s'] / peer['samples_per_s']:>6.1f}", flush=True)
            shutil.rmtree(store.root)
            shutil.rmtree(peer_root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path)
    ap.add_argument("--preset", choices=["demo", "quick", "default"], default="demo",
                    help="default = the paper-sized model (GIN 5x300, ResNet 64-512)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workers", default="0", help="DataLoader worker counts to measure, e.g. 0,2,4")
    ap.add_argument("--precision", default="fp32", help="step precisions to measure, e.g. fp32,bf16 (first: the ratio's)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--compounds", type=int, default=500)
    ap.add_argument("--memory", action="store_true", help="peak RSS vs crop-store size instead of throughput")
    ap.add_argument("--cells", type=int, default=16, help="--memory: cells per well at scale 1")
    ap.add_argument("--scales", default="1,4", help="--memory: comma-separated growth factors of cells per well")
    ap.add_argument("--cache-mb", type=int, default=32, help="--memory: chunk cache per plate")
    args = ap.parse_args()
    if args.memory:
        if args.compounds == 500:
            args.compounds = 150
        if args.steps == 10:
            args.steps = 6
        return memory(args)
    workers = [int(w) for w in str(args.workers).split(",")]
    precisions = args.precision.split(",")
    device = torch.device(args.device)
    config = (TrainConfig() if args.preset == "default" else getattr(TrainConfig, args.preset)())
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
    ds = PairDataset(Store(Path(root)), crops_per_sample=config.crops_per_sample, augment=True, norm_crops=config.norm_crops,
                     cache_bytes=config.cache_mb * 2**20)
    print(f"dataset: {len(ds)} compounds, init (incl. normalisation) {time.perf_counter() - t:.2f} s")
    bs = min(config.batch_size, len(ds))
    loaders = {w: _loader_rates(ds, bs, w, args.steps) for w in workers}
    sampler = UniqueCompoundBatchSampler(ds.keys, bs, seed=0)
    batch = next(iter(DataLoader(ds, batch_sampler=sampler, collate_fn=collate_pairs))).to(device)
    steps = {p: _step_seconds(config, batch, p, device, args.steps) for p in precisions}
    print(f"preset={args.preset} batch={bs} K={config.crops_per_sample} crops/step={bs * config.crops_per_sample} "
          f"threads={torch.get_num_threads()} device={device}")
    for p, (step_s, loss) in steps.items():
        print(f"model step {p} (median): {step_s:.3f} s/step = {1 / step_s:.2f} steps/s, {bs / step_s:.1f} samples/s "
              f"(loss after the timed steps {loss:.4f})")
    model_sps = bs / steps[precisions[0]][0]
    for w, (cold, warm) in loaders.items():
        print(f"loader, {w} workers: {cold:.1f} samples/s cold cache, {warm:.1f} cached; ratio to the {precisions[0]} step "
              f"{cold / model_sps:.2f} cold, {warm / model_sps:.2f} cached (> 1: the loader keeps up)")
    if tmp is not None:
        tmp.cleanup()


def _loader_rates(ds: PairDataset, bs: int, workers: int, steps: int) -> tuple[float, float]:
    """(cold, cached) samples/s of the training loader with ``workers`` DataLoader processes.

    Cold: the first ``steps`` batches of an epoch in fresh worker processes (empty chunk caches,
    what a store larger than the cache sees all the time); cached: after one full epoch.
    """
    sampler = UniqueCompoundBatchSampler(ds.keys, bs, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_pairs, num_workers=workers,
                        persistent_workers=workers > 0, prefetch_factor=4 if workers else None)

    def batches():
        epoch = 0
        while True:
            ds.set_epoch(epoch)
            sampler.set_epoch(epoch)
            yield from loader
            epoch += 1

    it = batches()
    next(it)  # start the workers (process start-up is not throughput)
    t, n = time.perf_counter(), 0
    for _ in range(steps):
        n += len(next(it))
    cold = n / (time.perf_counter() - t)
    for _ in range(max(0, len(sampler) - steps - 1)):  # finish the epoch: every chunk is read once
        next(it)
    t, n = time.perf_counter(), 0
    for _ in range(steps):
        n += len(next(it))
    warm = n / (time.perf_counter() - t)
    del it, loader
    return cold, warm


def _step_seconds(config: TrainConfig, batch, precision: str, device: torch.device, steps: int) -> tuple[float, float]:
    """(median seconds of one optimizer step on a fixed batch, last loss) at ``precision``."""
    from cmcl_model.train.build import amp_dtype

    torch.manual_seed(0)
    amp = amp_dtype(precision, device)
    model, loss_fn = build_model(config).to(device), build_loss(config).to(device)
    opt = torch.optim.AdamW(list(model.parameters()), lr=config.lr)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    model.train()
    times, loss = [], None
    for k in range(steps + 2):  # two warm-up steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss, *_ = compute_losses(model, loss_fn, batch, config, step=k, amp=amp)
        opt.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
        else:
            loss.backward(); opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k >= 2:
            times.append(time.perf_counter() - t)
    return float(np.median(times)), float(loss.detach())

if __name__ == "__main__":
    main()
