"""Evaluation of a profile-mode run (``image_source='profiles'``) on its held-out scaffolds.

Same layout as :func:`cmcl_model.evaluation.run.evaluate` (``reports/<run>/metrics.json``, declared in
``schemas/reports/metrics.json``, and ``report.html``), with what small real sets need:

- retrieval both ways, MIGA's 1 + 100 protocol (``hit101``: the whole pool when it holds fewer
  than 101 compounds) and whole-pool Recall@k (``fullpool``), at compound level (a compound's
  profile embedding = the projection of the mean encoder feature of all its profiles) and at
  profile level (``crop_level``: each well profile on its own);
- 95 % bootstrap confidence intervals (``ci``) of every metric of the model and each baseline:
  the test compounds (queries) resampled with replacement, ranks kept from the full pool;
- baselines on the same compounds: the untrained architecture, Morgan fingerprints -> ridge ->
  profile and Morgan <-> profile CCA (fitted on training compounds), and exact chance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cmcl_model.data import ProfileDataset, ProfileNorm
from cmcl_model.evaluation.baselines import morgan_cca_embeddings, morgan_ridge_profiles
from cmcl_model.evaluation.embeddings import compound_mean_profiles, embed_profile_set
from cmcl_model.evaluation.metrics import bootstrap_ci, chance_report, crop_level, retrieval_report
from cmcl_model.reports.evaluation import write_report
from cmcl_model.reports.validation import validate_metrics
from cmcl_model.train import TrainConfig, build_model, load_checkpoint, resolve_device
from pipeline.store.atomic import write_text_atomic
from pipeline.store.paths import Store

__all__ = ["evaluate_profiles"]


def evaluate_profiles(store_root: Store | str | Path, run_dir: str | Path, *, seeds: Sequence[int] = (0, 1, 2, 3, 4),
                      which: str = "best", device: str = "auto", n_boot: int = 1000, report: bool = True) -> dict[str, Any]:
    """Evaluate profile-mode run ``run_dir`` on the store's test split; write metrics.json and report.html.

    Raises
    ------
    ValueError
        If the store has no split, the run is not a profile-mode run, or fewer than 2 test
        compounds have profiles.
    """
    store, run_dir = Store.of(store_root), Path(run_dir)
    if not store.table_path("split").exists():
        raise ValueError(f"store {store.root} has no tables/split.parquet; train first")
    ckpt = load_checkpoint(run_dir, which)  # type: ignore[arg-type]
    config = TrainConfig.from_dict(ckpt["config"])
    if config.image_source != "profiles":
        raise ValueError(f"run {run_dir.name} trained on {config.image_source}, not profiles")
    split = store.read("split")
    norm = {b: ProfileNorm.from_dict(d) for b, d in ckpt["normalization"].items()}
    full = ProfileDataset(store, sources=config.profile_sources, normalization=norm, seed=config.seed)
    if full.features != next(iter(norm.values())).features:
        raise ValueError(f"the store's profile features differ from those run {run_dir.name} was trained on")
    test_keys = [k for k in split.loc[split["Split"] == "test", "Metadata_InChIKey"] if k in set(full.keys)]
    train_keys = [k for k in split.loc[split["Split"] == "train", "Metadata_InChIKey"] if k in set(full.keys)]
    if len(test_keys) < 2:
        raise ValueError(f"only {len(test_keys)} test compound(s) with profiles in {store.root}; need at least 2")
    ds = full.subset(test_keys)
    dev = resolve_device(device)  # type: ignore[arg-type]
    model = build_model(config)
    model.load_state_dict(ckpt["model"])
    emb = embed_profile_set(model.to(dev), ds)
    torch.manual_seed(config.seed)  # the run's initial weights
    untrained = embed_profile_set(build_model(config).to(dev), ds)
    prof = compound_mean_profiles(full.subset(train_keys + test_keys))
    pairs = {"model": (emb.graph, emb.image), "untrained": (untrained.graph, untrained.image),
             "morgan_ridge": morgan_ridge_profiles(store, prof, train_keys, ds.keys),
             "morgan_cca": morgan_cca_embeddings(store, train_keys, ds.keys, profiles=prof, n_components=8,
                                                 profile_pca_dim=32)}
    reports, n_cand = {}, {}
    for name, (g, i) in pairs.items():
        reports[name], n_cand = retrieval_report(g, i, seeds=seeds)
    crop_r, crop_chance, crop_n = crop_level(emb.graph, emb.crops, emb.crop_groups, seeds=seeds)
    counts = split["Split"].value_counts()
    result: dict[str, Any] = {
        "model": reports.pop("model"), "crop_level": crop_r, "baselines": reports, "chance": chance_report(n_cand),
        "crop_level_chance": crop_chance,
        "split": {s: int(counts.get(s, 0)) for s in ("train", "val", "test")} | {"test_evaluated": len(ds.keys)},
        "n_candidates": n_cand, "crop_level_n": {"crops": crop_n["crops"], "compounds": crop_n["compounds"]},
        "seeds": [int(s) for s in seeds], "checkpoint": which, "run": run_dir.name,
        "ties": "pessimistic (rank = 1 + #candidates scoring >= the positive)",
        "image_source": "profiles", "negatives": config.negatives,
        "ci": {name: bootstrap_ci(g, i, seeds=seeds, n_boot=n_boot) for name, (g, i) in pairs.items()},
        "ci_level": 0.95, "n_bootstrap": int(n_boot),
    }
    validate_metrics(result)
    write_text_atomic(json.dumps(result, indent=2), store.report_dir(run_dir.name) / "metrics.json")
    if report:
        write_report(store, run_dir, result)
    return result
