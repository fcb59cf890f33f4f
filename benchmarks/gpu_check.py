"""Steps of ``benchmarks/gpu_check.sh``: each prints its timings as ``RESULT <json>`` lines.

Usage::

    python benchmarks/gpu_check.py cuda                       # fails loudly without CUDA
    python benchmarks/gpu_check.py store DIR [--compounds 400]
    python benchmarks/gpu_check.py train DIR --steps 300 --precision bf16 [--preset quick]
    python benchmarks/gpu_check.py finetune MODEL.pt [--epochs 5]
    python benchmarks/gpu_check.py cellpose [--fields 8]

``--device cpu`` (``CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh``) dry-runs the steps on CPU
at tiny sizes, to check the script itself where no GPU is lent.

Nothing is downloaded: the store and fields come from cmcl's generators, the cellpose net is an
untrained one saved locally (what the tests use), fine-tuning uses a shipped MoleculeNet set.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _result(step: str, **values) -> None:
    print("RESULT " + json.dumps({"step": step, **values}), flush=True)


def cuda(_: argparse.Namespace) -> int:
    if not torch.cuda.is_available():
        print(f"CUDA ERROR: torch {torch.__version__} sees no CUDA device (torch.version.cuda={torch.version.cuda}); "
              "this check needs a GPU and a CUDA build of torch", file=sys.stderr)
        return 2
    props = torch.cuda.get_device_properties(0)
    x = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        x @ x
    torch.cuda.synchronize()
    tflops = 10 * 2 * 4096**3 / (time.perf_counter() - t) / 1e12
    _result("cuda", torch=torch.__version__, cuda=torch.version.cuda, device=props.name, devices=torch.cuda.device_count(),
            memory_gib=round(props.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported(),
            fp32_matmul_tflops=round(tflops, 1))
    return 0


def store(args: argparse.Namespace) -> int:
    from pipeline.synthetic.store import make_synthetic_store

    t = time.perf_counter()
    make_synthetic_store(Path(args.dir), n_compounds=args.compounds, cells_per_well=32, crop_size=32, min_rings=0)
    _result("store", compounds=args.compounds, seconds=round(time.perf_counter() - t, 1))
    return 0


def train(args: argparse.Namespace) -> int:
    from cmcl_model.deploy.export import export_run
    from cmcl_model.train.config import resolve_config
    from cmcl_model.train.loop import train as train_run
    from pipeline.store.paths import Store

    config = resolve_config(args.preset, dict(device=args.device, precision=args.precision, epochs=10_000,
                                              max_steps=args.steps, num_workers=args.workers, max_minutes=args.max_minutes))
    t = time.perf_counter()
    run = train_run(Store(Path(args.dir)), config, progress=False)
    seconds = time.perf_counter() - t
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1] if rows else {}
    if args.export:
        export_run(run, args.export, which="last")
    _result("train", preset=args.preset, precision=args.precision, steps=args.steps, seconds=round(seconds, 1),
            steps_per_s=round(args.steps / seconds, 2), train_loss=last.get("train_loss"),
            val_hit10=last.get("val_hit@10"), samples_per_s=last.get("train_samples_per_s"),
            peak_gpu_mib=round(torch.cuda.max_memory_allocated() / 2**20) if args.device == "cuda" else None)
    return 0


def finetune(args: argparse.Namespace) -> int:
    from cmcl_model.finetune.run import FinetuneConfig
    from cmcl_model.reports.finetune import run_finetune

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        doc, _ = run_finetune(dataset=args.dataset, init=args.model, seeds=1, out=Path(tmp) / "ft.json",
                              config=FinetuneConfig(epochs=args.epochs), device=args.device)
    m = doc["methods"]["gin_pretrained"]
    _result("finetune", dataset=args.dataset, epochs=args.epochs, seconds=round(time.perf_counter() - t, 1),
            test=m["test"]["mean"], wall_s=round(m["wall_s"], 1))
    return 0


def cellpose(args: argparse.Namespace) -> int:
    from cellpose import models

    from pipeline.synthetic import phenotype_from_smiles, render_field

    rng = np.random.default_rng(0)
    fields = [render_field(phenotype_from_smiles("CCO"), size=512, rng=rng)[0][0] for _ in range(args.fields)]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "untrained_net")
        models.CellposeModel(gpu=False, pretrained_model=False).net.save_model(path)
        out = {}
        for name, gpu in (("cuda", True), ("cpu", False)) if args.device == "cuda" else (("cpu", False),):
            model = models.CellposeModel(gpu=gpu, pretrained_model=path)
            if gpu and model.device.type != "cuda":
                print(f"CUDA ERROR: cellpose did not place its net on CUDA (device {model.device})", file=sys.stderr)
                return 3
            if gpu:
                model.eval(fields[0], diameter=17.0)  # warm-up (CUDA context, kernels)
            n = args.fields if gpu else 1  # the CPU reference: one field (seconds each)
            t = time.perf_counter()
            for f in fields[:n]:
                model.eval(f, diameter=17.0)
            out[f"{name}_s_per_field"] = round((time.perf_counter() - t) / n, 3)
    if "cuda_s_per_field" in out:
        out["speedup"] = round(out["cpu_s_per_field"] / out["cuda_s_per_field"], 1)
    _result("cellpose", fields=args.fields, size=512, **out)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    sub.add_parser("cuda")
    p = sub.add_parser("store")
    p.add_argument("dir")
    p.add_argument("--compounds", type=int, default=400)
    p = sub.add_parser("train")
    p.add_argument("--device", default="cuda", help="cuda; cpu only to dry-run this script")
    p.add_argument("dir")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--preset", default="quick")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--max-minutes", type=float, default=3.0)
    p.add_argument("--export", default=None)
    p = sub.add_parser("finetune")
    p.add_argument("--device", default="cuda", help="cuda; cpu only to dry-run this script")
    p.add_argument("model")
    p.add_argument("--dataset", default="bbbp")
    p.add_argument("--epochs", type=int, default=5)
    p = sub.add_parser("cellpose")
    p.add_argument("--device", default="cuda", help="cuda; cpu only to dry-run this script")
    p.add_argument("--fields", type=int, default=8)
    args = ap.parse_args()
    return {"cuda": cuda, "store": store, "train": train, "finetune": finetune, "cellpose": cellpose}[args.step](args)


if __name__ == "__main__":
    sys.exit(main())
