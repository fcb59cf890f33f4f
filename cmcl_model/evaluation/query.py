"""Zero-shot queries against a trained run: a molecule finds wells, a well finds molecules.

A well's embedding is the run's image embedding of its crops (the projection of the mean
encoder feature of up to ``crops_per_well`` crops, un-augmented, fixed seed), for every well
with cells in the store (treatments and controls). Well embeddings are cached in
``reports/<run>/well_embeddings.npz`` and recomputed when the checkpoint, the cells tables or
``crops_per_well`` change. Scores are cosine similarities in the shared space.
"""

from __future__ import annotations

import hashlib
import html
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cmcl_model.evaluation.run import _encode_wells
from cmcl_model.data.crops import ChunkedCropReader, PlateNorm, compute_normalization
from cmcl_model.data.pairs import current_well_compounds
from cmcl_model.nn.model import CMCLModel
from cmcl_model.evaluation.probing import molecule_embeddings, smiles_to_data
from cmcl_model.train.build import build_model
from cmcl_model.train.checkpoints import load_checkpoint
from cmcl_model.train.config import TrainConfig
from cmcl_model.train.layout import checkpoint_path
from pipeline.store.paths import Store

__all__ = ["well_table", "well_embeddings", "embed_wells", "query_smiles", "query_well"]

_WELL_COLUMNS = ["Metadata_Plate", "Metadata_Well", "Metadata_CompoundID", "Metadata_InChIKey", "Metadata_ControlType", "N_Cells"]


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
    return out[_WELL_COLUMNS].sort_values(["Metadata_Plate", "Metadata_Well"], ignore_index=True)


def _load(run_dir: Path, which: str) -> tuple[CMCLModel, TrainConfig, dict[str, PlateNorm], dict[str, Any]]:
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


def _well_rows(store: Store) -> dict[tuple[str, str], np.ndarray]:
    cells = store.read("cells", ["Metadata_Plate", "Metadata_Well", "Metadata_CropIndex"])
    return {k: g["Metadata_CropIndex"].to_numpy(np.int64) for k, g in cells.groupby(["Metadata_Plate", "Metadata_Well"])}


def well_embeddings(
    store_root: str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    which: str = "best",
    crops_per_well: int = 16,
    refresh: bool = False,
) -> tuple[pd.DataFrame, np.ndarray]:
    """(wells, embeddings): :func:`well_table` and (n_wells, proj_dim) float32 image embeddings
    of run ``run_dir``; read from ``reports/<run>/well_embeddings.npz`` when its fingerprint
    matches, else computed and cached."""
    store = Store(Path(store_root))
    run_dir = Path(run_dir)
    cache = store.path("well_embeddings", run=run_dir.name)
    fp = _fingerprint(store, run_dir, which, crops_per_well)
    if cache.exists() and not refresh:
        with np.load(cache, allow_pickle=False) as z:
            if str(z["fingerprint"]) == fp:
                wells = pd.DataFrame({c: z[c] for c in _WELL_COLUMNS})
                wells["N_Cells"] = wells["N_Cells"].astype(np.int64)
                return wells, z["embeddings"].astype(np.float32)
    wells = well_table(store)
    model, config, norm, _ = _load(run_dir, which)
    emb = embed_wells(model, store, wells, norm, log1p=config.log1p, proj_dim=config.proj_dim,
                      crops_per_well=crops_per_well)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, embeddings=emb, fingerprint=np.array(fp), **{c: wells[c].to_numpy().astype(str if c != "N_Cells" else np.int64) for c in _WELL_COLUMNS})
    os.replace(tmp, cache)
    return wells, emb


def embed_wells(model: CMCLModel, store: Store, wells: pd.DataFrame, norm: dict[str, PlateNorm], *, log1p: bool,
                proj_dim: int, crops_per_well: int = 16) -> np.ndarray:
    """(n_wells, proj_dim) float32 projected image embeddings of ``wells`` (rows of
    :func:`well_table`): the mean encoder feature of up to ``crops_per_well`` crops per well
    (fixed seed), projected. Plates absent from ``norm`` are normalized by their own DMSO wells."""
    norm = dict(norm)
    rows = _well_rows(store)
    pm = store.read("platemap")
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
            feats = _encode_wells(model, xs, torch.device("cpu"))
            emb[group.index.to_numpy()] = model.project_images(torch.stack([f.mean(0) for f in feats])).numpy()
    return emb


def _cosine(q: np.ndarray, m: np.ndarray) -> np.ndarray:
    q = q / max(np.linalg.norm(q), 1e-12)
    return (m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)) @ q


def _slug(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _page(title: str, body: str) -> str:
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{body}</body></html>"


def query_smiles(
    store_root: str | os.PathLike,
    run_dir: str | os.PathLike,
    smiles: str,
    *,
    top: int = 10,
    which: str = "best",
    out_dir: str | os.PathLike | None = None,
    crops_per_row: int = 6,
) -> pd.DataFrame:
    """Rank every well of the store by similarity to molecule ``smiles``.

    The SMILES is standardized (:func:`pipeline.chem.standardize.standardize_smiles`), graphed
    (:func:`pipeline.chem.graphs.smiles_to_graph`) and embedded by the run's graph encoder.

    Returns
    -------
    DataFrame
        ``top`` rows, best first: ``Rank`` (1-based), ``Metadata_Plate``, ``Metadata_Well``,
        ``Metadata_CompoundID``, ``Metadata_InChIKey``, ``Metadata_ControlType``, ``N_Cells``,
        ``Score`` (cosine, in [-1, 1]). ``df.attrs``: ``query_smiles`` (standardized),
        ``out_dir`` (folder with ``index.html``, ``wells.png`` (RGB composites: AGP red, ER
        green, DNA blue; one row per well) and ``results.csv``).

    Raises
    ------
    ValueError
        If ``smiles`` cannot be standardized or graphed (the message quotes it and the
        reason), or ``top`` < 1.
    """
    from cmcl_model.reports.evaluation import crop_grid_png
    from pipeline.chem.standardize import standardize_smiles

    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if TrainConfig.from_dict(load_checkpoint(Path(run_dir), which)["config"]).image_source == "profiles":  # type: ignore[arg-type]
        from cmcl_model.evaluation.profile_query import query_smiles_profiles  # nearest compounds' profiles, not wells

        return query_smiles_profiles(store_root, run_dir, smiles, top=top, which=which, out_dir=out_dir)
    std = standardize_smiles(smiles)
    if std.status != "ok":
        raise ValueError(f"cannot use SMILES {smiles!r}: {std.error}")
    graph = smiles_to_data(std.smiles)  # GraphError is a ValueError
    store = Store(Path(store_root))
    run_dir = Path(run_dir)
    wells, emb = well_embeddings(store.root, run_dir, which=which)
    model, *_ = _load(run_dir, which)
    q = molecule_embeddings(model, [graph], projected=True)[0]
    score = _cosine(q, emb)
    order = np.argsort(-score, kind="stable")[:top]
    out = wells.iloc[order].reset_index(drop=True)
    out.insert(0, "Rank", np.arange(1, len(out) + 1))
    out["Score"] = score[order].astype(np.float64)

    folder = Path(out_dir) if out_dir is not None else store.path("queries", run=run_dir.name, query=f"smiles-{_slug(std.smiles)}")
    folder.mkdir(parents=True, exist_ok=True)
    out.to_csv(folder / "results.csv", index=False)
    labels = [f"#{r} {p}:{w} {c} ({s:.2f})" for r, p, w, c, s in zip(out["Rank"], out["Metadata_Plate"], out["Metadata_Well"], out["Metadata_CompoundID"], out["Score"])]
    rows = _well_rows(store)
    crops = [_raw_crops(store, p, rows[(p, w)], crops_per_row) for p, w in zip(out["Metadata_Plate"], out["Metadata_Well"])]
    (folder / "wells.png").write_bytes(crop_grid_png(crops, labels))
    body = (
        f"<h1>Wells most similar to {html.escape(std.smiles)}</h1><p>input {html.escape(smiles)}; run {html.escape(run_dir.name)}</p>"
        + out.to_html(index=False, float_format=lambda v: f"{v:.3f}")
        + "<h2>Crops (AGP red, ER green, DNA blue)</h2><img alt='top wells' src='wells.png'>"
    )
    (folder / "index.html").write_text(_page(f"query {std.smiles}", body))
    out.attrs.update({"query_smiles": std.smiles, "out_dir": str(folder)})
    return out


def _raw_crops(store: Store, plate: str, rows: np.ndarray, k: int) -> np.ndarray:
    sel = rows if rows.size <= k else np.sort(np.random.default_rng(0).choice(rows, size=k, replace=False))
    return ChunkedCropReader(store.crops_zarr(plate)).read(sel)


def query_well(
    store_root: str | os.PathLike,
    run_dir: str | os.PathLike,
    plate: str,
    well: str,
    *,
    top: int = 10,
    which: str = "best",
    out_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Rank the store's compounds (every row of the ``graphs`` table) by similarity to well
    ``plate``/``well``.

    Returns
    -------
    DataFrame
        ``top`` rows, best first: ``Rank``, ``Metadata_InChIKey``, ``Metadata_SMILES``,
        ``Metadata_CompoundIDs`` (';'-joined), ``Score`` (cosine), ``InWell`` (True for the
        compound actually in the well). ``df.attrs``: ``out_dir`` (folder with ``index.html``,
        ``structures.png`` drawn by RDKit ``Draw.MolsToGridImage``, ``well.png`` and
        ``results.csv``), ``well_compound`` (the well's InChIKey, '' for controls).

    Raises
    ------
    ValueError
        If the store has no such well with cells (the message names a few that exist), or
        ``top`` < 1.
    """
    from rdkit import Chem
    from rdkit.Chem import Draw

    from cmcl_model.data.pairs import graphs_from_arrow
    from cmcl_model.reports.evaluation import crop_grid_png

    import pyarrow.parquet as pq

    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    store = Store(Path(store_root))
    run_dir = Path(run_dir)
    if TrainConfig.from_dict(load_checkpoint(run_dir, which)["config"]).image_source == "profiles":  # type: ignore[arg-type]
        raise ValueError(f"run {run_dir.name} is a profile-mode run: query it with --smiles (its nearest compounds' profiles)")
    wells, emb = well_embeddings(store.root, run_dir, which=which)
    hit = np.flatnonzero((wells["Metadata_Plate"] == plate).to_numpy() & (wells["Metadata_Well"] == well).to_numpy())
    if hit.size == 0:
        known = ", ".join(f"{p}:{w}" for p, w in wells[["Metadata_Plate", "Metadata_Well"]].head(5).itertuples(index=False))
        raise ValueError(f"no well {plate}:{well} with cells in store {store.root}; wells look like {known}, ...")
    w_row = wells.iloc[int(hit[0])]
    graphs = graphs_from_arrow(pq.read_table(store.table_path("graphs")))
    keys = sorted(graphs)
    model, *_ = _load(run_dir, which)
    g = molecule_embeddings(model, [graphs[k] for k in keys], projected=True)
    score = _cosine(emb[int(hit[0])], g)
    order = np.argsort(-score, kind="stable")[:top]
    comp = store.read("compounds").set_index("Metadata_InChIKey")
    out = pd.DataFrame({
        "Rank": np.arange(1, len(order) + 1),
        "Metadata_InChIKey": [keys[i] for i in order],
        "Metadata_SMILES": [comp.at[keys[i], "Metadata_SMILES"] for i in order],
        "Metadata_CompoundIDs": [";".join(map(str, comp.at[keys[i], "Metadata_CompoundIDs"])) for i in order],
        "Score": score[order].astype(np.float64),
    })
    out["InWell"] = out["Metadata_InChIKey"] == w_row["Metadata_InChIKey"]

    folder = Path(out_dir) if out_dir is not None else store.path("queries", run=run_dir.name, query=f"well-{plate}-{well}")
    folder.mkdir(parents=True, exist_ok=True)
    out.to_csv(folder / "results.csv", index=False)
    mols = [Chem.MolFromSmiles(s) for s in out["Metadata_SMILES"]]
    legends = [f"#{r} {c.split(';')[0]} {s:.2f}{' *' if t else ''}" for r, c, s, t in zip(out["Rank"], out["Metadata_CompoundIDs"], out["Score"], out["InWell"])]
    img = Draw.MolsToGridImage(mols, molsPerRow=5, subImgSize=(220, 180), legends=legends)
    img.save(folder / "structures.png")
    rows = _well_rows(store)
    (folder / "well.png").write_bytes(crop_grid_png([_raw_crops(store, plate, rows[(plate, well)], 8)], [f"{plate}:{well} {w_row['Metadata_CompoundID']}"]))
    body = (
        f"<h1>Compounds most similar to well {html.escape(plate)}:{html.escape(well)}</h1>"
        f"<p>well holds {html.escape(w_row['Metadata_CompoundID'] or '?')} ({html.escape(w_row['Metadata_ControlType'])}); "
        f"run {html.escape(run_dir.name)}; * marks the compound in the well</p>"
        "<img alt='well crops' src='well.png'>" + out.to_html(index=False, float_format=lambda v: f"{v:.3f}")
        + "<img alt='structures' src='structures.png'>"
    )
    (folder / "index.html").write_text(_page(f"query {plate}:{well}", body))
    out.attrs.update({"out_dir": str(folder), "well_compound": w_row["Metadata_InChIKey"]})
    return out
