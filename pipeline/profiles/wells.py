"""Well profiles the field's way (pycytominer) and their phenotypic activity (copairs mAP).

DataFrame in, DataFrame out, ``Metadata_*`` columns as the schema (as in pycytominer):

1. :func:`aggregate_wells` — median of the single-cell features per plate and well;
2. :func:`annotate_wells` — the plate map (compound, SMILES, dose, control type) and the
   compound's standardized InChIKey;
3. :func:`normalize_plate` — ``mad_robustize`` against the plate's DMSO (``negcon``) wells
   (which wells those are: :mod:`pipeline.profiles.controls`); a plate without any is normalized against
   all its wells and flagged (``Metadata_NormalizedTo``);
4. :func:`select_features` — variance, correlation, NA and CellProfiler-blocklist feature
   selection over all plates of one source;
5. :func:`consensus_profiles` — median per compound and dose;
6. :func:`phenotypic_activity` — per compound, the mean average precision with which its
   replicate wells retrieve each other against the DMSO wells of the same plate (copairs),
   with permutation p-values and their Benjamini-Hochberg correction (plates without DMSO
   wells cannot be scored and are left out). Works on any profile matrix (CellProfiler
   features, learned embeddings).

Imported tables (``cmcl import-profiles``) are read by :mod:`pipeline.profiles.imports`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline.profiles.choices import AGGREGATE_OPERATIONS, DEFAULT_NEGCON, AggregateOperation
from pipeline.profiles.controls import mark_negcon, normalized_to, plates_without_negcon
from pipeline.features.measure import feature_columns

__all__ = [
    "PROFILE_METADATA",
    "SELECT_OPERATIONS",
    "aggregate_wells",
    "annotate_wells",
    "normalize_plate",
    "select_features",
    "consensus_profiles",
    "phenotypic_activity",
    "moa_consistency",
]

#: Metadata columns of a well profile, in order (schemas/tables/profiles_wells.json).
PROFILE_METADATA: tuple[str, ...] = (
    "Metadata_Plate", "Metadata_Well", "Metadata_CompoundID", "Metadata_InChIKey", "Metadata_SMILES",
    "Metadata_Concentration", "Metadata_ControlType", "Metadata_MOA", "Metadata_Source", "Metadata_Count_Cells",
    "Metadata_NormalizedTo")
#: pycytominer feature_select operations, in the order they run.
SELECT_OPERATIONS: tuple[str, ...] = ("variance_threshold", "correlation_threshold", "drop_na_columns", "blocklist")
_NEGCON = "Metadata_ControlType == 'negcon'"


def aggregate_wells(cells: pd.DataFrame, *, operation: AggregateOperation = "median") -> pd.DataFrame:
    """One profile per (plate, well): ``operation`` of every feature over the well's cells.

    Parameters
    ----------
    cells : DataFrame
        Single-cell table with ``Metadata_Plate``, ``Metadata_Well`` and feature columns
        (:func:`pipeline.features.measure.feature_columns`).
    operation : {'median', 'mean'}, default 'median'
        :data:`pipeline.profiles.choices.AggregateOperation`.

    Returns
    -------
    DataFrame
        ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Count_Cells`` (int32) and the
        aggregated features (float64), sorted by plate and well.

    Raises
    ------
    ValueError
        If ``operation`` is not one of :data:`pipeline.profiles.choices.AGGREGATE_OPERATIONS`
        (the message lists them), or the table has no feature column.
    """
    import pycytominer

    if operation not in AGGREGATE_OPERATIONS:
        raise ValueError(f"operation={operation!r}; valid: {', '.join(AGGREGATE_OPERATIONS)}")
    feats = feature_columns(cells.columns)
    if not feats:
        raise ValueError("the single-cell table has no feature columns (Cells_/Cytoplasm_/Nuclei_)")
    strata = ["Metadata_Plate", "Metadata_Well"]
    wells = pycytominer.aggregate(cells[strata + feats], strata=strata, features=feats, operation=operation)
    counts = cells.groupby(strata).size().rename("Metadata_Count_Cells").astype(np.int32).reset_index()
    wells = counts.merge(wells, on=strata, how="left", validate="one_to_one")
    return wells.sort_values(strata, ignore_index=True)


def annotate_wells(wells: pd.DataFrame, platemap: pd.DataFrame, compounds: pd.DataFrame | None = None,
                   *, source: str = "cmcl", negcon: Sequence[str] = DEFAULT_NEGCON) -> pd.DataFrame:
    """Add the plate map's ``Metadata_*`` columns and the compound's InChIKey to well profiles.

    Parameters
    ----------
    wells : DataFrame
        From :func:`aggregate_wells`.
    platemap : DataFrame
        The ``platemap`` table of the plate(s): ``Metadata_Plate``, ``Metadata_Well``,
        ``Metadata_CompoundID``, ``Metadata_SMILES``, ``Metadata_Concentration``,
        ``Metadata_ControlType``.
    compounds : DataFrame, optional
        The ``compounds`` table (``Metadata_InChIKey``, ``Metadata_CompoundIDs``): maps
        compound IDs to standardized parents.
    negcon : sequence of str
        Negative-control labels (:func:`pipeline.profiles.controls.mark_negcon`): wells whose control
        type or compound ID is one of them get ``Metadata_ControlType = 'negcon'``.

    Returns
    -------
    DataFrame
        :data:`PROFILE_METADATA` (but ``Metadata_NormalizedTo``) then the features; wells absent
        from the plate map are ``'unmapped'``. No well is added or lost.
    """
    pm = platemap[["Metadata_Plate", "Metadata_Well", "Metadata_CompoundID", "Metadata_SMILES",
                   "Metadata_Concentration", "Metadata_ControlType"]]
    out = wells.merge(pm, on=["Metadata_Plate", "Metadata_Well"], how="left", validate="one_to_one")
    if len(out) != len(wells):
        raise RuntimeError(f"annotation changed the number of wells ({len(wells)} -> {len(out)})")
    out["Metadata_ControlType"] = out["Metadata_ControlType"].fillna("unmapped")
    out = mark_negcon(out, negcon)
    key = pd.Series(dtype=object)
    if compounds is not None and len(compounds):
        ex = compounds[["Metadata_InChIKey", "Metadata_CompoundIDs"]].explode("Metadata_CompoundIDs")
        key = ex.drop_duplicates("Metadata_CompoundIDs").set_index("Metadata_CompoundIDs")["Metadata_InChIKey"]
    out["Metadata_InChIKey"] = out["Metadata_CompoundID"].map(key)
    out["Metadata_MOA"] = None
    out["Metadata_Source"] = source
    return _order(out)


def _order(df: pd.DataFrame) -> pd.DataFrame:
    meta = [c for c in PROFILE_METADATA if c in df.columns]
    return df[meta + feature_columns(df.columns)]


def normalize_plate(wells: pd.DataFrame) -> pd.DataFrame:
    """``mad_robustize`` each plate's features against that plate's DMSO (``negcon``) wells:
    (x - median_DMSO) / (1.4826 MAD_DMSO), pycytominer's definition. A plate without any
    ``negcon`` well is normalized against all its wells (pycytominer ``samples="all"``).

    Returns
    -------
    DataFrame
        The wells, normalized, with ``Metadata_NormalizedTo``: ``'negcon'`` or ``'all'`` (the
        plate had no negative control), per plate.
    """
    import pycytominer

    feats = feature_columns(wells.columns)
    meta = [c for c in wells.columns if c not in feats and c != "Metadata_NormalizedTo"]
    missing = set(plates_without_negcon(wells))
    parts = []
    for plate, df in wells.groupby("Metadata_Plate", sort=True):
        alone = str(plate) in missing
        part = pycytominer.normalize(df[meta + feats], features=feats, meta_features=meta,
                                     samples="all" if alone else _NEGCON, method="mad_robustize")
        parts.append(part.assign(Metadata_NormalizedTo="all" if alone else "negcon"))
    return _order(pd.concat(parts, ignore_index=True))


def select_features(wells: pd.DataFrame, *, operations: Sequence[str] = SELECT_OPERATIONS,
                    corr_threshold: float = 0.9, na_cutoff: float = 0.05) -> pd.DataFrame:
    """pycytominer ``feature_select`` with ``operations`` (default: variance, correlation,
    NA and the CellProfiler blocklist) over all wells given; metadata kept.

    When no feature varies over the wells (one well per plate, each normalized against itself;
    or a single well), there is nothing to select from: the wells are returned unchanged and
    ``out.attrs["selection_skipped"]`` says why, instead of pycytominer's bare
    "No feature in X meets the variance threshold".
    """
    import pycytominer

    feats = feature_columns(wells.columns)
    varying = wells[feats].nunique(dropna=True) > 1
    if not bool(varying.any()):
        plates = sorted(map(str, wells["Metadata_Plate"].unique())) if "Metadata_Plate" in wells else []
        out = _order(wells.copy())
        out.attrs["selection_skipped"] = (
            f"no feature varies over the {len(wells)} well(s) of plate(s) {', '.join(plates) or '-'}: "
            "feature selection skipped, profiles kept as normalized")
        return out
    out = pycytominer.feature_select(wells, features=feats, operation=list(operations),
                                     corr_threshold=corr_threshold, na_cutoff=na_cutoff)
    return _order(out)


def consensus_profiles(wells: pd.DataFrame) -> pd.DataFrame:
    """Median profile per source, compound and dose (pycytominer ``consensus``); DMSO wells
    form one consensus per source. Adds ``Metadata_N_Wells``."""
    import pycytominer

    df = wells.copy()
    df["Metadata_CompoundID"] = df["Metadata_CompoundID"].fillna(df["Metadata_ControlType"])
    df["Metadata_Concentration"] = df["Metadata_Concentration"].fillna(0.0)
    reps = ["Metadata_Source", "Metadata_CompoundID", "Metadata_Concentration"]
    keep = ["Metadata_InChIKey", "Metadata_SMILES", "Metadata_ControlType", "Metadata_MOA"]
    feats = feature_columns(df.columns)
    cons = pycytominer.consensus(df[reps + feats], replicate_columns=reps, operation="median", features=feats)
    first = df.groupby(reps, dropna=False)[keep].first().reset_index()
    if "Metadata_NormalizedTo" in df.columns:  # 'negcon', 'all', or both ('all,negcon') over the plates
        norm = df.groupby(reps, dropna=False)["Metadata_NormalizedTo"].agg(normalized_to)
        first = first.merge(norm.reset_index(), on=reps)
    n = df.groupby(reps, dropna=False).size().rename("Metadata_N_Wells").astype(np.int32).reset_index()
    out = first.merge(n, on=reps).merge(cons, on=reps)
    meta = [c for c in PROFILE_METADATA if c in out.columns] + ["Metadata_N_Wells"]
    return out[meta + feature_columns(out.columns)].sort_values(reps, ignore_index=True)


def phenotypic_activity(
    meta: pd.DataFrame,
    features: np.ndarray,
    *,
    compound_col: str = "Metadata_CompoundID",
    null_size: int = 10000,
    threshold: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Phenotypic activity of every compound with two or more wells, with copairs.

    The wells of one compound (all its doses) are the positives of each other; the DMSO
    (``negcon``) wells of the same plate are the negatives (copairs' reference-index recipe:
    ``pos_sameby = [compound, reference]``, ``neg_sameby = [Metadata_Plate]``,
    ``neg_diffby = [compound, reference]``), ranked by cosine similarity. mAP per compound,
    p-value against ``null_size`` random rankings, Benjamini-Hochberg over the compounds.

    Parameters
    ----------
    meta : DataFrame
        One row per well: ``Metadata_Plate``, ``Metadata_ControlType``, ``compound_col``.
    features : (n_wells, d) ndarray
        Profiles (rows of ``meta``); rows or columns with NaN are not allowed.

    Returns
    -------
    DataFrame
        One row per compound: ``compound_col``, ``Metadata_N_Wells``,
        ``mean_average_precision``, ``p_value``, ``corrected_p_value``, ``below_corrected_p``.
        Wells of plates without a ``negcon`` well cannot be scored and are left out;
        ``attrs["plates_without_negcon"]`` names those plates.
    """
    from copairs import map as cmap
    from copairs.matching import assign_reference_index

    features = np.asarray(features, dtype=np.float64)
    if features.shape[0] != len(meta):
        raise ValueError(f"{features.shape[0]} profiles for {len(meta)} metadata rows")
    if not np.isfinite(features).all():
        raise ValueError("profiles hold NaN or inf values; drop those features first")
    m = meta.reset_index(drop=True).copy()
    unscored = plates_without_negcon(m)
    scorable = ~m["Metadata_Plate"].astype(str).isin(unscored).to_numpy()
    m, features = m[scorable].reset_index(drop=True), features[scorable]
    neg = (m["Metadata_ControlType"] == "negcon").to_numpy()
    m[compound_col] = m[compound_col].astype(object).where(~neg, "__negcon__")
    counts = m.loc[~neg, compound_col].value_counts()
    keep = neg | m[compound_col].isin(counts.index[counts >= 2]).to_numpy()
    keep &= m[compound_col].notna().to_numpy() & m["Metadata_ControlType"].isin(["negcon", "trt", "poscon"]).to_numpy()
    m, x = m[keep].reset_index(drop=True), features[keep]
    columns = [compound_col, "Metadata_N_Wells", "mean_average_precision", "p_value", "corrected_p_value",
               "below_corrected_p"]
    if not (m["Metadata_ControlType"] != "negcon").any() or not (m["Metadata_ControlType"] == "negcon").any():
        empty = pd.DataFrame({c: pd.Series(dtype=object if c == compound_col else float) for c in columns})
        empty.attrs["plates_without_negcon"] = unscored
        return empty
    cols = ["Metadata_Plate", compound_col, "Metadata_ControlType"]
    m = assign_reference_index(m[cols], "Metadata_ControlType == 'negcon'", reference_col="Metadata_Reference_Index",
                               default_value=-1)
    pos_sameby = [compound_col, "Metadata_Reference_Index"]
    ap = cmap.average_precision(m, x, pos_sameby=pos_sameby, pos_diffby=[], neg_sameby=["Metadata_Plate"],
                                neg_diffby=[compound_col, "Metadata_Reference_Index"], progress_bar=False)
    ap = ap[ap["Metadata_ControlType"] != "negcon"]
    res = cmap.mean_average_precision(ap, pos_sameby, null_size=null_size, threshold=threshold, seed=seed,
                                      progress_bar=False)
    res = res.merge(ap.groupby(compound_col).size().rename("Metadata_N_Wells").astype(np.int32).reset_index(),
                    on=compound_col)
    res = res[columns].sort_values(compound_col, ignore_index=True)
    res.attrs["plates_without_negcon"] = unscored
    return res


def moa_consistency(
    meta: pd.DataFrame,
    features: np.ndarray,
    *,
    moa_col: str = "Metadata_MOA",
    null_size: int = 10000,
    threshold: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Phenotypic consistency per mechanism with copairs: do compounds of one MOA retrieve each
    other among compounds of other MOAs (``pos_sameby = neg_diffby = [moa]``, cosine)?

    Parameters
    ----------
    meta : DataFrame
        One row per compound profile (e.g. the median of a compound's wells), with ``moa_col``;
        rows without a mechanism are dropped, and so are mechanisms with a single compound.
    features : (n, d) ndarray

    Returns
    -------
    DataFrame
        One row per mechanism: ``moa_col``, ``Metadata_N_Compounds``, ``mean_average_precision``,
        ``p_value``, ``corrected_p_value``, ``below_corrected_p``.
    """
    from copairs import map as cmap

    features = np.asarray(features, dtype=np.float64)
    m = meta.reset_index(drop=True)
    has = m[moa_col].notna().to_numpy()
    counts = m.loc[has, moa_col].value_counts()
    keep = has & m[moa_col].isin(counts.index[counts >= 2]).to_numpy()
    columns = [moa_col, "Metadata_N_Compounds", "mean_average_precision", "p_value", "corrected_p_value",
               "below_corrected_p"]
    if keep.sum() < 3 or m.loc[keep, moa_col].nunique() < 2:
        return pd.DataFrame({c: pd.Series(dtype=object if c == moa_col else float) for c in columns})
    m, x = m.loc[keep, [moa_col]].reset_index(drop=True), features[keep]
    ap = cmap.average_precision(m, x, pos_sameby=[moa_col], pos_diffby=[], neg_sameby=[], neg_diffby=[moa_col],
                                progress_bar=False)
    res = cmap.mean_average_precision(ap, [moa_col], null_size=null_size, threshold=threshold, seed=seed,
                                      progress_bar=False)
    res = res.merge(m.groupby(moa_col).size().rename("Metadata_N_Compounds").astype(np.int32).reset_index(), on=moa_col)
    return res[columns].sort_values(moa_col, ignore_index=True)
