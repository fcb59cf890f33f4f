"""Downstream probe: do frozen molecule embeddings of a run predict a real molecular property?

A linear probe (standardised features -> ridge regression, regularisation chosen by inner
leave-one-out CV) on a labelled set shipped in ``cmcl_model/datasets/`` (see its README), with
**scaffold-grouped** K-fold cross-validation: molecules sharing a Bemis-Murcko scaffold are
always in the same fold. Compared feature sets, all on the same folds:

``pretrained_gin``
    The run's graph encoder output (before the projection head), frozen.
``random_gin``
    The same architecture at its initial weights (``torch.manual_seed(config.seed)``).
``morgan``
    Morgan fingerprints (radius 2, 2048 bits).
``train_mean``
    Predicts the training folds' mean (the floor any feature set should beat).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.resources import files
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data

from cmcl_model.evaluation.embeddings import molecule_embeddings
from cmcl_model.train import TrainConfig, build_model, load_checkpoint

__all__ = ["DATASETS", "load_dataset", "smiles_to_data", "scaffold_folds", "probe_features", "probe"]

#: Shipped labelled sets: name -> (file, label column, task).
DATASETS: dict[str, tuple[str, str, Literal["regression", "classification"]]] = {
    "solubility": ("solubility.csv", "logS", "regression"),
}


def load_dataset(name: str) -> pd.DataFrame:
    """The shipped labelled set ``name`` as a DataFrame with columns ``smiles`` and ``label``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`DATASETS` (the message lists them).
    """
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is not one of {sorted(DATASETS)}")
    fname, label, _ = DATASETS[name]
    df = pd.read_csv(files("cmcl_model.datasets").joinpath(fname).open())
    return pd.DataFrame({"smiles": df["smiles"].astype(str), "label": df[label].astype(np.float64)})


def smiles_to_data(smiles: str) -> Data:
    """OGB graph of ``smiles`` (:func:`pipeline.chem.graphs.smiles_to_graph`) as a PyG ``Data``:
    ``x`` (n, 9) long, ``edge_index`` (2, E) long, ``edge_attr`` (E, 3) long.

    Raises
    ------
    pipeline.chem.graphs.GraphError
        If RDKit cannot parse ``smiles``.
    """
    from pipeline.chem.graphs import smiles_to_graph

    g = smiles_to_graph(smiles)
    return Data(
        x=torch.as_tensor(g["node_feat"], dtype=torch.long),
        edge_index=torch.as_tensor(g["edge_index"], dtype=torch.long),
        edge_attr=torch.as_tensor(g["edge_feat"], dtype=torch.long),
        num_nodes=int(g["num_nodes"]),
    )


def scaffold_folds(smiles: Sequence[str], *, folds: int = 5) -> np.ndarray:
    """(N,) int fold of each molecule; molecules with the same Bemis-Murcko scaffold share a
    fold (acyclic molecules share the empty scaffold); folds balanced by size (GroupKFold)."""
    from rdkit import Chem
    from sklearn.model_selection import GroupKFold

    from pipeline.chem.scaffolds import scaffold

    scaf = []
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        # without chirality: stereoisomers share a fold, so no probe is scored on a mirror image it was fitted on
        scaf.append(scaffold(s, chirality=False) if mol is not None and mol.GetNumAtoms() else s)
    fold = np.empty(len(scaf), dtype=np.int64)
    for k, (_, test) in enumerate(GroupKFold(n_splits=folds).split(np.zeros(len(scaf)), groups=scaf)):
        fold[test] = k
    return fold


def _ridge_fold(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Ridge on standardised features, alpha by exact leave-one-out error (dual form, one
    eigendecomposition of the training Gram matrix). Returns predictions for ``x_te``."""
    mu, sd = x_tr.mean(0), x_tr.std(0)
    sd[sd < 1e-12] = 1.0
    a, b = (x_tr - mu) / sd, (x_te - mu) / sd
    ym = y_tr.mean()
    yc = y_tr - ym
    w, q = np.linalg.eigh(a @ a.T)
    w = np.maximum(w, 0.0)
    qty = q.T @ yc
    # centring makes the all-ones vector a null direction of the Gram matrix: it belongs to the
    # intercept, not to the ridge penalty, so it is left out of the leave-one-out diagonal
    ones = np.abs(q.T @ np.full(len(yc), 1 / np.sqrt(len(yc))))
    keep = np.ones_like(w)
    keep[np.argmax(ones)] = 0.0
    best, coef = np.inf, None
    for alpha in alphas:
        inv = 1.0 / (w + alpha)
        c = q @ (inv * qty)  # dual coefficients
        g_diag = (q**2) @ (inv * keep)  # diagonal of the hat-matrix complement
        loo = np.mean((c / g_diag) ** 2)
        if loo < best:
            best, coef = loo, c
    return b @ (a.T @ coef) + ym


def _ridge_rmse(x: np.ndarray | None, y: np.ndarray, fold: np.ndarray) -> list[float]:
    out = []
    alphas = np.logspace(-1, 4, 11)
    for k in np.unique(fold):
        tr, te = fold != k, fold == k
        if x is None:
            pred = np.full(te.sum(), y[tr].mean())
        else:
            xx = np.asarray(x, dtype=np.float64)
            pred = _ridge_fold(xx[tr], y[tr], xx[te], alphas * xx.shape[1] / 100)
        out.append(float(np.sqrt(np.mean((pred - y[te]) ** 2))))
    return out


def probe_features(
    features: dict[str, np.ndarray | None], labels: np.ndarray, fold: np.ndarray
) -> dict[str, dict[str, Any]]:
    """RMSE of a ridge probe per feature set: ``{name: {"mean", "std", "per_fold"}}``.

    ``features[name]`` is (N, d) or None (predict the training mean); ``labels`` (N,),
    ``fold`` (N,) int.

    Raises
    ------
    ValueError
        If a feature matrix does not have one row per label.
    """
    y = np.asarray(labels, dtype=np.float64)
    out = {}
    for name, x in features.items():
        if x is not None and x.shape[0] != y.shape[0]:
            raise ValueError(f"features {name!r} have {x.shape[0]} rows for {y.shape[0]} labels")
        r = _ridge_rmse(x, y, fold)
        out[name] = {"mean": float(np.mean(r)), "std": float(np.std(r)), "per_fold": r}
    return out


def probe(
    store_root: str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    dataset: str = "solubility",
    folds: int = 5,
    which: str = "best",
    max_molecules: int | None = None,
) -> dict[str, Any]:
    """Linear probe of a run's frozen molecule embeddings on a shipped labelled set.

    Parameters
    ----------
    store_root : path
        The store (unused beyond locating the run; kept for a uniform signature).
    run_dir : path
        The training run (``checkpoints/<which>.pt``).
    dataset : {'solubility'}
    folds : int
        Scaffold-grouped cross-validation folds (>= 2).
    max_molecules : int, optional
        Use a random subset (seed 0) of this size, e.g. for quick tests.

    Returns
    -------
    dict
        ``{"dataset", "task": "regression", "metric": "rmse", "folds", "n_molecules",
        "n_unparsable", "results": {name: {"mean", "std", "per_fold"}}}``, names
        ``pretrained_gin``, ``random_gin``, ``morgan``, ``train_mean``. Lower RMSE is better.

    Raises
    ------
    ValueError
        On an unknown dataset or ``folds`` < 2.
    """
    from pipeline.chem.fingerprints import morgan_features
    from pipeline.chem.graphs import GraphError

    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    df = load_dataset(dataset)
    if max_molecules is not None and max_molecules < len(df):
        pick = np.sort(np.random.default_rng(0).choice(len(df), size=max_molecules, replace=False))
        df = df.iloc[pick].reset_index(drop=True)
    graphs, keep = [], []
    for r, s in enumerate(df["smiles"]):
        try:
            graphs.append(smiles_to_data(s))
            keep.append(r)
        except GraphError:
            continue
    data = df.iloc[keep].reset_index(drop=True)
    ckpt = load_checkpoint(run_dir, which)  # type: ignore[arg-type]
    config = TrainConfig.from_dict(ckpt["config"])
    model = build_model(config)
    model.load_state_dict(ckpt["model"])
    torch.manual_seed(config.seed)  # the run's initialisation
    random_model = build_model(config)
    fold = scaffold_folds(data["smiles"].tolist(), folds=folds)
    feats = {
        "pretrained_gin": molecule_embeddings(model, graphs),
        "random_gin": molecule_embeddings(random_model, graphs),
        "morgan": morgan_features(data["smiles"].tolist()),
        "train_mean": None,
    }
    return {
        "dataset": dataset,
        "task": DATASETS[dataset][2],
        "metric": "rmse",
        "folds": int(folds),
        "n_molecules": int(len(data)),
        "n_unparsable": int(len(df) - len(data)),
        "split": "scaffold-grouped K-fold (Bemis-Murcko), ridge on standardised features",
        "results": probe_features(feats, data["label"].to_numpy(), fold),
    }
