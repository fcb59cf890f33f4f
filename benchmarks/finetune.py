"""MoleculeNet fine-tuning table: datasets x methods x seeds, with wall times.

Runs :func:`cmcl_model.finetune.run_methods` on the shipped MoleculeNet sets (scaffold split
80/10/10, Hu et al. 2020) and prints one row per dataset and method beside Hu et al.'s
published no-pre-training ROC-AUC. Methods:

``gin_random``   GIN 5 x 300 at random init, fine-tuned with Hu et al.'s settings
``gin_pretrained``  the graph encoder of ``--run`` (a cmcl image-pretrained run), fine-tuned
``gin_random_run``  the run's architecture at random init (the pre-trained encoder's peer)
``gin_ssl``      the run's architecture pre-trained by attribute masking on the store's own
                 training compounds with the run's budget, fine-tuned
``morgan_lr`` / ``morgan_rf``  Morgan fingerprints + tuned logistic regression / random forest

    python benchmarks/finetune.py --seeds 3 [--epochs 100] [--datasets bbbp,bace]
        [--methods gin_random,morgan_lr] [--store STORE --run RUN_ID] [--out-dir DIR]

Each dataset's results go to ``DIR/<dataset>.json`` (the ``finetune`` report schema) and its
split to ``DIR/<dataset>.split.csv``. ``--device auto`` uses CUDA when available. Long runs:
use ``OMP_NUM_THREADS=1`` on a shared machine (``--threads`` sets torch's thread count).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Hu et al. (ICLR 2020), Table 1, no pre-training, ROC-AUC % (mean over 10 seeds).
HU_NO_PRETRAIN = {"bbbp": 65.8, "tox21": 74.0, "toxcast": 63.4, "sider": 57.3, "clintox": 58.0, "muv": 71.8,
                  "hiv": 75.3, "bace": 70.1}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="bbbp,bace,clintox,sider,tox21")
    ap.add_argument("--methods", default="morgan_lr,morgan_rf,gin_random")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--patience", type=int, default=None)
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--run", default=None, help="run id in --store for gin_pretrained / gin_ssl / gin_random_run")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out-dir", type=Path, default=Path("finetune-bench"))
    args = ap.parse_args(argv)

    import torch

    from cmcl_model.finetune import FinetuneConfig, random_encoder, run_encoder, ssl_encoder, store_train_graphs
    from cmcl_model.finetune_report import finetune_result, format_table
    from cmcl_model.labelled import load_shipped, prepare_labelled, split_molecules, split_table
    from cmcl_model.train import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = FinetuneConfig(epochs=args.epochs, patience=args.patience)
    methods = [m for m in args.methods.split(",") if m]
    encoders = {"random": random_encoder(config)}
    extra: dict = {}
    if any(m.split("_", 1)[1] in ("pretrained", "ssl", "random_run") for m in methods if m.startswith(("gin", "probe"))):
        if not (args.store and args.run):
            ap.error("gin_pretrained / gin_ssl / gin_random_run need --store and --run")
        run_dir = args.store / "runs" / args.run
        encoders["pretrained"], run_config = run_encoder(run_dir)
        encoders["random_run"] = random_encoder(FinetuneConfig(layers=run_config.gin_layers, hidden=run_config.gin_hidden,
                                                               jk=run_config.gin_jk, pooling=run_config.gin_pooling))
        extra["pretrained_run"] = {"run": args.run, "gin_layers": run_config.gin_layers, "gin_hidden": run_config.gin_hidden}
        if any(m.endswith("_ssl") for m in methods):
            encoders["ssl"], extra["ssl_pretraining"] = ssl_encoder(store_train_graphs(args.store), run_config, device=device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for name in [d for d in args.datasets.split(",") if d]:
        t0 = time.perf_counter()
        frame, spec = load_shipped(name)
        data = prepare_labelled(frame, smiles_col=spec.smiles_col, tasks=spec.tasks, kind=spec.kind, name=name)
        split = split_molecules(data.smiles, mode="scaffold")
        split_path = args.out_dir / f"{name}.split.csv"
        split_table(data, split).to_csv(split_path, index=False)
        prep_s = time.perf_counter() - t0
        from cmcl_model.finetune import run_methods

        res = run_methods(data, split, methods=methods, seeds=list(range(args.seeds)), encoders=encoders,
                          config=config, device=device, log=lambda s: print(s, flush=True))
        out = finetune_result(data, split, res, config=config, split_mode="scaffold", split_seed=0,
                              split_file=split_path.name, device=str(device), seeds=list(range(args.seeds)),
                              source=f"cmcl_model/datasets/{spec.file}", extra={**extra, "prepare_s": prep_s})
        (args.out_dir / f"{name}.json").write_text(json.dumps(out, indent=1))
        results.append(out)
        print(format_table(results, published=HU_NO_PRETRAIN), flush=True)
    print(f"device {device}, torch threads {torch.get_num_threads()}, epochs {args.epochs}, seeds {args.seeds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
