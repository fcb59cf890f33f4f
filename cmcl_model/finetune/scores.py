"""Fine-tuning losses and scores: masked BCE / MSE, ROC-AUC or RMSE per task (Hu et al.'s
averaging: tasks whose evaluated subset has one class are skipped), summaries over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["masked_bce", "masked_mse", "task_scores", "is_better", "summarize"]


def masked_bce(logits: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy over the labelled entries only.

    .. math:: L = \\frac{\\sum_{ij} m_{ij}\\,\\mathrm{BCE}(z_{ij}, y_{ij})}{\\sum_{ij} m_{ij}},
              \\quad m_{ij} = [y_{ij} \\text{ is not NaN}]

    Shapes: logits (B, T), labels (B, T) with NaN for missing -> scalar. Returns 0 (with a
    gradient) when nothing is labelled.
    """
    mask = ~torch.isnan(labels)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.where(mask, labels, 0.0), reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def masked_mse(pred: Tensor, labels: Tensor) -> Tensor:
    """Mean squared error over the labelled (non-NaN) entries. (B, T), (B, T) -> scalar."""
    mask = ~torch.isnan(labels)
    return (torch.where(mask, pred - labels, 0.0) ** 2).sum() / mask.sum().clamp(min=1)


def task_scores(pred: np.ndarray, labels: np.ndarray, kind: str) -> tuple[float, list[float | None]]:
    """Mean and per-task score: ROC-AUC (classification; None for a task whose labelled subset
    has one class) or RMSE (regression; None for a task without labels).

    Shapes: pred (N, T) (logits/probabilities or predictions in label units), labels (N, T) NaN
    for missing.
    """
    from sklearn.metrics import roc_auc_score

    per: list[float | None] = []
    for j in range(labels.shape[1]):
        m = np.isfinite(labels[:, j])
        y, p = labels[m, j], pred[m, j]
        if kind == "classification":
            per.append(float(roc_auc_score(y, p)) if y.size and np.unique(y).size == 2 else None)
        else:
            per.append(float(np.sqrt(np.mean((p - y) ** 2))) if y.size else None)
    vals = [v for v in per if v is not None]
    return (float(np.mean(vals)) if vals else float("nan")), per


def is_better(a: float, b: float, kind: str) -> bool:
    """Whether score ``a`` beats ``b`` (higher ROC-AUC, lower RMSE); anything beats NaN."""
    if np.isnan(b):
        return not np.isnan(a)
    return a > b if kind == "classification" else a < b


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "sd", "per_seed"}`` (sd with ddof=1; 0 for one value), NaNs dropped."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    return {
        "mean": float(v.mean()) if v.size else None,
        "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0 if v.size else None,
        "per_seed": [float(x) if x is not None and np.isfinite(x) else None for x in values],
    }
