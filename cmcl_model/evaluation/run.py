"""Evaluate a training run on the test split: retrieval metrics, baselines, chance, probe, report.

Writes ``reports/<run>/metrics.json`` with the layout declared in ``schemas/reports/metrics.json``::

    {"model": R, "crop_level": R,
     "baselines": {"untrained": R, "morgan_ridge": R, "morgan_cca": R[, "cellprofiler_cca": R]},
     ["activity": {"cellprofiler" | "model" | "untrained": {n_compounds, fraction_retrieved, ...}}]
     "chance": R, "crop_level_chance": R,
     "split": {"train": n, "val": n, "test": n, "test_evaluated": n},
     "n_candidates": {"hit101": n, "fullpool": n}, "crop_level_n": {"crops": n, "compounds": n},
     "probe": {...}, "seeds": [...], "checkpoint": "best", "run": "<run id>", "ties": "..."}

where ``R[protocol][direction][metric]``; protocol ``hit101`` (metrics hit@1/3/5/10, mrr,
mean_rank) or ``fullpool`` (recall@1/5/10, mrr, mean_rank); direction ``graph_to_image`` or
``image_to_graph``. Values are fractions, except ``mean_rank`` (a rank, 1 = best). ``model``
and the baselines are at compound level (a compound's image embedding is the projection of the
mean encoder feature of its crops, averaged over wells,
:func:`cmcl_model.evaluation.embeddings.embed_test_set`); ``crop_level`` ranks single crops
(:func:`cmcl_model.evaluation.metrics.crop_level`). The baselines are in
:mod:`cmcl_model.evaluation.baselines`; the report (``report.html``) is written by
:mod:`cmcl_model.reports.evaluation`. Profile-mode runs are evaluated by
:func:`cmcl_model.evaluation.profiles.evaluate_profiles`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cmcl_model.data import PairDataset, PlateNorm
from cmcl_model.evaluation.activity import activity_comparison, consistency_summary
from cmcl_model.evaluation.baselines import (
    cellprofiler_compound_profiles,
    cellprofiler_well_profiles,
    morgan_cca_embeddings,
    morgan_ridge_embeddings,
)
from cmcl_model.evaluation.embeddings import TestEmbeddings, compound_embeddings, embed_test_set, embed_wells, well_table
from cmcl_model.evaluation.metrics import chance_report, crop_level, retrieval_report
from cmcl_model.evaluation.probing import probe
from cmcl_model.evaluation.profiles import evaluate_profiles
from cmcl_model.nn import CMCLModel
from cmcl_model.reports.evaluation import write_report
from cmcl_model.reports.validation import validate_metrics
from cmcl_model.train import TrainConfig, build_model, load_checkpoint, resolve_device
from pipeline.store.atomic import write_text_atomic
from pipeline.store.paths import Store

__all__ = ["EVALUATE_STEPS", "evaluate"]

#: Steps :func:`evaluate` reports to its ``progress`` callback (model retrieval, untrained
#: encoders, baselines, phenotypic activity, probe, report).
EVALUATE_STEPS = 6


@dataclass(frozen=True)
class _TestRun:
    """What every step of :func:`evaluate` reads: the store, the run, its model and test set."""

    store: Store
    run_dir: Path
    split: pd.DataFrame
    config: TrainConfig
    norm: dict[str, PlateNorm]
    model: CMCLModel
    dataset: PairDataset
    train_keys: list[str]
    device: torch.device


def _load_test_run(store: Store, run_dir: Path, split: pd.DataFrame, ckpt: dict[str, Any], config: TrainConfig,
                   device: str) -> _TestRun:
    """The run's model (on ``device``) and its test compounds with images."""
    norm = {p: PlateNorm.from_dict(d) for p, d in ckpt["normalization"].items()}
    test_keys = split.loc[split["Split"] == "test", "Metadata_InChIKey"].tolist()
    train_keys = split.loc[split["Split"] == "train", "Metadata_InChIKey"].tolist()
    ds = PairDataset(store, keys=test_keys, normalization=norm, log1p=config.log1p, seed=config.seed,
                     source=config.image_source)
    if len(ds) < 2:
        raise ValueError(f"only {len(ds)} test compound(s) with images in {store.root}; need at least 2")
    dev = resolve_device(device)  # type: ignore[arg-type]
    model = build_model(config)
    model.load_state_dict(ckpt["model"])
    return _TestRun(store, run_dir, split, config, norm, model.to(dev), ds, train_keys, dev)


def _baselines(t: _TestRun, untrained_r: dict[str, Any], *, seeds: Sequence[int]) -> dict[str, Any]:
    """``R`` of each baseline: the untrained encoders' (given) and the Morgan baselines
    (:mod:`cmcl_model.evaluation.baselines`), in the order of ``metrics.json``."""
    store, keys = t.store, t.dataset.keys
    out = {"untrained": untrained_r}
    out["morgan_ridge"] = retrieval_report(*morgan_ridge_embeddings(store, t.train_keys, keys), seeds=seeds)[0]
    out["morgan_cca"] = retrieval_report(*morgan_cca_embeddings(store, t.train_keys, keys), seeds=seeds)[0]
    cp_prof = cellprofiler_compound_profiles(store)
    if cp_prof is not None and all(k in cp_prof.index for k in keys):
        # CellProfiler profiles <-> Morgan fingerprints, the field's representation as a baseline
        pcp, icp = morgan_cca_embeddings(store, t.train_keys, keys, profiles=cp_prof, n_components=8,
                                         profile_pca_dim=32)
        out["cellprofiler_cca"] = retrieval_report(pcp, icp, seeds=seeds)[0]
    return out


def _activity(t: _TestRun, untrained: CMCLModel, *, crops_per_well: int,
              ground_truth: pd.DataFrame | None) -> dict[str, Any] | None:
    """Phenotypic activity of the run's, the untrained encoders' and the CellProfiler well
    representations (:func:`cmcl_model.evaluation.activity.activity_comparison`); None when the
    store has no CellProfiler profiles (``cmcl profile``)."""
    if cellprofiler_well_profiles(t.store) is None:
        return None
    wells = well_table(t.store)
    kw = dict(log1p=t.config.log1p, proj_dim=t.config.proj_dim, crops_per_well=crops_per_well)
    return activity_comparison(t.store, {
        "model": (wells, embed_wells(t.model.cpu(), t.store, wells, t.norm, **kw)),
        "untrained": (wells, embed_wells(untrained.cpu(), t.store, wells, t.norm, **kw)),
    }, ground_truth=ground_truth)


def _result(t: _TestRun, emb: TestEmbeddings, baselines: dict[str, Any], activity: dict[str, Any] | None, *,
            seeds: Sequence[int], which: str) -> dict[str, Any]:
    """The ``metrics.json`` dictionary, without the probe."""
    model_r, n_cand = retrieval_report(emb.graph, emb.image, seeds=seeds)
    crop_r, crop_chance, crop_n = crop_level(emb.graph, emb.crops, emb.crop_groups, seeds=seeds)
    counts = t.split["Split"].value_counts()
    result: dict[str, Any] = {
        "model": model_r,
        "crop_level": crop_r,
        "baselines": baselines,
        "chance": chance_report(n_cand),
        "crop_level_chance": crop_chance,
        "split": {s: int(counts.get(s, 0)) for s in ("train", "val", "test")} | {"test_evaluated": len(t.dataset)},
        "n_candidates": n_cand,
        "crop_level_n": crop_n,
        "seeds": [int(s) for s in seeds],
        "checkpoint": which,
        "run": t.run_dir.name,
        "ties": "pessimistic (rank = 1 + #candidates scoring >= the positive)",
    }
    if activity is not None:
        result["activity"] = activity
    consistency = consistency_summary(t.store)
    if consistency:
        result["consistency"] = consistency
    return result


def evaluate(
    store_root: Store | str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    which: str = "best",
    crops_per_well: int = 16,
    device: str = "auto",
    probe_dataset: str | None = "solubility",
    probe_folds: int = 5,
    probe_max_molecules: int | None = None,
    report: bool = True,
    ground_truth: pd.DataFrame | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate run ``run_dir`` on the test split of the store and write its report.

    Returns the ``metrics.json`` dictionary (see module docstring), validated against its
    declaration. Also writes ``reports/<run>/report.html`` (:func:`cmcl_model.reports.evaluation.write_report`)
    unless ``report=False``. ``device``: 'auto', 'cpu' or 'cuda'; ``crops_per_well``: crops
    averaged per well (fixed seed, no augmentation); ``probe_dataset``: labelled set of the
    downstream probe (:func:`cmcl_model.evaluation.probing.probe`), None to skip it; ``ground_truth``: the
    plates' per-well phenotypes, if known (:func:`cmcl_model.reports.evaluation.write_report`);
    ``progress``: called with a label after each of the :data:`EVALUATE_STEPS` steps.

    Raises
    ------
    ValueError
        If the store has no split table or fewer than 2 test compounds with images.
    """
    store = Store.of(store_root)
    run_dir = Path(run_dir)
    if not store.table_path("split").exists():
        raise ValueError(f"store {store.root} has no tables/split.parquet; train first")
    split = store.read("split")
    ckpt = load_checkpoint(run_dir, which)  # type: ignore[arg-type]
    config = TrainConfig.from_dict(ckpt["config"])
    if config.image_source == "profiles":  # CellProfiler profiles, not crops: cmcl_model/evaluation/profiles.py
        return evaluate_profiles(store.root, run_dir, seeds=seeds, which=which, device=device, report=report)
    t = _load_test_run(store, run_dir, split, ckpt, config, device)
    tick = progress or (lambda label: None)
    emb = embed_test_set(t.model, t.dataset, crops_per_well=crops_per_well)
    tick("model retrieval")
    torch.manual_seed(config.seed)  # same initialisation as the run's model before training
    untrained = build_model(config)
    gu, iu = compound_embeddings(untrained.to(t.device), t.dataset, crops_per_well=crops_per_well)
    untrained_r = retrieval_report(gu, iu, seeds=seeds)[0]
    tick("untrained encoders")
    baselines = _baselines(t, untrained_r, seeds=seeds)
    tick("baselines")
    activity = _activity(t, untrained, crops_per_well=crops_per_well, ground_truth=ground_truth)
    tick("phenotypic activity")
    result = _result(t, emb, baselines, activity, seeds=seeds, which=which)
    if probe_dataset is not None:
        result["probe"] = probe(
            store.root, run_dir, dataset=probe_dataset, folds=probe_folds, which=which, max_molecules=probe_max_molecules
        )
    tick("probe")
    validate_metrics(result)
    write_text_atomic(json.dumps(result, indent=2), store.report_dir(run_dir.name) / "metrics.json")
    if report:
        write_report(store, run_dir, result, dataset=t.dataset, embeddings=emb, ground_truth=ground_truth)
    tick("report")
    return result
