"""Zero-shot query of a profile-mode run: the compounds whose profiles sit nearest a molecule.

A compound's embedding is the run's profile-side embedding of all its standardized profiles
(:func:`cmcl_model.evaluation.embeddings.embed_profile_set`); the query molecule is standardized,
graphed and embedded by the graph encoder; scores are cosine similarities in the shared space.
"""

from __future__ import annotations

import hashlib
import html
import os
from pathlib import Path

import numpy as np
import pandas as pd

from cmcl_model.data import ProfileDataset, ProfileNorm
from cmcl_model.evaluation.embeddings import compound_mean_profiles, embed_profile_set, molecule_embeddings
from cmcl_model.evaluation.probing import smiles_to_data
from cmcl_model.train import TrainConfig, build_model, load_checkpoint
from pipeline.chem import standardize_smiles
from pipeline.store.paths import Store

__all__ = ["query_smiles_profiles"]


def query_smiles_profiles(store_root: Store | str | os.PathLike, run_dir: str | os.PathLike, smiles: str, *, top: int = 10,
                          which: str = "best", out_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Rank the store's compounds with profiles by the similarity of their profiles to ``smiles``.

    Returns
    -------
    DataFrame
        ``top`` rows, best first: ``Rank``, ``Metadata_InChIKey``, ``Metadata_SMILES``,
        ``Metadata_CompoundIDs`` (';'-joined), ``N_Profiles``, ``Score`` (cosine). ``df.attrs``:
        ``query_smiles`` (standardized), ``profiles`` (a DataFrame: the top compounds' mean
        standardized profiles, (top, F), same order), ``out_dir`` (``results.csv``,
        ``profiles.csv``, ``index.html``).

    Raises
    ------
    ValueError
        If ``smiles`` cannot be standardized or graphed, ``top`` < 1, or the run is not a
        profile-mode run.
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir, which)  # type: ignore[arg-type]
    config = TrainConfig.from_dict(ckpt["config"])
    if config.image_source != "profiles":
        raise ValueError(f"run {run_dir.name} trained on {config.image_source}, not profiles")
    std = standardize_smiles(smiles)
    if std.status != "ok":
        raise ValueError(f"cannot use SMILES {smiles!r}: {std.error}")
    graph = smiles_to_data(std.smiles)
    store = Store.of(store_root)
    model = build_model(config)
    model.load_state_dict(ckpt["model"])
    model.eval()
    norm = {b: ProfileNorm.from_dict(d) for b, d in ckpt["normalization"].items()}
    ds = ProfileDataset(store, sources=config.profile_sources, normalization=norm, seed=config.seed)
    emb = embed_profile_set(model, ds)
    q = molecule_embeddings(model, [graph], projected=True)[0]
    img = emb.image / np.maximum(np.linalg.norm(emb.image, axis=1, keepdims=True), 1e-12)
    score = img @ (q / max(float(np.linalg.norm(q)), 1e-12))
    order = np.argsort(-score, kind="stable")[:top]
    comp = store.read("compounds").set_index("Metadata_InChIKey")
    keys = [ds.keys[i] for i in order]
    out = pd.DataFrame({
        "Rank": np.arange(1, len(order) + 1), "Metadata_InChIKey": keys,
        "Metadata_SMILES": [comp.at[k, "Metadata_SMILES"] for k in keys],
        "Metadata_CompoundIDs": [";".join(map(str, comp.at[k, "Metadata_CompoundIDs"])) for k in keys],
        "N_Profiles": [int(ds.compound_rows[i].size) for i in order], "Score": score[order].astype(np.float64)})
    profiles = compound_mean_profiles(ds).loc[keys]
    folder = (Path(out_dir) if out_dir is not None else
              store.path("queries", run=run_dir.name, query="smiles-" + hashlib.sha256(std.smiles.encode()).hexdigest()[:10]))
    folder.mkdir(parents=True, exist_ok=True)
    out.to_csv(folder / "results.csv", index=False)
    profiles.to_csv(folder / "profiles.csv")
    (folder / "index.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>query {html.escape(std.smiles)}</title></head><body>"
        f"<h1>Compounds whose profiles are nearest {html.escape(std.smiles)}</h1><p>run {html.escape(run_dir.name)}; "
        "their mean standardized profiles are in profiles.csv</p>" + out.to_html(index=False, float_format=lambda v: f"{v:.3f}")
        + "</body></html>")
    out.attrs.update({"query_smiles": std.smiles, "profiles": profiles, "out_dir": str(folder)})
    return out
