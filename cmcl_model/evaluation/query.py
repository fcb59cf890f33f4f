"""Zero-shot queries against a trained run: a molecule finds wells, a well finds molecules.

A well's embedding is the run's image embedding of its crops (the projection of the mean
encoder feature of up to ``crops_per_well`` crops, un-augmented, fixed seed), for every well
with cells in the store (treatments and controls), cached in ``reports/<run>/well_embeddings.npz``
(:func:`cmcl_model.evaluation.embeddings.well_embeddings`). Scores are cosine similarities in the
shared space. Profile-mode runs are queried by :mod:`cmcl_model.evaluation.profile_query`.
"""

from __future__ import annotations

import hashlib
import html
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cmcl_model.data import ChunkedCropReader, graphs_from_arrow
from cmcl_model.evaluation.embeddings import load_run_model, molecule_embeddings, well_crop_rows, well_embeddings
from cmcl_model.evaluation.probing import smiles_to_data
from cmcl_model.evaluation.profile_query import query_smiles_profiles
from cmcl_model.reports.figures import crop_grid_png
from cmcl_model.train import TrainConfig, load_checkpoint
from pipeline.chem import standardize_smiles
from pipeline.store.paths import Store

__all__ = ["query_smiles", "query_well"]


def _cosine(q: np.ndarray, m: np.ndarray) -> np.ndarray:
    q = q / max(np.linalg.norm(q), 1e-12)
    return (m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)) @ q


def _slug(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _page(title: str, body: str) -> str:
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{body}</body></html>"


def query_smiles(
    store_root: Store | str | os.PathLike,
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
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if TrainConfig.from_dict(load_checkpoint(Path(run_dir), which)["config"]).image_source == "profiles":  # type: ignore[arg-type]
        # nearest compounds' profiles, not wells
        return query_smiles_profiles(store_root, run_dir, smiles, top=top, which=which, out_dir=out_dir)
    std = standardize_smiles(smiles)
    if std.status != "ok":
        raise ValueError(f"cannot use SMILES {smiles!r}: {std.error}")
    graph = smiles_to_data(std.smiles)  # GraphError is a ValueError
    store = Store.of(store_root)
    run_dir = Path(run_dir)
    wells, emb = well_embeddings(store.root, run_dir, which=which)
    model, *_ = load_run_model(run_dir, which)
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
    rows = well_crop_rows(store)
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
    store_root: Store | str | os.PathLike,
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

    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    store = Store.of(store_root)
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
    model, *_ = load_run_model(run_dir, which)
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
    rows = well_crop_rows(store)
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
