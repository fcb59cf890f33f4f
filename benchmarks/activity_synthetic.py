"""Phenotypic-activity calls against the generator's truth, for CellProfiler profiles, the trained
image encoder and an untrained one, side by side.

Designs ``--plates`` plates of the shipped library with every compound on two plates
(``replicates=2``, the generator's ground truth says which compounds are active), runs
``cmcl run`` on them (ingestion with the default CellProfiler feature set, compounds, profiles,
training with ``--preset``, evaluation) and prints the ``activity`` section of ``metrics.json``:
compounds scored, fraction retrieved at corrected p < 0.05, mean mAP, precision and recall of
the calls. Run: ``python benchmarks/activity_synthetic.py [--plates 2] [--format 96] [--store DIR]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from flows.pipeline import run_flow
from pipeline.chem.library import load_compound_library
from pipeline.synthetic import design_plates, write_plate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plates", type=int, default=2, help="plates (a multiple of 2: replicates on different plates)")
    ap.add_argument("--format", type=int, default=96, choices=(96, 384))
    ap.add_argument("--size", type=int, default=256, help="field edge in pixels")
    ap.add_argument("--preset", default="quick", help="training preset")
    ap.add_argument("--store", type=Path, default=None, help="store directory (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = args.store or Path(tempfile.mkdtemp(prefix="cmcl-activity-"))
    inbox = root / "inbox"
    t0 = time.perf_counter()
    maps = design_plates(load_compound_library(), n_plates=args.plates, plate_format=args.format, replicates=2,
                         seed=args.seed)
    dirs = [write_plate(inbox, m, plate_id=f"ACT-{i + 1}", sites=1, size=args.size, nucleus_radius=8.0, seed=args.seed)
            for i, m in enumerate(maps)]
    settings = dict(illumination_method="background", illumination_dark=100.0, crop_size=32, features="default")
    out = run_flow(str(inbox), str(root), ingest_settings=settings, preset=args.preset, train_overrides={}, train=True,
                   ground_truth=[str(d) for d in dirs])
    metrics = json.loads((root / "reports" / out["run"] / "metrics.json").read_text())
    print(f"{args.plates} plates x {args.format} wells, replicates on different plates; {time.perf_counter() - t0:.0f} s; "
          f"store {root}")
    print(f"{'representation':16s} {'scored':>7s} {'retrieved':>9s} {'fraction':>9s} {'mean mAP':>9s} {'active':>7s} "
          f"{'precision':>10s} {'recall':>7s}")
    for name, a in metrics.get("activity", {}).items():
        f = lambda k: "-" if a.get(k) is None else f"{a[k]:.3f}"  # noqa: E731
        print(f"{name:16s} {a['n_compounds']:7d} {a['n_retrieved']:9d} {f('fraction_retrieved'):>9s} {f('mean_map'):>9s} "
              f"{a.get('n_truly_active', '-'):>7} {f('precision'):>10s} {f('recall'):>7s}")
    for k in ("morgan_cca", "cellprofiler_cca"):
        if k in metrics["baselines"]:
            print(f"baseline {k}: hit101 graph->image hit@10 {metrics['baselines'][k]['hit101']['graph_to_image']['hit@10']:.3f}")
    print(f"model: hit101 graph->image hit@10 {metrics['model']['hit101']['graph_to_image']['hit@10']:.3f}")
    print(f"report: {root / 'reports' / out['run'] / 'report.html'}")


if __name__ == "__main__":
    main()
