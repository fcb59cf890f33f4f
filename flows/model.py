"""Prefect flows training the contrastive model and evaluating a run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cmcl_model.train.config import PRESETS, resolve_config  # one definition, used by torchrun ranks too
from flows.progress import count_callback, progress_enabled, step_progress
from cmcl_model.train.layout import checkpoint_path, metrics_path
from pipeline.store.paths import Store

__all__ = ["train_flow", "evaluate_flow", "ablation_flow", "finetune_flow", "resolve_config", "PRESETS"]

#: the modules whose code a training run depends on (their fingerprint is part of the training key)
TRAINING_MODULES = (
    "cmcl_model.train.config", "cmcl_model.train.build", "cmcl_model.train.objectives", "cmcl_model.train.loaders",
    "cmcl_model.train.loop", "cmcl_model.train.checkpoints", "cmcl_model.train.distributed",
    "cmcl_model.nn.model", "cmcl_model.nn.encoders", "cmcl_model.nn.losses",
    "cmcl_model.data.pairs", "cmcl_model.data.crops", "cmcl_model.data.split",
)


def _training_key(st: Store, config_dict: dict[str, Any]) -> str:
    """Fingerprint of everything a run learns from: the ledger's plate fingerprints, compounds,
    the store's negative-control labels, config and the model code."""
    from pipeline.profiles.controls import negcon_key, store_negcon
    from pipeline.store.provenance import code_fingerprint

    h = hashlib.sha256(json.dumps(config_dict, sort_keys=True).encode())
    h.update(code_fingerprint(*TRAINING_MODULES).encode())
    led = st.read("ledger")
    for plate, fp, status in sorted(zip(led["Metadata_Plate"], led["Fingerprint"], led["Status"])):
        h.update(f"{plate}:{fp}:{status}\n".encode())
    h.update(negcon_key(store_negcon(st)).encode())  # which crops are controls
    key_file = st.path("compounds_fingerprint")
    h.update(key_file.read_bytes() if key_file.is_file() else b"")
    if config_dict.get("image_source") == "profiles":  # imported profiles are in no ledger
        from pipeline.plates.discovery import fingerprint_files

        files = [str(p.relative_to(st.root)) for p in st.table_files("profiles_wells") + st.table_files("profiles_imported")]
        h.update(fingerprint_files(st.root, files, extra=code_fingerprint("cmcl_model.data.profiles")).encode())
    return h.hexdigest()


def _finished_run_with_key(st: Store, key: str) -> str | None:
    for run in reversed(st.runs()):
        marker = st.run_dir(run) / "training_key.txt"
        if marker.is_file() and marker.read_text() == key and checkpoint_path(st.run_dir(run), "best").is_file():
            return run
    return None


@task(name="train", cache_policy=NO_CACHE)
def train_task(store: Store, config_dict: dict[str, Any], run_id: str | None, resume: bool, nproc: int = 1) -> str:
    from cmcl_model.train.config import TrainConfig
    from cmcl_model.train.loop import train
    from cmcl_model.train.rundir import new_run_id

    if nproc > 1:  # torchrun on this machine: N ranks of the same trainer (cmcl_model.train.worker)
        import tempfile

        from cmcl_model.train.distributed import launch

        run_id = run_id or new_run_id(json.dumps(config_dict, sort_keys=True))
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "config.json"
            cfg.write_text(json.dumps(config_dict))
            launch(nproc, ["--store", str(store.root), "--config", str(cfg), "--run-id", run_id, *(["--resume"] if resume else []),
                           *([] if progress_enabled() else ["--quiet"])])
        return run_id
    run_dir = train(store, TrainConfig.from_dict(config_dict), run_id=run_id, progress=count_callback("train") or False,
                    resume=resume)
    return run_dir.name


@flow(name="train", flow_run_name="train", log_prints=True)
def train_flow(store: str, *, preset: str = "default", overrides: dict[str, Any] | None = None,
               run_id: str | None = None, resume: bool = False, force: bool = False, nproc: int = 1) -> str:
    """Train a model on the store (``nproc`` > 1: data-parallel, that many processes under torchrun);
    reuse a finished run trained on exactly the same data and config."""
    logger = get_run_logger()
    st = Store(Path(store))
    config = resolve_config(preset, overrides)
    key = _training_key(st, config.to_dict())
    if not (force or resume or run_id):
        done = _finished_run_with_key(st, key)
        if done:
            logger.info("run %s already trained on the same data and config: reusing it", done)
            return done
    run = train_task(st, config.to_dict(), run_id, resume, nproc)
    (st.run_dir(run) / "training_key.txt").write_text(key)
    _run_artifact(st, run)
    return run


def _run_artifact(st: Store, run: str) -> None:
    from prefect.artifacts import create_markdown_artifact

    metrics = metrics_path(st.run_dir(run))
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    last = json.loads(lines[-1]) if lines else {}
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in last.items())
    create_markdown_artifact(key=f"run-{run.lower()}"[:60], markdown=f"### Training run {run}\n\n| metric | value |\n|---|---|\n{rows}\n",
                             description=f"last epoch of training run {run}")


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(store: str, run: str, seeds: list[int], ground_truth: list[str] | None = None) -> dict[str, Any]:
    from cmcl_model.evaluation.run import EVALUATE_STEPS, evaluate
    from pipeline.synthetic import read_ground_truth

    truth = read_ground_truth([Path(p) for p in ground_truth]) if ground_truth else None
    return evaluate(store, Path(store) / "runs" / run, seeds=tuple(seeds), ground_truth=truth,
                    progress=step_progress("evaluate", EVALUATE_STEPS))


@flow(name="evaluate", flow_run_name="evaluate-{run}", log_prints=True)
def evaluate_flow(store: str, run: str, *, seeds: list[int] | None = None, force: bool = False,
                  ground_truth: list[str] | None = None) -> dict[str, Any]:
    """Evaluate a run on held-out compounds with baselines; writes ``reports/<run>/``.

    ``ground_truth``: folders of generated plates whose ``ground_truth/`` the report uses to
    colour its embedding map (:func:`pipeline.synthetic.read_ground_truth`)."""
    st = Store(Path(store))
    metrics_path = st.report_dir(run) / "metrics.json"
    ckpt = checkpoint_path(st.run_dir(run), "best")
    if not force and metrics_path.is_file() and metrics_path.stat().st_mtime >= ckpt.stat().st_mtime:
        get_run_logger().info("run %s already evaluated: %s", run, metrics_path)
        return json.loads(metrics_path.read_text())
    return evaluate_task(store, run, list(seeds or [0, 1, 2, 3, 4]), ground_truth)


@flow(name="ablation", flow_run_name="ablation", log_prints=True)
def ablation_flow(store: str, *, preset: str = "default", overrides: dict[str, Any] | None = None,
                  variants: list[str] | None = None, seeds: list[int] | None = None) -> list[dict[str, Any]]:
    """Train and evaluate one run per objective variant (GIC, +MGM, +GGIM, all) and seed on the same split."""
    from cmcl_model.train.ablation import run_ablation

    config = resolve_config(preset, overrides)
    kwargs: dict[str, Any] = {"variants": tuple(variants)} if variants else {}
    if seeds:
        kwargs["seeds"] = tuple(seeds)
    table = run_ablation(Store(Path(store)), config, progress=progress_enabled(), **kwargs)
    get_run_logger().info("ablation table: %s", table.attrs.get("csv"))
    rows = table.to_dict(orient="records")
    for r in rows:
        r["_csv"] = table.attrs.get("csv")
    return rows


@flow(name="finetune", flow_run_name="finetune", log_prints=True)
def finetune_flow(options: dict[str, Any], config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fine-tune on a labelled set (:func:`cmcl_model.reports.finetune.run_finetune`); returns
    the results document with its path under ``"_path"``."""
    from cmcl_model.finetune.run import FinetuneConfig
    from cmcl_model.reports.finetune import run_finetune

    from flows.finetune_progress import finetune_progress

    logger = get_run_logger()
    progress = finetune_progress(f"finetune {options.get('dataset') or Path(str(options.get('csv'))).name}")
    doc, path = run_finetune(**options, config=FinetuneConfig(**(config or {})), log=logger.info, progress=progress)
    return {**doc, "_path": str(path)}
