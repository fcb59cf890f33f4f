"""Entry point of one training process under torchrun (what ``cmcl train --nproc N`` starts).

Usage (every rank runs the same command; torchrun sets ``RANK``, ``WORLD_SIZE``, ``MASTER_*``)::

    torchrun --nproc-per-node 4 -m cmcl_model.train.worker --store STORE --preset default --set epochs=50
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m cmcl_model.train.worker --store /shared/store --run-id ID

The store must be visible to every node at the same path (rank 0 writes the run; every rank
reads crops and, on resume, the checkpoint). Without ``--run-id`` rank 0 picks a new id.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cmcl_model.train.config import PRESETS, TrainConfig, resolve_config

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cmcl_model.train.worker", description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True, help="the cmcl store")
    p.add_argument("--preset", default="default", help=" | ".join(PRESETS))
    p.add_argument("--set", dest="set_", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TrainConfig field (repeatable)")
    p.add_argument("--config", default=None, metavar="FILE.json",
                   help="a whole TrainConfig as JSON (a run's config.json 'config'); replaces --preset/--set")
    p.add_argument("--run-id", default=None, help="run id (default: new, chosen by rank 0)")
    p.add_argument("--resume", action="store_true", help="continue --run-id from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Train one rank; returns the exit status (2 with a one-line message on a bad option)."""
    args = _parser().parse_args(argv)
    from cmcl_model.train.loop import train
    from pipeline.store.paths import Store

    try:
        if args.config:
            config = TrainConfig.from_dict(json.loads(Path(args.config).read_text()))
        else:
            config = resolve_config(args.preset, TrainConfig.parse_overrides(args.set_))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_dir = train(Store(Path(args.store)), config, run_id=args.run_id, progress=not args.quiet, resume=args.resume)
    print(run_dir.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
