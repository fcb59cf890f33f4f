"""Baselines on a fine-tuning split: Morgan fingerprints with a logistic-regression / ridge or a
random-forest model, and a linear probe on frozen embeddings, each tuned per task on validation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from cmcl_model.finetune.labelled import LabelledSet
from cmcl_model.finetune.scores import is_better, task_scores

__all__ = ["linear_probe", "morgan_baseline"]


def _fit_linear(x_tr, y_tr, x_ev, kind: str, c: float):
    from sklearn.linear_model import LogisticRegression, Ridge

    if kind == "classification":
        m = LogisticRegression(C=c, max_iter=2000).fit(x_tr, y_tr)
        return [m.predict_proba(x)[:, 1] for x in x_ev]
    m = Ridge(alpha=1.0 / c).fit(x_tr, y_tr)
    return [m.predict(x) for x in x_ev]


def _fit_forest(x_tr, y_tr, x_ev, kind: str, leaf: int, seed: int):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestClassifier if kind == "classification" else RandomForestRegressor
    m = cls(n_estimators=200, min_samples_leaf=leaf, max_features="sqrt" if kind == "classification" else 0.3,
            n_jobs=1, random_state=seed).fit(x_tr, y_tr)
    return [m.predict_proba(x)[:, 1] if kind == "classification" else m.predict(x) for x in x_ev]


def _tuned_per_task(
    features: np.ndarray, data: LabelledSet, split: np.ndarray, fit: Callable, grid: Sequence[Any]
) -> dict[str, Any]:
    """Per task: fit each grid value on train, keep the best on validation, score on test."""
    split = np.asarray(split)
    tr, va, te = (split == k for k in ("train", "val", "test"))
    t = len(data.tasks)
    pv, pt = np.full((va.sum(), t), np.nan), np.full((te.sum(), t), np.nan)
    chosen: list[Any] = []
    for j in range(t):
        lab = np.isfinite(data.labels[:, j])
        m = tr & lab
        y = data.labels[m, j]
        if data.kind == "classification" and np.unique(y).size < 2:  # constant predictor
            pv[:, j] = pt[:, j] = float(y.mean()) if y.size else 0.5
            chosen.append(None)
            continue
        best = (None, None, None, None)
        for g in grid:
            p_val, p_test = fit(features[m], y, (features[va], features[te]), g)
            s, _ = task_scores(p_val[:, None], data.labels[va][:, [j]], data.kind)
            if best[0] is None or is_better(s, best[0], data.kind) or (np.isnan(s) and best[1] is None):
                best = (s, g, p_val, p_test)
        pv[:, j], pt[:, j] = best[2], best[3]
        chosen.append(best[1])
    val, _ = task_scores(pv, data.labels[va], data.kind)
    test, per = task_scores(pt, data.labels[te], data.kind)
    return {"val": val, "test": test, "per_task_test": per, "chosen": chosen}


def linear_probe(embeddings: np.ndarray, data: LabelledSet, split: np.ndarray) -> dict[str, Any]:
    """Frozen embeddings (N, d), standardised -> logistic regression (classification) or
    ridge (regression) per task, the inverse regularisation ``C`` chosen on validation."""
    x = np.asarray(embeddings, dtype=np.float64)
    tr = np.asarray(split) == "train"
    mu, sd = x[tr].mean(0), x[tr].std(0)
    sd[sd < 1e-12] = 1.0
    x = (x - mu) / sd
    return _tuned_per_task(
        x, data, split, lambda a, y, ev, c: _fit_linear(a, y, ev, data.kind, c), (1e-3, 1e-2, 1e-1, 1.0)
    )


def morgan_baseline(
    data: LabelledSet, split: np.ndarray, *, model: Literal["linear", "forest"], seed: int = 0
) -> dict[str, Any]:
    """Morgan fingerprints (radius 2, 2048 bits) -> logistic regression / ridge (``C`` in
    {0.01, 0.1, 1}) or random forest (200 trees, ``min_samples_leaf`` in {1, 3}), tuned per
    task on validation."""
    from pipeline.chem.fingerprints import morgan_features

    fp = morgan_features(data.smiles)
    if model == "linear":
        return _tuned_per_task(fp, data, split, lambda a, y, ev, c: _fit_linear(a, y, ev, data.kind, c), (0.01, 0.1, 1.0))
    if model == "forest":
        return _tuned_per_task(
            fp, data, split, lambda a, y, ev, leaf: _fit_forest(a, y, ev, data.kind, leaf, seed), (1, 3)
        )
    raise ValueError(f"model={model!r} is not one of 'linear', 'forest'")
