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
mean encoder feature of its crops, averaged over wells); ``crop_level`` ranks single crops
(:func:`cmcl_model.evaluation.metrics.crop_level`). The report (``report.html``) is written by
:mod:`cmcl_model.reports.evaluation`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Batch

from cmcl_model.data.crops import PlateNorm
from cmcl_model.data.pairs import PairDataset
from cmcl_model.evaluation.metrics import DIRECTIONS, chance, crop_level, fullpool, hit101
from cmcl_model.nn.model import CMCLModel
from cmcl_model.train.build import build_model, resolve_device
from cmcl_model.train.checkpoints import load_checkpoint
from cmcl_model.train.config import TrainConfig
from pipeline.store.atomic import write_text_atomic
from pipeline.store.paths import CHANNELS, Store

__all__ = [
    "EVALUATE_STEPS",
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

#: Steps :func:`evaluate` reports to its ``progress`` callback (model retrieval, untrained
#: encoders, baselines, phenotypic activity, probe, report).
EVALUATE_STEPS = 6


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
    from pipeline.chem.graphs import morgan_fingerprints

    return morgan_fingerprints(list(smiles), radius=radius, n_bits=n_bits).astype(np.float32)


_PROFILE = [f"Intensity_Mean_{c}" for c in CHANNELS] + ["AreaShape_NucleusArea", "AreaShape_CellArea"]


def compound_profiles(store: Store) -> pd.DataFrame:
    """Per-compound image profile: mean over its treatment cells of 5 channel intensities and
    2 areas (CellProfiler-style features of the ``cells`` table), indexed by InChIKey."""
    from cmcl_model.data.pairs import treatment_crops

    trt, _ = treatment_crops(store)
    cells = store.read("cells", ["Metadata_Plate", "Metadata_CropIndex", *_PROFILE])
    return trt.merge(cells, on=["Metadata_Plate", "Metadata_CropIndex"]).groupby("Metadata_InChIKey")[_PROFILE].mean()


def cellprofiler_compound_profiles(store: Store) -> pd.DataFrame | None:
    """Per-compound mean of the store's feature-selected CellProfiler well profiles (treatment
    wells, features without NaN), indexed by InChIKey; None without ``cmcl profile`` output."""
    from pipeline.features.measure import feature_columns

    wells = cellprofiler_well_profiles(store)
    if wells is None:
        return None
    trt = wells[(wells["Metadata_ControlType"] == "trt") & wells["Metadata_InChIKey"].notna()]
    feats = [c for c in feature_columns(trt.columns) if trt[c].notna().all()]
    return trt.groupby("Metadata_InChIKey")[feats].mean() if len(trt) and feats else None


def _baseline_data(store: Store, train_keys: Sequence[str], test_keys: Sequence[str], name: str,
                   profiles: pd.DataFrame | None = None):
    prof = compound_profiles(store) if profiles is None else profiles
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
    store: Store, train_keys: Sequence[str], test_keys: Sequence[str], *, n_components: int = 4, pca_dim: int = 32,
    profiles: pd.DataFrame | None = None, profile_pca_dim: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: canonical correlation analysis between Morgan fingerprints (reduced to
    ``pca_dim`` principal components fitted on training compounds) and per-compound image
    profiles (:func:`compound_profiles`, or ``profiles`` indexed by InChIKey, e.g.
    :func:`cellprofiler_compound_profiles`, reduced to ``profile_pca_dim`` components when
    given). Both test sets are projected into the ``n_components``-dimensional CCA space.

    Returns
    -------
    (fingerprint side (n_test, k), profile side (n_test, k)) float32, k = min(n_components, ...).
    """
    from sklearn.cross_decomposition import CCA
    from sklearn.decomposition import PCA

    x_train, y_train, x_test, y_test = _baseline_data(store, train_keys, test_keys, "morgan_cca", profiles)
    if profile_pca_dim is not None:
        dy = max(1, min(profile_pca_dim, y_train.shape[0] - 1, y_train.shape[1]))
        ypca = PCA(n_components=dy, random_state=0).fit(y_train)
        y_train, y_test = ypca.transform(y_train), ypca.transform(y_test)
    d = max(1, min(pca_dim, x_train.shape[0] - 1, x_train.shape[1]))
    pca = PCA(n_components=d, random_state=0).fit(x_train)
    k = max(1, min(n_components, d, y_train.shape[1], x_train.shape[0] - 1))
    cca = CCA(n_components=k, max_iter=1000).fit(pca.transform(x_train), y_train)
    xc, yc = cca.transform(pca.transform(x_test), y_test)
    return np.asarray(xc, np.float32), np.asarray(yc, np.float32)


def cellprofiler_well_profiles(store: Store) -> pd.DataFrame | None:
    """The store's own feature-selected CellProfiler well profiles (``profiles_selected``,
    source ``'cmcl'``, written by ``cmcl profile``), or None when there are none."""
    if not store.table_path("profiles_selected").is_file():
        return None
    prof = store.read("profiles_selected")
    prof = prof[prof["Metadata_Source"] == "cmcl"].reset_index(drop=True)
    return prof if len(prof) else None


def _activity_summary(act: pd.DataFrame, truth: pd.Series | None) -> dict[str, Any]:
    out: dict[str, Any] = {"n_compounds": int(len(act)), "n_retrieved": int(act["below_corrected_p"].sum()),
                           "fraction_retrieved": float(act["below_corrected_p"].mean()) if len(act) else None,
                           "mean_map": float(act["mean_average_precision"].mean()) if len(act) else None}
    if truth is not None and len(act):
        t = act["Metadata_CompoundID"].map(truth).fillna(False).astype(bool).to_numpy()
        called = act["below_corrected_p"].to_numpy(bool)
        tp = int((t & called).sum())
        out.update(n_truly_active=int(t.sum()), precision=float(tp / called.sum()) if called.any() else None,
                   recall=float(tp / t.sum()) if t.any() else None)
    return {k: v for k, v in out.items() if v is not None}


def activity_comparison(
    store: Store,
    embeddings: dict[str, tuple[pd.DataFrame, np.ndarray]],
    *,
    ground_truth: pd.DataFrame | None = None,
    null_size: int = 10000,
) -> dict[str, Any]:
    """Phenotypic activity (copairs mAP of a compound's replicate wells against its plates' DMSO
    wells, :func:`pipeline.profiles.wells.phenotypic_activity`) of the store's compounds under several
    representations, side by side.

    Parameters
    ----------
    embeddings : dict
        name -> (wells, (n_wells, d) embeddings), wells with ``Metadata_Plate``,
        ``Metadata_CompoundID``, ``Metadata_ControlType`` (e.g. the run's and an untrained
        encoder's well embeddings, :func:`cmcl_model.evaluation.query.embed_wells`). The CellProfiler
        profiles (:func:`cellprofiler_well_profiles`) are added as ``'cellprofiler'`` when present.
    ground_truth : DataFrame, optional
        The generator's per-well table (``Metadata_CompoundID``, ``active``): a compound is
        truly active when its wells are; adds precision and recall of the activity calls.

    Returns
    -------
    dict
        name -> ``n_compounds``, ``n_retrieved``, ``fraction_retrieved`` (corrected p < 0.05),
        ``mean_map`` and, with ground truth, ``n_truly_active``, ``precision``, ``recall``.
    """
    from pipeline.features.measure import feature_columns
    from pipeline.profiles.wells import phenotypic_activity

    reps: dict[str, tuple[pd.DataFrame, np.ndarray]] = {}
    cp = cellprofiler_well_profiles(store)
    if cp is not None:
        feats = [c for c in feature_columns(cp.columns) if cp[c].notna().all()]
        reps["cellprofiler"] = (cp, cp[feats].to_numpy(np.float64))
    reps.update(embeddings)
    truth = None
    if ground_truth is not None and "active" in ground_truth.columns:
        gt = ground_truth.dropna(subset=["Metadata_CompoundID"])
        truth = gt.groupby("Metadata_CompoundID")["active"].any()
    out: dict[str, Any] = {}
    for name, (wells, x) in reps.items():
        meta = _negcon_as_profiled(wells, cp)
        meta["Metadata_CompoundID"] = meta["Metadata_CompoundID"].replace("", None)
        act = phenotypic_activity(meta, x, null_size=null_size)
        out[name] = _activity_summary(act, truth)
        if act.attrs.get("plates_without_negcon"):
            out[name]["plates_not_scored"] = list(act.attrs["plates_without_negcon"])
    return out


def _negcon_as_profiled(wells: pd.DataFrame, profiles: pd.DataFrame | None) -> pd.DataFrame:
    """Plate, compound and control type of ``wells``, the control type as ``cmcl profile`` set it
    (its ``--negcon`` labels) where the well has a profile, else by the default labels."""
    from pipeline.profiles.controls import mark_negcon

    meta = mark_negcon(wells[["Metadata_Plate", "Metadata_Well", "Metadata_CompoundID", "Metadata_ControlType"]]
                       if "Metadata_Well" in wells.columns else
                       wells[["Metadata_Plate", "Metadata_CompoundID", "Metadata_ControlType"]])
    if profiles is not None and "Metadata_Well" in meta.columns:
        key = ["Metadata_Plate", "Metadata_Well"]
        ct = meta[key].merge(profiles[key + ["Metadata_ControlType"]].drop_duplicates(key), on=key, how="left")
        meta["Metadata_ControlType"] = ct["Metadata_ControlType"].fillna(meta["Metadata_ControlType"]).to_numpy()
    return meta[["Metadata_Plate", "Metadata_CompoundID", "Metadata_ControlType"]].copy()


def consistency_summary(store: Store) -> dict[str, Any]:
    """Per profile source, the MOA consistency table written by ``cmcl profile``
    (``tables/profiles/consistency.parquet``) summarised: mechanisms scored, consistent ones
    (corrected p < 0.05, named) and the mean mAP. Empty when the store has no such rows."""
    if not store.table_path("consistency").is_file():
        return {}
    cons = store.read("consistency")
    out: dict[str, Any] = {}
    for source, t in cons.groupby("Metadata_Source", sort=True):
        hit = t["below_corrected_p"].astype(bool)
        out[str(source)] = {"n_moas": int(len(t)), "n_consistent": int(hit.sum()),
                            "fraction_consistent": float(hit.mean()),
                            "mean_map": float(t["mean_average_precision"].mean()),
                            "consistent_moas": sorted(t.loc[hit, "Metadata_MOA"].astype(str))}
    return out


def _chance_report(n_candidates: dict[str, int]) -> dict:
    return {p: {d: chance(n, protocol=p) for d in DIRECTIONS} for p, n in n_candidates.items()}


def validate_metrics(result: dict[str, Any]) -> None:
    """Check a metrics dictionary against ``schemas/reports/metrics.json``.

    Raises
    ------
    ValueError
        Naming the first offending key path and value.
    """
    from cmcl_model.reports.evaluation import validate_json, metrics_schema

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
    store = Store(Path(store_root))
    run_dir = Path(run_dir)
    if not store.table_path("split").exists():
        raise ValueError(f"store {store.root} has no tables/split.parquet; train first")
    split = store.read("split")
    ckpt = load_checkpoint(run_dir, which)  # type: ignore[arg-type]
    config = TrainConfig.from_dict(ckpt["config"])
    if config.image_source == "profiles":  # CellProfiler profiles, not crops: cmcl_model/evaluation/profiles.py
        from cmcl_model.evaluation.profiles import evaluate_profiles

        return evaluate_profiles(store.root, run_dir, seeds=seeds, which=which, device=device, report=report)
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
    emb = embed_test_set(model.to(dev), ds, crops_per_well=crops_per_well)
    model_r, n_cand = retrieval_report(emb.graph, emb.image, seeds=seeds)
    crop_r, crop_chance, crop_n = crop_level(emb.graph, emb.crops, emb.crop_groups, seeds=seeds)
    tick = progress or (lambda label: None)
    tick("model retrieval")

    torch.manual_seed(config.seed)  # same initialisation as the run's model before training
    untrained = build_model(config)
    gu, iu = compound_embeddings(untrained.to(dev), ds, crops_per_well=crops_per_well)
    untrained_r, _ = retrieval_report(gu, iu, seeds=seeds)
    tick("untrained encoders")

    pm, im = morgan_ridge_embeddings(store, train_keys, ds.keys)
    ridge_r, _ = retrieval_report(pm, im, seeds=seeds)
    pc, ic = morgan_cca_embeddings(store, train_keys, ds.keys)
    cca_r, _ = retrieval_report(pc, ic, seeds=seeds)
    baselines = {"untrained": untrained_r, "morgan_ridge": ridge_r, "morgan_cca": cca_r}
    cp_prof = cellprofiler_compound_profiles(store)
    if cp_prof is not None and all(k in cp_prof.index for k in ds.keys):
        # CellProfiler profiles <-> Morgan fingerprints, the field's representation as a baseline
        pcp, icp = morgan_cca_embeddings(store, train_keys, ds.keys, profiles=cp_prof, n_components=8,
                                         profile_pca_dim=32)
        baselines["cellprofiler_cca"], _ = retrieval_report(pcp, icp, seeds=seeds)
    tick("baselines")

    activity = None
    if cellprofiler_well_profiles(store) is not None:  # the store has CellProfiler profiles (cmcl profile)
        from cmcl_model.evaluation.query import embed_wells, well_table

        wells = well_table(store)
        activity = activity_comparison(store, {
            "model": (wells, embed_wells(model.cpu(), store, wells, norm, log1p=config.log1p, proj_dim=config.proj_dim,
                                         crops_per_well=crops_per_well)),
            "untrained": (wells, embed_wells(untrained.cpu(), store, wells, norm, log1p=config.log1p,
                                             proj_dim=config.proj_dim, crops_per_well=crops_per_well)),
        }, ground_truth=ground_truth)
    tick("phenotypic activity")

    counts = split["Split"].value_counts()
    result: dict[str, Any] = {
        "model": model_r,
        "crop_level": crop_r,
        "baselines": baselines,
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
    if activity is not None:
        result["activity"] = activity
    consistency = consistency_summary(store)
    if consistency:
        result["consistency"] = consistency
    if probe_dataset is not None:
        from cmcl_model.evaluation.probing import probe

        result["probe"] = probe(
            store.root, run_dir, dataset=probe_dataset, folds=probe_folds, which=which, max_molecules=probe_max_molecules
        )
    tick("probe")
    validate_metrics(result)
    out_dir = store.report_dir(run_dir.name)
    write_text_atomic(json.dumps(result, indent=2), out_dir / "metrics.json")
    if report:
        from cmcl_model.reports.evaluation import write_report

        write_report(store, run_dir, result, dataset=ds, embeddings=emb, ground_truth=ground_truth)
    tick("report")
    return result
