"""Evaluate a training run on the test split: retrieval metrics, baselines, chance, probe, report.

Writes ``reports/<run>/metrics.json`` with the layout declared in ``schemas/reports/metrics.json``::

    {"model": R, "crop_level": R,
     "baselines": {"untrained": R, "morgan_ridge": R, "morgan_cca": R},
     "chance": R, "crop_level_chance": R,
     "split": {"train": n, "val": n, "test": n, "test_evaluated": n},
     "n_candidates": {"hit101": n, "fullpool": n}, "crop_level_n": {"crops": n, "compounds": n},
     "probe": {...}, "seeds": [...], "checkpoint": "best", "run": "<run id>", "ties": "..."}

where ``R[protocol][direction][metric]``; protocol ``hit101`` (metrics hit@1/3/5/10, mrr,
mean_rank) or ``fullpool`` (recall@1/5/10, mrr, mean_rank); direction ``graph_to_image`` or
``image_to_graph``. Values are fractions, except ``mean_rank`` (a rank, 1 = best). ``model``
and the baselines are at compound level (a compound's image embedding is the projection of the
mean encoder feature of its crops, averaged over wells); ``crop_level`` ranks single crops
(:func:`cmcl_model.metrics.crop_level`). The report (``report.html``) is written by
:mod:`cmcl_model.report`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Batch

from cmcl_model.data import PairDataset, PlateNorm
from cmcl_model.metrics import DIRECTIONS, chance, crop_level, fullpool, hit101
from cmcl_model.model import CMCLModel
from cmcl_model.train import TrainConfig, _atomic_write_text, build_model, load_checkpoint, resolve_device
from pipeline.store import CHANNELS, Store

__all__ = [
    "evaluate",
    "TestEmbeddings",
    "embed_test_set",
    "compound_embeddings",
    "retrieval_report",
    "compound_profiles",
    "morgan_ridge_embeddings",
    "morgan_cca_embeddings",
    "validate_metrics",
]


@dataclass(frozen=True)
class TestEmbeddings:
    """Embeddings of the compounds of a :class:`PairDataset`, rows in ``dataset.keys`` order.

    Attributes
    ----------
    graph : (M, proj_dim) float32
    image : (M, proj_dim) float32
        Projection of the mean over wells of the mean encoder feature of each well's crops.
    crops : (N, proj_dim) float32
        Projection of each crop's encoder feature (crop level).
    crop_groups : (N,) int64
        Compound row of each crop.
    """

    graph: np.ndarray
    image: np.ndarray
    crops: np.ndarray
    crop_groups: np.ndarray


def _encode_wells(model: CMCLModel, wells: list[torch.Tensor], device: torch.device, *, batch_size: int = 256) -> list[torch.Tensor]:
    """Encoder features of each well's crops ((n_w, C, S, S) each), encoded in batches of
    about ``batch_size`` crops across wells; returns one (n_w, d_image) tensor per well."""
    out: list[torch.Tensor] = []
    start = 0
    while start < len(wells):
        stop, n = start, 0
        while stop < len(wells) and (n == 0 or n + wells[stop].shape[0] <= batch_size):
            n += wells[stop].shape[0]
            stop += 1
        f = model.encode_crops(torch.cat(wells[start:stop]).to(device))
        out.extend(f.split([w.shape[0] for w in wells[start:stop]]))
        start = stop
    return out


@torch.no_grad()
def embed_test_set(
    model: CMCLModel, dataset: PairDataset, *, crops_per_well: int = 16, batch_size: int = 256
) -> TestEmbeddings:
    """Graph, compound-level image and crop-level image embeddings of every compound of
    ``dataset`` (up to ``crops_per_well`` un-augmented crops per well, fixed seed)."""
    model.eval()
    device = next(model.parameters()).device
    graphs = []
    for a in range(0, len(dataset), batch_size):
        batch = Batch.from_data_list(dataset.graphs[a : a + batch_size]).to(device)
        graphs.append(model.embed_graphs(batch).float().cpu())
    wells, owner = [], []
    for idx in range(len(dataset)):
        for w in dataset.well_crops(idx, max_per_well=crops_per_well):
            wells.append(w)
            owner.append(idx)
    well_feats = _encode_wells(model, wells, device, batch_size=batch_size)
    crops = [model.project_images(f).float().cpu() for f in well_feats]
    groups = [np.full(f.shape[0], o, dtype=np.int64) for f, o in zip(well_feats, owner)]
    per_compound: list[list[torch.Tensor]] = [[] for _ in range(len(dataset))]
    for f, o in zip(well_feats, owner):
        per_compound[o].append(f.mean(0))
    feats = [torch.stack(fs).mean(0) for fs in per_compound]
    images = [model.project_images(torch.stack(feats[a : a + batch_size])).float().cpu() for a in range(0, len(feats), batch_size)]
    return TestEmbeddings(
        torch.cat(graphs).numpy(), torch.cat(images).numpy(), torch.cat(crops).numpy(), np.concatenate(groups)
    )


def compound_embeddings(
    model: CMCLModel, dataset: PairDataset, *, crops_per_well: int = 16, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(graph (N, proj_dim), image (N, proj_dim)) float32 of every compound of ``dataset``
    (see :func:`embed_test_set`)."""
    e = embed_test_set(model, dataset, crops_per_well=crops_per_well, batch_size=batch_size)
    return e.graph, e.image


def retrieval_report(graph: np.ndarray, image: np.ndarray, *, seeds: Sequence[int] = (0, 1, 2, 3, 4)) -> tuple[dict, dict]:
    """(R, n_candidates) for both protocols."""
    h, n_h = hit101(graph, image, seeds=seeds)
    f, n_f = fullpool(graph, image)
    return {"hit101": h, "fullpool": f}, {"hit101": n_h, "fullpool": n_f}


def _morgan(smiles: Sequence[str], *, radius: int = 2, n_bits: int = 2048) -> np.ndarray:
    from pipeline.graphs import morgan_fingerprints

    return morgan_fingerprints(list(smiles), radius=radius, n_bits=n_bits).astype(np.float32)


_PROFILE = [f"Intensity_Mean_{c}" for c in CHANNELS] + ["AreaShape_NucleusArea", "AreaShape_CellArea"]


def compound_profiles(store: Store) -> pd.DataFrame:
    """Per-compound image profile: mean over its treatment cells of 5 channel intensities and
    2 areas (CellProfiler-style features of the ``cells`` table), indexed by InChIKey."""
    from cmcl_model.data import treatment_crops

    trt, _ = treatment_crops(store)
    cells = store.read("cells", ["Metadata_Plate", "Metadata_CropIndex", *_PROFILE])
    return trt.merge(cells, on=["Metadata_Plate", "Metadata_CropIndex"]).groupby("Metadata_InChIKey")[_PROFILE].mean()


def _baseline_data(store: Store, train_keys: Sequence[str], test_keys: Sequence[str], name: str):
    prof = compound_profiles(store)
    train_keys = [k for k in train_keys if k in prof.index]  # training compounds with images
    if len(train_keys) < 2:
        raise ValueError(f"{name} needs at least 2 training compounds with images, got {len(train_keys)}")
    missing = [k for k in test_keys if k not in prof.index]
    if missing:
        raise ValueError(f"{name}: test compounds without image profiles: {missing[:5]}")
    smiles = store.read("compounds").set_index("Metadata_InChIKey")["Metadata_SMILES"]
    y_train = prof.loc[list(train_keys)].to_numpy(np.float64)
    mu, sd = y_train.mean(0), y_train.std(0) + 1e-9
    x_train = _morgan(smiles.loc[list(train_keys)].tolist())
    x_test = _morgan(smiles.loc[list(test_keys)].tolist())
    y_test = (prof.loc[list(test_keys)].to_numpy(np.float64) - mu) / sd
    return x_train, (y_train - mu) / sd, x_test, y_test


def morgan_ridge_embeddings(
    store: Store, train_keys: Sequence[str], test_keys: Sequence[str], *, alpha: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: Morgan fingerprints (r=2, 2048 bits) -> ridge regression -> per-compound
    image profile (:func:`compound_profiles`, standardised with training statistics).
    Returns (predicted profiles of test compounds, measured profiles), both (n_test, 7).
    """
    from sklearn.linear_model import Ridge

    x_train, y_train, x_test, y_test = _baseline_data(store, train_keys, test_keys, "morgan_ridge")
    pred = Ridge(alpha=alpha).fit(x_train, y_train).predict(x_test)
    return pred.astype(np.float32), y_test.astype(np.float32)


def morgan_cca_embeddings(
    store: Store, train_keys: Sequence[str], test_keys: Sequence[str], *, n_components: int = 4, pca_dim: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: canonical correlation analysis between Morgan fingerprints (reduced to
    ``pca_dim`` principal components fitted on training compounds) and per-compound image
    profiles. Both test sets are projected into the ``n_components``-dimensional CCA space.

    Returns
    -------
    (fingerprint side (n_test, k), profile side (n_test, k)) float32, k = min(n_components, ...).
    """
    from sklearn.cross_decomposition import CCA
    from sklearn.decomposition import PCA

    x_train, y_train, x_test, y_test = _baseline_data(store, train_keys, test_keys, "morgan_cca")
    d = max(1, min(pca_dim, x_train.shape[0] - 1, x_train.shape[1]))
    pca = PCA(n_components=d, random_state=0).fit(x_train)
    k = max(1, min(n_components, d, y_train.shape[1], x_train.shape[0] - 1))
    cca = CCA(n_components=k, max_iter=1000).fit(pca.transform(x_train), y_train)
    xc, yc = cca.transform(pca.transform(x_test), y_test)
    return np.asarray(xc, np.float32), np.asarray(yc, np.float32)


def _chance_report(n_candidates: dict[str, int]) -> dict:
    return {p: {d: chance(n, protocol=p) for d in DIRECTIONS} for p, n in n_candidates.items()}


def validate_metrics(result: dict[str, Any]) -> None:
    """Check a metrics dictionary against ``schemas/reports/metrics.json``.

    Raises
    ------
    ValueError
        Naming the first offending key path and value.
    """
    from cmcl_model.report import validate_json, metrics_schema

    validate_json(json.loads(json.dumps(result)), metrics_schema())


def evaluate(
    store_root: str | os.PathLike,
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
) -> dict[str, Any]:
    """Evaluate run ``run_dir`` on the test split of the store and write its report.

    Returns the ``metrics.json`` dictionary (see module docstring), validated against its
    declaration. Also writes ``reports/<run>/report.html`` (:func:`cmcl_model.report.write_report`)
    unless ``report=False``. ``device``: 'auto', 'cpu' or 'cuda'; ``crops_per_well``: crops
    averaged per well (fixed seed, no augmentation); ``probe_dataset``: labelled set of the
    downstream probe (:func:`cmcl_model.probe.probe`), None to skip it; ``ground_truth``: the
    plates' per-well phenotypes, if known (:func:`cmcl_model.report.write_report`).

    Raises
    ------
    ValueError
        If the store has no split table or fewer than 2 test compounds with images.
    """
    store = Store(Path(store_root))
    run_dir = Path(run_dir)
    if not store.table_path("split").exists():
        raise ValueError(f"store {store.root} has no tables/split.parquet; train first")
    split = store.read("split")
    ckpt = load_checkpoint(run_dir, which)  # type: ignore[arg-type]
    config = TrainConfig.from_dict(ckpt["config"])
    norm = {p: PlateNorm.from_dict(d) for p, d in ckpt["normalization"].items()}
    test_keys = split.loc[split["Split"] == "test", "Metadata_InChIKey"].tolist()
    train_keys = split.loc[split["Split"] == "train", "Metadata_InChIKey"].tolist()
    ds = PairDataset(store.root, keys=test_keys, normalization=norm, log1p=config.log1p, seed=config.seed,
                     source=config.image_source)
    if len(ds) < 2:
        raise ValueError(f"only {len(ds)} test compound(s) with images in {store.root}; need at least 2")

    dev = resolve_device(device)  # type: ignore[arg-type]
    model = build_model(config)
    model.load_state_dict(ckpt["model"])
    emb = embed_test_set(model.to(dev), ds, crops_per_well=crops_per_well)
    model_r, n_cand = retrieval_report(emb.graph, emb.image, seeds=seeds)
    crop_r, crop_chance, crop_n = crop_level(emb.graph, emb.crops, emb.crop_groups, seeds=seeds)

    torch.manual_seed(config.seed)  # same initialisation as the run's model before training
    untrained = build_model(config)
    gu, iu = compound_embeddings(untrained.to(dev), ds, crops_per_well=crops_per_well)
    untrained_r, _ = retrieval_report(gu, iu, seeds=seeds)

    pm, im = morgan_ridge_embeddings(store, train_keys, ds.keys)
    ridge_r, _ = retrieval_report(pm, im, seeds=seeds)
    pc, ic = morgan_cca_embeddings(store, train_keys, ds.keys)
    cca_r, _ = retrieval_report(pc, ic, seeds=seeds)

    counts = split["Split"].value_counts()
    result: dict[str, Any] = {
        "model": model_r,
        "crop_level": crop_r,
        "baselines": {"untrained": untrained_r, "morgan_ridge": ridge_r, "morgan_cca": cca_r},
        "chance": _chance_report(n_cand),
        "crop_level_chance": crop_chance,
        "split": {s: int(counts.get(s, 0)) for s in ("train", "val", "test")} | {"test_evaluated": len(ds)},
        "n_candidates": n_cand,
        "crop_level_n": crop_n,
        "seeds": [int(s) for s in seeds],
        "checkpoint": which,
        "run": run_dir.name,
        "ties": "pessimistic (rank = 1 + #candidates scoring >= the positive)",
    }
    if probe_dataset is not None:
        from cmcl_model.probe import probe

        result["probe"] = probe(
            store.root, run_dir, dataset=probe_dataset, folds=probe_folds, which=which, max_molecules=probe_max_molecules
        )
    validate_metrics(result)
    out_dir = store.report_dir(run_dir.name)
    _atomic_write_text(json.dumps(result, indent=2), out_dir / "metrics.json")
    if report:
        from cmcl_model.report import write_report

        write_report(store, run_dir, result, dataset=ds, embeddings=emb, ground_truth=ground_truth)
    return result
