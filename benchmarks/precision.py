"""Training speed and retrieval at each precision (fp32 / bf16 autocast), same store, same seed.

Usage::

    python benchmarks/precision.py [--store PATH] [--preset quick|demo] [--precisions fp32,bf16] [--epochs 20]
        [--repeats 1]

Trains one run per precision (alternating, ``--repeats`` rounds, so a busy machine slows all
alike) and prints seconds, training samples/s and the last epoch's validation Hit@10 (MIGA
protocol, mean of both directions) and MRR. Without ``--store`` the test suite's synthetic store
is generated (96 compounds with a learnable structure -> phenotype link, 16 px crops).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cmcl_model.train.config import resolve_config
from pipeline.store.paths import Store
from pipeline.synthetic.store import make_synthetic_store
from cmcl_model.train.loop import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    root = args.store or make_synthetic_store(Path(tmp.name) / "store", n_compounds=96, seed=0).root
    rows = []
    for r in range(args.repeats):
        for p in args.precisions.split(","):
            cfg = resolve_config(args.preset, dict(precision=p, epochs=args.epochs, device=args.device,
                                                   split_fractions=[0.5, 0.25, 0.25]))
            t = time.perf_counter()
            run = train(Store(Path(root)), cfg, progress=False, run_id=f"20260101-000000-{p}{r:02d}")
            seconds = time.perf_counter() - t
            last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
            rows.append(dict(precision=p, seconds=seconds, samples_per_s=last["train_samples_per_s"],
                             val_hit10=last.get("val_hit@10"), val_mrr=last.get("val_mrr"), train_loss=last["train_loss"]))
            print(f"{p}: {seconds:.1f} s, {last['train_samples_per_s']:.1f} samples/s (last epoch), "
                  f"val Hit@10 {last.get('val_hit@10', float('nan')):.3f}, MRR {last.get('val_mrr', float('nan')):.3f}, "
                  f"train loss {last['train_loss']:.4f}", flush=True)
    print("RESULT " + json.dumps(rows))
    tmp.cleanup()


if __name__ == "__main__":
    main()
