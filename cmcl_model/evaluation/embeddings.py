"""Embeddings of a trained run: molecules, test compounds, wells and profiles in the shared space.

One module for every way evaluation and queries turn a run's encoders into arrays:

- :func:`molecule_embeddings`: graphs -> encoder or shared-space embeddings;
- :func:`embed_test_set`: the compounds of a :class:`~cmcl_model.data.pairs.PairDataset` at
  compound level (mean over wells of each well's mean encoder feature, projected) and at crop
  level (:class:`TestEmbeddings`);
- :func:`embed_wells` / :func:`well_embeddings`: every well with cells in the store (treatments
  and controls), cached in ``reports/<run>/well_embeddings.npz`` and recomputed when the
  checkpoint, the cells tables or ``crops_per_well`` change;
- :func:`embed_profile_set`: the compounds of a profile-mode run's
  :class:`~cmcl_model.data.profiles.ProfileDataset`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Batch, Data

from cmcl_model.data import ChunkedCropReader, PairDataset, PlateNorm, ProfileDataset, compute_normalization, current_well_compounds
from cmcl_model.nn import CMCLModel
from cmcl_model.train import TrainConfig, build_model, checkpoint_path, load_checkpoint
from pipeline.store.paths import Store
from pipeline.profiles.controls import mark_negcon, store_negcon

__all__ = [
    "TestEmbeddings",
    "molecule_embeddings",
    "encode_wells",
    "embed_test_set",
    "compound_embeddings",
    "WELL_COLUMNS",
    "well_table",
    "well_crop_rows",
    "load_run_model",
    "well_embeddings",
    "embed_wells",
    "embed_profile_set",
    "compound_mean_profiles",
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


@torch.no_grad()
def molecule_embeddings(
    model: CMCLModel, graphs: Sequence[Data], *, projected: bool = False, batch_size: int = 256
) -> np.ndarray:
    """(N, d) float32 embeddings of ``graphs``: the graph encoder's pooled output
    (``projected=False``, d = encoder width) or the shared-space embedding (d = proj_dim)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for a in range(0, len(graphs), batch_size):
        batch = Batch.from_data_list(list(graphs[a : a + batch_size])).to(device)
        z = model.embed_graphs(batch) if projected else model.encode_graphs(batch)[1]
        out.append(z.float().cpu())
    return torch.cat(out).numpy()


def encode_wells(model: CMCLModel, wells: list[torch.Tensor], device: torch.device, *, batch_size: int = 256) -> list[torch.Tensor]:
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
    well_feats = encode_wells(model, wells, device, batch_size=batch_size)
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


# --------------------------------------------------------------------------------------------
# wells
# --------------------------------------------------------------------------------------------
#: Columns of :func:`well_table`, in order.
WELL_COLUMNS = ["Metadata_Plate", "Metadata_Well", "Metadata_CompoundID", "Metadata_InChIKey", "Metadata_ControlType", "N_Cells"]


def well_table(store: Store) -> pd.DataFrame:
    """One row per well with cells: columns ``Metadata_Plate``, ``Metadata_Well``,
    ``Metadata_CompoundID``, ``Metadata_InChIKey`` ('' for controls or unknown compounds),
    ``Metadata_ControlType``, ``N_Cells``; sorted by plate and well."""
    cells = store.read("cells", ["Metadata_Plate", "Metadata_Well"])
    n = cells.groupby(["Metadata_Plate", "Metadata_Well"]).size().rename("N_Cells").reset_index()
    pm = store.read("platemap")[["Metadata_Plate", "Metadata_Well", "Metadata_CompoundID", "Metadata_SMILES", "Metadata_ControlType"]]
    wells = current_well_compounds(store, pm)[["Metadata_Plate", "Metadata_Well", "Metadata_InChIKey"]]
    pm = pm.merge(wells, on=["Metadata_Plate", "Metadata_Well"], how="left")
    out = n.merge(pm, on=["Metadata_Plate", "Metadata_Well"], how="left")
    for col in ("Metadata_CompoundID", "Metadata_InChIKey", "Metadata_ControlType"):
        out[col] = out[col].fillna("").astype(str)
    return out[WELL_COLUMNS].sort_values(["Metadata_Plate", "Metadata_Well"], ignore_index=True)


def well_crop_rows(store: Store) -> dict[tuple[str, str], np.ndarray]:
    """(plate, well) -> (n,) int64 rows of the plate's crops array holding that well's cells."""
    cells = store.read("cells", ["Metadata_Plate", "Metadata_Well", "Metadata_CropIndex"])
    return {k: g["Metadata_CropIndex"].to_numpy(np.int64) for k, g in cells.groupby(["Metadata_Plate", "Metadata_Well"])}


def load_run_model(run_dir: Path, which: str) -> tuple[CMCLModel, TrainConfig, dict[str, PlateNorm], dict[str, Any]]:
    """(model in eval mode, its config, per-plate normalization, the raw checkpoint) of
    checkpoint ``which`` ('best' or 'last') of run ``run_dir``."""
    ckpt = load_checkpoint(run_dir, which)  # type: ignore[arg-type]
    config = TrainConfig.from_dict(ckpt["config"])
    model = build_model(config)
    model.load_state_dict(ckpt["model"])
    model.eval()
    norm = {p: PlateNorm.from_dict(d) for p, d in ckpt["normalization"].items()}
    return model, config, norm, ckpt


def _fingerprint(store: Store, run_dir: Path, which: str, crops_per_well: int) -> str:
    h = hashlib.sha256(f"{which}|{crops_per_well}".encode())
    for p in [checkpoint_path(run_dir, which), *store.table_files("cells"), *store.table_files("platemap")]:
        st = p.stat()
        h.update(f"{p.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def well_embeddings(
    store_root: Store | str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    which: str = "best",
    crops_per_well: int = 16,
    refresh: bool = False,
) -> tuple[pd.DataFrame, np.ndarray]:
    """(wells, embeddings): :func:`well_table` and (n_wells, proj_dim) float32 image embeddings
    of run ``run_dir``; read from ``reports/<run>/well_embeddings.npz`` when its fingerprint
    matches, else computed and cached."""
    store = Store.of(store_root)
    run_dir = Path(run_dir)
    cache = store.path("well_embeddings", run=run_dir.name)
    fp = _fingerprint(store, run_dir, which, crops_per_well)
    if cache.exists() and not refresh:
        with np.load(cache, allow_pickle=False) as z:
            if str(z["fingerprint"]) == fp:
                wells = pd.DataFrame({c: z[c] for c in WELL_COLUMNS})
                wells["N_Cells"] = wells["N_Cells"].astype(np.int64)
                return wells, z["embeddings"].astype(np.float32)
    wells = well_table(store)
    model, config, norm, _ = load_run_model(run_dir, which)
    emb = embed_wells(model, store, wells, norm, log1p=config.log1p, proj_dim=config.proj_dim,
                      crops_per_well=crops_per_well)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, embeddings=emb, fingerprint=np.array(fp), **{c: wells[c].to_numpy().astype(str if c != "N_Cells" else np.int64) for c in WELL_COLUMNS})
    os.replace(tmp, cache)
    return wells, emb


def embed_wells(model: CMCLModel, store: Store, wells: pd.DataFrame, norm: dict[str, PlateNorm], *, log1p: bool,
                proj_dim: int, crops_per_well: int = 16) -> np.ndarray:
    """(n_wells, proj_dim) float32 projected image embeddings of ``wells`` (rows of
    :func:`well_table`): the mean encoder feature of up to ``crops_per_well`` crops per well
    (fixed seed), projected. Plates absent from ``norm`` are normalized by their own DMSO wells."""
    norm = dict(norm)
    rows = well_crop_rows(store)
    pm = mark_negcon(store.read("platemap"), store_negcon(store))
    emb = np.zeros((len(wells), proj_dim), np.float32)
    with torch.no_grad():
        for plate, group in wells.groupby("Metadata_Plate"):
            reader = ChunkedCropReader(store.crops_zarr(plate))
            if plate not in norm:  # a plate the run never saw: its own DMSO statistics
                dmso_wells = set(pm.loc[(pm["Metadata_Plate"] == plate) & (pm["Metadata_ControlType"] == "negcon"), "Metadata_Well"])
                parts = [rows[(plate, w)] for w in group["Metadata_Well"] if w in dmso_wells]
                parts = parts or [rows[(plate, w)] for w in group["Metadata_Well"]]
                norm[plate] = compute_normalization(reader, np.concatenate(parts), log1p=log1p)
            xs = []
            for well in group["Metadata_Well"]:
                sel = rows[(plate, well)]
                if sel.size > crops_per_well:
                    sel = np.sort(np.random.default_rng(0).choice(sel, size=crops_per_well, replace=False))
                xs.append(torch.from_numpy(norm[plate].apply(reader.read(sel))))
            feats = encode_wells(model, xs, torch.device("cpu"))
            emb[group.index.to_numpy()] = model.project_images(torch.stack([f.mean(0) for f in feats])).numpy()
    return emb


# --------------------------------------------------------------------------------------------
# profiles (profile-mode runs)
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def embed_profile_set(model: CMCLModel, dataset: ProfileDataset, *, batch_size: int = 1024) -> TestEmbeddings:
    """Graph, compound-level and profile-level embeddings of every compound of ``dataset``.

    Returns
    -------
    TestEmbeddings
        ``graph``, ``image`` (M, proj_dim) in ``dataset.keys`` order; ``crops`` (N, proj_dim), one
        row per profile, and ``crop_groups`` (N,) its compound row.
    """
    model.eval()
    device = next(model.parameters()).device
    graphs = [model.embed_graphs(Batch.from_data_list(dataset.graphs[a : a + batch_size]).to(device)).float().cpu()
              for a in range(0, len(dataset.keys), batch_size)]
    rows = dataset.compound_rows
    all_rows = np.concatenate(rows)
    groups = np.concatenate([np.full(r.size, j, np.int64) for j, r in enumerate(rows)])
    feats = torch.cat([model.encode_crops(torch.from_numpy(dataset.x[all_rows[a : a + batch_size]]).to(device)).float().cpu()
                       for a in range(0, all_rows.size, batch_size)])
    per_profile = model.project_images(feats.to(device)).float().cpu()
    sums = torch.zeros(len(rows), feats.shape[1]).index_add_(0, torch.from_numpy(groups), feats)
    mean = sums / torch.from_numpy(np.bincount(groups, minlength=len(rows))).float().unsqueeze(1)
    image = model.project_images(mean.to(device)).float().cpu()
    return TestEmbeddings(torch.cat(graphs).numpy(), image.numpy(), per_profile.numpy(), groups)


def compound_mean_profiles(dataset: ProfileDataset) -> pd.DataFrame:
    """Per-compound mean of the standardized profiles (all doses), indexed by InChIKey: (M, F)."""
    x = np.stack([dataset.x[r].mean(0) for r in dataset.compound_rows])
    return pd.DataFrame(x, index=pd.Index(dataset.keys, name="Metadata_InChIKey"), columns=list(dataset.features))
