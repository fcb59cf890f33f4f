"""Evaluate a training run on the test split: retrieval metrics, baselines, chance, report.

Writes ``reports/<run>/metrics.json`` with the layout::

    {"model": R, "baselines": {"untrained": R, "morgan_ridge": R}, "chance": R,
     "split": {"train": n, "val": n, "test": n, "test_evaluated": n},
     "n_candidates": {"hit101": n, "fullpool": n}, ...}

where ``R[protocol][direction][metric]``; protocol ``hit101`` (metrics hit@1/3/5/10, mrr,
mean_rank) or ``fullpool`` (recall@1/5/10, mrr, mean_rank); direction ``graph_to_image`` or
``image_to_graph``. Values are fractions, except ``mean_rank`` (a rank, 1 = best).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Batch

from cmcl_model.data import PairDataset, PlateNorm
from cmcl_model.metrics import DIRECTIONS, chance, fullpool, hit101
from cmcl_model.model import CMCLModel
from cmcl_model.train import TrainConfig, _atomic_write_text, build_model, load_checkpoint, resolve_device
from pipeline.store import CHANNELS, Store

__all__ = ["evaluate", "compound_embeddings", "retrieval_report", "morgan_ridge_embeddings"]


@torch.no_grad()
def compound_embeddings(
    model: CMCLModel, dataset: PairDataset, *, crops_per_well: int = 16, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Graph and image embeddings of every compound of ``dataset``.

    The image embedding of a compound is the projection of the mean over its wells of the
    mean encoder feature of up to ``crops_per_well`` crops per well.

    Returns
    -------
    (graph (N, proj_dim), image (N, proj_dim)) float32 arrays, rows in ``dataset.keys`` order.
    """
    model.eval()
    device = next(model.parameters()).device
    graphs = []
    for a in range(0, len(dataset), batch_size):
        batch = Batch.from_data_list(dataset.graphs[a : a + batch_size]).to(device)
        graphs.append(model.embed_graphs(batch).float().cpu())
    feats = []
    for idx in range(len(dataset)):
        wells = dataset.well_crops(idx, max_per_well=crops_per_well)
        per_well = [model.encode_crops(w.to(device)).mean(0) for w in wells]
        feats.append(torch.stack(per_well).mean(0))
    images = [model.project_images(torch.stack(feats[a : a + batch_size])).float().cpu() for a in range(0, len(feats), batch_size)]
    return torch.cat(graphs).numpy(), torch.cat(images).numpy()


def retrieval_report(graph: np.ndarray, image: np.ndarray, *, seeds: Sequence[int] = (0, 1, 2, 3, 4)) -> tuple[dict, dict]:
    """(R, n_candidates) for both protocols."""
    h, n_h = hit101(graph, image, seeds=seeds)
    f, n_f = fullpool(graph, image)
    return {"hit101": h, "fullpool": f}, {"hit101": n_h, "fullpool": n_f}


def _morgan(smiles: Sequence[str], *, radius: int = 2, n_bits: int = 2048) -> np.ndarray:
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    out = np.zeros((len(smiles), n_bits), dtype=np.float32)
    for r, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        if mol is None:
            raise ValueError(f"RDKit cannot parse SMILES {s!r}")
        DataStructs.ConvertToNumpyArray(gen.GetFingerprint(mol), out[r])
    return out


_PROFILE = [f"Intensity_Mean_{c}" for c in CHANNELS] + ["AreaShape_NucleusArea", "AreaShape_CellArea"]


def morgan_ridge_embeddings(
    store: Store, train_keys: Sequence[str], test_keys: Sequence[str], *, alpha: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: Morgan fingerprints (r=2, 2048 bits) -> ridge regression -> per-compound
    image profile (mean over cells of 5 channel intensities and 2 areas, standardised with
    training statistics). Returns (predicted profiles of test compounds, measured profiles).
    """
    from sklearn.linear_model import Ridge

    from cmcl_model.data import treatment_crops

    trt, _ = treatment_crops(store)
    cells = store.read("cells")[["Metadata_Plate", "Metadata_CropIndex", *_PROFILE]]
    prof = trt.merge(cells, on=["Metadata_Plate", "Metadata_CropIndex"]).groupby("Metadata_InChIKey")[_PROFILE].mean()
    train_keys = [k for k in train_keys if k in prof.index]  # training compounds with images
    if len(train_keys) < 2:
        raise ValueError(f"morgan_ridge needs at least 2 training compounds with images, got {len(train_keys)}")
    smiles = store.read("compounds").set_index("Metadata_InChIKey")["Metadata_SMILES"]
    y_train = prof.loc[list(train_keys)].to_numpy(np.float64)
    mu, sd = y_train.mean(0), y_train.std(0) + 1e-9
    ridge = Ridge(alpha=alpha).fit(_morgan(smiles.loc[list(train_keys)].tolist()), (y_train - mu) / sd)
    pred = ridge.predict(_morgan(smiles.loc[list(test_keys)].tolist()))
    meas = (prof.loc[list(test_keys)].to_numpy(np.float64) - mu) / sd
    return pred.astype(np.float32), meas.astype(np.float32)


def _chance_report(n_candidates: dict[str, int]) -> dict:
    return {p: {d: chance(n, protocol=p) for d in DIRECTIONS} for p, n in n_candidates.items()}


def evaluate(
    store_root: str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    which: str = "best",
    crops_per_well: int = 16,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate run ``run_dir`` on the test split of the store and write its report.

    Returns the ``metrics.json`` dictionary (see module docstring). Also writes
    ``reports/<run>/report.html`` (tables and training curve). ``device``: 'auto', 'cpu' or
    'cuda'; ``crops_per_well``: crops averaged per well (fixed seed, no augmentation).

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
    ds = PairDataset(store.root, keys=test_keys, normalization=norm, log1p=config.log1p, seed=config.seed)
    if len(ds) < 2:
        raise ValueError(f"only {len(ds)} test compound(s) with images in {store.root}; need at least 2")

    dev = resolve_device(device)  # type: ignore[arg-type]
    model = build_model(config)
    model.load_state_dict(ckpt["model"])
    g, i = compound_embeddings(model.to(dev), ds, crops_per_well=crops_per_well)
    model_r, n_cand = retrieval_report(g, i, seeds=seeds)

    torch.manual_seed(config.seed)  # same initialisation as the run's model before training
    untrained = build_model(config)
    gu, iu = compound_embeddings(untrained.to(dev), ds, crops_per_well=crops_per_well)
    untrained_r, _ = retrieval_report(gu, iu, seeds=seeds)

    with_images = set(ds.keys)
    pm, im = morgan_ridge_embeddings(store, train_keys, ds.keys)
    ridge_r, _ = retrieval_report(pm, im, seeds=seeds)

    counts = split["Split"].value_counts()
    result = {
        "model": model_r,
        "baselines": {"untrained": untrained_r, "morgan_ridge": ridge_r},
        "chance": _chance_report(n_cand),
        "split": {s: int(counts.get(s, 0)) for s in ("train", "val", "test")} | {"test_evaluated": len(with_images)},
        "n_candidates": n_cand,
        "seeds": list(seeds),
        "checkpoint": which,
        "run": run_dir.name,
        "ties": "pessimistic (rank = 1 + #candidates scoring >= the positive)",
    }
    out_dir = store.report_dir(run_dir.name)
    _atomic_write_text(json.dumps(result, indent=2), out_dir / "metrics.json")
    _atomic_write_text(_html(result, run_dir), out_dir / "report.html")
    return result


def _curve_png(run_dir: Path) -> str | None:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(df["epoch"], df["train_loss"], label="train")
    if "val_loss" in df:
        ax[0].plot(df["epoch"], df["val_loss"], label="val")
    ax[0].set_xlabel("epoch"), ax[0].set_ylabel("loss"), ax[0].legend()
    if "val_hit@10" in df:
        ax[1].plot(df["epoch"], df["val_hit@10"], label="val hit@10")
        ax[1].plot(df["epoch"], df["val_mrr"], label="val mrr")
        ax[1].set_xlabel("epoch"), ax[1].legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _html(result: dict, run_dir: Path) -> str:
    rows = [("model", result["model"])] + list(result["baselines"].items()) + [("chance", result["chance"])]
    parts = [f"<h1>cmcl run {html.escape(run_dir.name)}</h1>", f"<p>split: {html.escape(json.dumps(result['split']))}; "
             f"candidates: {html.escape(json.dumps(result['n_candidates']))}; ties counted pessimistically</p>"]
    for proto in ("hit101", "fullpool"):
        for d in DIRECTIONS:
            metrics = list(result["model"][proto][d])
            head = "".join(f"<th>{m}</th>" for m in metrics)
            body = ""
            for name, r in rows:
                cells = "".join(
                    f"<td>{r[proto][d][m]:.2f}</td>" if m == "mean_rank" else f"<td>{100 * r[proto][d][m]:.1f}%</td>"
                    for m in metrics
                )
                body += f"<tr><td>{html.escape(name)}</td>{cells}</tr>"
            parts.append(f"<h2>{proto} &middot; {d} (n={result['n_candidates'][proto]})</h2><table><tr><th></th>{head}</tr>{body}</table>")
    png = _curve_png(run_dir)
    if png:
        parts.append(f'<h2>training</h2><img alt="training curves" src="data:image/png;base64,{png}">')
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>cmcl {html.escape(run_dir.name)}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
