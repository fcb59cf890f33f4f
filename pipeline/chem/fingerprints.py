"""Molecular fingerprints as model inputs: what the Morgan baselines of every evaluation use.

The Morgan baselines (fingerprint -> image/profile ridge and CCA in :mod:`cmcl_model.evaluation`,
the fine-tuning baseline in :mod:`cmcl_model.finetune`, the linear probes) all regress on the
same matrix: :func:`morgan_features`, the bit vectors of
:func:`pipeline.chem.graphs.morgan_fingerprints` as float32.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pipeline.chem.graphs import morgan_fingerprints

__all__ = ["morgan_features"]


def morgan_features(smiles: Iterable[str], *, radius: int = 2, n_bits: int = 2048) -> np.ndarray:
    """Morgan (ECFP-like) bit fingerprints as a float32 feature matrix.

    Parameters
    ----------
    smiles : iterable of str
        SMILES to fingerprint (parents, as in the ``compounds`` table).
    radius : int, default 2
        Morgan radius (2 ~ ECFP4).
    n_bits : int, default 2048
        Fingerprint length.

    Returns
    -------
    (n, n_bits) float32 ndarray
        0.0/1.0, one row per SMILES, in order.

    Raises
    ------
    pipeline.chem.graphs.GraphError
        If a SMILES does not parse; the message gives its position.
    ValueError
        If ``radius`` < 0 or ``n_bits`` < 1.
    """
    return morgan_fingerprints(list(smiles), radius=radius, n_bits=n_bits).astype(np.float32)
