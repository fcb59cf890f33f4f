"""Phenotypic activity and MOA consistency of a store's compounds, for the evaluation report.

:func:`activity_comparison` scores each compound's replicate wells against its plates' DMSO
wells (copairs mAP, :func:`pipeline.profiles.wells.phenotypic_activity`) under several
representations side by side: the store's CellProfiler profiles, a run's well embeddings, an
untrained encoder's. :func:`consistency_summary` summarises the MOA consistency table written
by ``cmcl profile``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cmcl_model.evaluation.baselines import cellprofiler_well_profiles
from pipeline.features import feature_columns
from pipeline.profiles import mark_negcon, phenotypic_activity, store_negcon
from pipeline.store.paths import Store

__all__ = ["activity_comparison", "consistency_summary"]


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
        encoder's well embeddings, :func:`cmcl_model.evaluation.embeddings.embed_wells`). The
        CellProfiler profiles (:func:`cmcl_model.evaluation.baselines.cellprofiler_well_profiles`)
        are added as ``'cellprofiler'`` when present.
    ground_truth : DataFrame, optional
        The generator's per-well table (``Metadata_CompoundID``, ``active``): a compound is
        truly active when its wells are; adds precision and recall of the activity calls.

    Returns
    -------
    dict
        name -> ``n_compounds``, ``n_retrieved``, ``fraction_retrieved`` (corrected p < 0.05),
        ``mean_map`` and, with ground truth, ``n_truly_active``, ``precision``, ``recall``.
    """
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
        meta = _negcon_as_profiled(wells, cp, store)
        meta["Metadata_CompoundID"] = meta["Metadata_CompoundID"].replace("", None)
        act = phenotypic_activity(meta, x, null_size=null_size)
        out[name] = _activity_summary(act, truth)
        if act.attrs.get("plates_without_negcon"):
            out[name]["plates_not_scored"] = list(act.attrs["plates_without_negcon"])
    return out


def _negcon_as_profiled(wells: pd.DataFrame, profiles: pd.DataFrame | None, store: Store) -> pd.DataFrame:
    """Plate, compound and control type of ``wells``, the control type as ``cmcl profile`` set it
    where the well has a profile, else by the store's labels
    (:func:`pipeline.profiles.controls.store_negcon`). Profile tables are marked already: marking
    them again by labels that do not name ``negcon`` would undo it."""
    meta = mark_negcon(wells[["Metadata_Plate", "Metadata_Well", "Metadata_CompoundID", "Metadata_ControlType"]]
                       if "Metadata_Well" in wells.columns else
                       wells[["Metadata_Plate", "Metadata_CompoundID", "Metadata_ControlType"]], store_negcon(store))
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
