"""A run's directory ``runs/<run_id>/``: its id, ``config.json``, ``metrics.jsonl``, and the checks
that decide whether a run may start or resume.

``config.json`` holds the configuration, content hashes of the data the run reads and the code
version; ``metrics.jsonl`` one line per epoch; ``checkpoints/`` is :mod:`cmcl_model.train.checkpoints`'.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from cmcl_model.train.layout import checkpoint_path, config_path, metrics_path
from cmcl_model.train.config import TrainConfig
from cmcl_model.train.distributed import DistContext, broadcast_object
from pipeline.store.atomic import write_text_atomic
from pipeline.store.paths import Store

__all__ = ["new_run_id", "data_fingerprints", "code_version", "write_run_config", "note_resume", "truncate_metrics",
           "RESUME_FREE", "check_run", "open_run", "read_metrics"]

#: config fields a resume may change (stopping limits, workers, device)
RESUME_FREE = frozenset({
    "max_steps", "max_minutes", "num_workers", "device", "eval_batch_size", "cache_mb", "checkpoint_every_steps",
    "profile_features",
})


def new_run_id(salt: str = "") -> str:
    """Time-sortable run id ``YYYYmmdd-HHMMSS-<6 hex>`` (UTC)."""
    now = time.time()
    h = hashlib.sha1(f"{now!r}{salt}{os.getpid()}".encode()).hexdigest()[:6]
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + h


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The epoch rows of a run (empty when it has none yet)."""
    path = metrics_path(run_dir)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_fingerprints(store: Store, plates: list[str]) -> dict[str, str]:
    """Content hashes of the tables a run reads and of the crop arrays' metadata."""
    out: dict[str, str] = {}
    for name in ("compound_inputs", "well_compounds", "graphs", "split", "platemap", "cells"):
        for p in store.table_files(name):
            out[str(p.relative_to(store.root))] = _file_sha256(p)
    for plate in plates:
        meta = store.crops_zarr(plate) / "zarr.json"
        if meta.exists():
            out[str(meta.relative_to(store.root))] = _file_sha256(meta)
        arr_meta = store.crops_zarr(plate) / "crops" / "zarr.json"
        if arr_meta.exists():
            out[str(arr_meta.relative_to(store.root))] = _file_sha256(arr_meta)
    return out


def code_version() -> dict[str, str | None]:
    """The installed cmcl version, the git commit of this checkout (if any) and torch's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("cmcl")
    except PackageNotFoundError:
        v = None
    commit = None
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        commit = res.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cmcl": v, "git_commit": commit, "torch": torch.__version__}


def write_run_config(store: Store, run_dir: Path, run_id: str, config: TrainConfig, *, plates: list[str],
                     dataset_fingerprint: str, splits: dict[str, list[str]], n_keys: int, world_size: int) -> None:
    """Write ``config.json`` of a new run (``n_keys``: the compounds the dataset holds)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "run_id": run_id,
        "config": config.to_dict(),
        "world_size": world_size,
        "data": {
            "store": str(store.root.resolve()),
            "fingerprints": data_fingerprints(store, plates),
            "dataset": dataset_fingerprint,
            "n_compounds": {k: len(v) for k, v in splits.items()},
            # treatment compounds the split does not cover (0: the split grows with new compounds)
            "n_unsplit": n_keys - sum(len(v) for v in splits.values()),
        },
        "code": code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_text_atomic(json.dumps(meta, indent=2), config_path(run_dir))


def note_resume(run_dir: Path, world_size: int, step: int) -> None:
    """Append ``{"world_size", "step"}`` to config.json's ``resumes`` (a run may resume on other hardware)."""
    path = config_path(run_dir)
    if path.is_file():
        meta = json.loads(path.read_text())
        meta.setdefault("resumes", []).append({"world_size": world_size, "step": step})
        write_text_atomic(json.dumps(meta, indent=2), path)


def truncate_metrics(path: Path, epochs_done: int) -> None:
    """Drop metric rows of epochs after ``epochs_done`` (a kill between writing an epoch's row
    and its ``last.pt`` would otherwise repeat that epoch's row after a resume)."""
    if not path.exists():
        return
    lines = [l for l in path.read_text().splitlines() if l.strip()]
    keep = []
    for l in lines:
        try:
            row = json.loads(l)
        except json.JSONDecodeError:  # a half-written last line
            break
        if int(row.get("epoch", 0)) <= epochs_done:
            keep.append(l)
    if len(keep) != len(lines):
        write_text_atomic("".join(k + "\n" for k in keep), path)


def check_run(store: Store, config: TrainConfig, run_id: str | None, resume: bool) -> str:
    """The run id to use, after checking that the run can start or resume.

    Raises
    ------
    ValueError
        ``resume`` without a ``run_id``, a config that differs from the stored one outside
        :data:`RESUME_FREE`, or a new run into an existing non-empty directory.
    FileNotFoundError
        Resuming a run without ``last.pt``.
    """
    if resume and run_id is None:
        raise ValueError("resume=True needs the run_id of the run to continue")
    run_id = run_id or new_run_id(json.dumps(config.to_dict(), sort_keys=True))
    run_dir = store.run_dir(run_id)
    if resume:
        last = checkpoint_path(run_dir, "last")
        if not last.exists():
            raise FileNotFoundError(f"cannot resume: {last} does not exist")
        stored = torch.load(last, weights_only=True, map_location="cpu")["config"]
        stored = TrainConfig.from_dict(stored).to_dict()  # fields added since take their defaults
        diff = sorted(k for k, v in config.to_dict().items() if k not in RESUME_FREE and stored.get(k) != v)
        if diff:
            raise ValueError(f"cannot resume {run_id}: config differs from the stored one in {diff}")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"run directory {run_dir} already exists; pass resume=True or a new run_id")
    return run_id


def open_run(store: Store, config: TrainConfig, run_id: str | None, resume: bool,
             ctx: DistContext | None) -> tuple[str, dict[str, Any] | None]:
    """(run id, resumed checkpoint or None); rank 0 decides and every rank follows (or raises its error)."""
    error: Exception | None = None
    if ctx is None or ctx.is_main:
        try:
            run_id = check_run(store, config, run_id, resume)
        except (ValueError, FileNotFoundError) as exc:
            error = exc
    run_id, error = broadcast_object((run_id, error), ctx)  # type: ignore[misc]
    if error is not None:
        raise error
    assert run_id is not None
    last = checkpoint_path(store.run_dir(run_id), "last")
    return run_id, torch.load(last, weights_only=True, map_location="cpu") if resume else None
