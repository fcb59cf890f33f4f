"""Baselines of the evaluation: what a run's retrieval is compared with, besides chance.

Each baseline returns a pair of (n_test, k) float32 arrays, the molecule side and the image
(or profile) side of the test compounds, that :func:`cmcl_model.evaluation.metrics.retrieval_report`
ranks exactly as it ranks the model's embeddings:

- ``morgan_ridge``: Morgan fingerprints (r=2, 2048 bits) -> ridge regression -> the compound's
  image profile (:func:`morgan_ridge_embeddings`; profile-mode runs :func:`morgan_ridge_profiles`);
- ``morgan_cca``: canonical correlation analysis between Morgan fingerprints and image profiles
  (:func:`morgan_cca_embeddings`); with the store's CellProfiler profiles
  (:func:`cellprofiler_compound_profiles`) it is the ``cellprofiler_cca`` baseline.

The untrained-encoder baseline is the run's architecture at its initial weights
(:func:`cmcl_model.evaluation.run.evaluate`). To add a baseline: a function here returning the
pair, and one line in :func:`cmcl_model.evaluation.run.evaluate`'s baselines (and in
``schemas/reports/metrics.json`` when it is not optional).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cmcl_model.data import treatment_crops
from pipeline.chem.fingerprints import morgan_features
from pipeline.features import feature_columns
from pipeline.store.paths import CHANNELS, Store

__all__ = [
    "PROFILE_FEATURES",
    "compound_profiles",
    "cellprofiler_well_profiles",
    "cellprofiler_compound_profiles",
    "morgan_ridge_embeddings",
    "morgan_cca_embeddings",
    "morgan_ridge_profiles",
]

#: The features of :func:`compound_profiles`: 5 channel intensities and 2 areas.
PROFILE_FEATURES = [f"Intensity_Mean_{c}" for c in CHANNELS] + ["AreaShape_NucleusArea", "AreaShape_CellArea"]


def compound_profiles(store: Store) -> pd.DataFrame:
    """Per-compound image profile: mean over its treatment cells of 5 channel intensities and
    2 areas (CellProfiler-style features of the ``cells`` table), indexed by InChIKey."""
    trt, _ = treatment_crops(store)
    cells = store.read("cells", ["Metadata_Plate", "Metadata_CropIndex", *PROFILE_FEATURES])
    return trt.merge(cells, on=["Metadata_Plate", "Metadata_CropIndex"]).groupby("Metadata_InChIKey")[PROFILE_FEATURES].mean()


def cellprofiler_well_profiles(store: Store) -> pd.DataFrame | None:
    """The store's own feature-selected CellProfiler well profiles (``profiles_selected``,
    source ``'cmcl'``, written by ``cmcl profile``), or None when there are none."""
    if not store.table_path("profiles_selected").is_file():
        return None
    prof = store.read("profiles_selected")
    prof = prof[prof["Metadata_Source"] == "cmcl"].reset_index(drop=True)
    return prof if len(prof) else None


def cellprofiler_compound_profiles(store: Store) -> pd.DataFrame | None:
    """Per-compound mean of the store's feature-selected CellProfiler well profiles (treatment
    wells, features without NaN), indexed by InChIKey; None without ``cmcl profile`` output."""
    wells = cellprofiler_well_profiles(store)
    if wells is None:
        return None
    trt = wells[(wells["Metadata_ControlType"] == "trt") & wells["Metadata_InChIKey"].notna()]
    feats = [c for c in feature_columns(trt.columns) if trt[c].notna().all()]
    return trt.groupby("Metadata_InChIKey")[feats].mean() if len(trt) and feats else None


def _baseline_data(store: Store, train_keys: Sequence[str], test_keys: Sequence[str], name: str,
                   profiles: pd.DataFrame | None = None):
    """(x_train, y_train, x_test, y_test): fingerprints and profiles standardised with the
    training compounds' statistics."""
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
    x_train = morgan_features(smiles.loc[list(train_keys)].tolist())
    x_test = morgan_features(smiles.loc[list(test_keys)].tolist())
    y_test = (prof.loc[list(test_keys)].to_numpy(np.float64) - mu) / sd
    return x_train, (y_train - mu) / sd, x_test, y_test


def morgan_ridge_embeddings(
    store: Store, train_keys: Sequence[str], test_keys: Sequence[str], *, alpha: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: Morgan fingerprints (r=2, 2048 bits) -> ridge regression -> per-compound
    image profile (:func:`compound_profiles`, standardised with training statistics).
    Returns (predicted profiles of test compounds, measured profiles), both (n_test, 7).

    Raises
    ------
    ValueError
        If fewer than 2 training compounds, or not every test compound, have image profiles.
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

    Raises
    ------
    ValueError
        If fewer than 2 training compounds, or not every test compound, have profiles.
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


def morgan_ridge_profiles(store: Store, profiles: pd.DataFrame, train_keys: Sequence[str], test_keys: Sequence[str], *,
                          alpha: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Baseline of profile-mode runs: Morgan fingerprints (r=2, 2048 bits) -> ridge -> compound
    profile, fitted on the training compounds. Returns (predicted, measured) profiles of
    ``test_keys``: (n_test, F) float32, both standardized with the training compounds' mean and sd."""
    from sklearn.linear_model import Ridge

    smiles = store.read("compounds").set_index("Metadata_InChIKey")["Metadata_SMILES"]
    train_keys = [k for k in train_keys if k in profiles.index]
    y = profiles.loc[train_keys].to_numpy(np.float64)
    mu, sd = y.mean(0), y.std(0) + 1e-9
    xtr = morgan_features(smiles.loc[train_keys].tolist())
    xte = morgan_features(smiles.loc[list(test_keys)].tolist())
    pred = Ridge(alpha=alpha).fit(xtr, (y - mu) / sd).predict(xte)
    meas = (profiles.loc[list(test_keys)].to_numpy(np.float64) - mu) / sd
    return pred.astype(np.float32), meas.astype(np.float32)
