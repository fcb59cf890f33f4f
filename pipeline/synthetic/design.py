"""Plate maps of the synthetic screen: DMSO spread over the plate, positive controls, compounds
spilling over plates, replicates on different plates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.synthetic.phenotype import POSITIVE_CONTROL_ID, POSITIVE_CONTROL_SMILES

__all__ = ["design_plates", "well_names"]

_PLATE_SHAPES: dict[int, tuple[int, int]] = {96: (8, 12), 384: (16, 24)}
_DEFAULT_DMSO: dict[int, int] = {96: 12, 384: 32}
_DEFAULT_POSCON: dict[int, int] = {96: 2, 384: 4}


def well_names(plate_format: Literal[96, 384]) -> list[str]:
    """Wells of a plate in row-major order, zero-padded (``A01`` .. ``P24``)."""
    rows, cols = _plate_shape(plate_format)
    return [f"{chr(65 + r)}{c + 1:02d}" for r in range(rows) for c in range(cols)]


def _plate_shape(plate_format: int) -> tuple[int, int]:
    if plate_format not in _PLATE_SHAPES:
        raise ValueError(f"plate_format must be one of {sorted(_PLATE_SHAPES)}, got {plate_format!r}")
    return _PLATE_SHAPES[plate_format]


def design_plates(
    library: pd.DataFrame,
    *,
    n_plates: int = 1,
    plate_format: Literal[96, 384] = 96,
    n_compounds: int | None = None,
    replicates: int = 1,
    concentrations: Sequence[float] = (10.0,),
    n_dmso: int | None = None,
    n_poscon: int | None = None,
    seed: int = 0,
) -> list[pd.DataFrame]:
    """Plate maps for a screen of ``library``.

    DMSO wells are spread over every row and over the columns, edges included; ``n_poscon``
    wells get :data:`POSITIVE_CONTROL_SMILES`; the remaining wells receive (compound,
    concentration) pairs. Each replicate occupies its own block of ``n_plates // replicates``
    plates, so replicates of a compound are on different plates; within a block the pairs are
    spread evenly over the plates (spill-over) and shuffled over the wells.

    Parameters
    ----------
    library : pandas.DataFrame
        Needs ``Metadata_CompoundID`` and ``Metadata_SMILES``; compounds are taken in row order
        (rows with the positive control's ID are skipped).
    n_plates : int
        Number of plates; must be a multiple of ``replicates``.
    plate_format : {96, 384}
        Wells per plate.
    n_compounds : int or None
        Compounds to screen; None fills the available wells (at most the library's size).
    replicates : int
        Copies of every (compound, concentration), each on a different plate.
    concentrations : sequence of float
        Concentrations in uM, each compound gets all of them.
    n_dmso, n_poscon : int or None
        DMSO and positive-control wells per plate; None: 12 and 2 (96-well), 32 and 4 (384).
    seed : int
        Seed of the well shuffle.

    Returns
    -------
    list of pandas.DataFrame
        One plate map per plate, rows in well order, only used wells, columns
        ``Metadata_Well``, ``Metadata_CompoundID``, ``Metadata_SMILES`` (None for DMSO),
        ``Metadata_Concentration`` (float uM, NaN for DMSO), ``Metadata_ControlType``
        (``negcon``, ``poscon`` or ``trt``).

    Raises
    ------
    ValueError
        If the columns are missing, an argument is out of range, or the design does not fit
        (the message gives the capacity).
    """
    missing = {"Metadata_CompoundID", "Metadata_SMILES"} - set(library.columns)
    if missing:
        raise ValueError(f"library lacks columns {sorted(missing)}; has {list(library.columns)}")
    rows, cols = _plate_shape(plate_format)
    n_dmso = _DEFAULT_DMSO[plate_format] if n_dmso is None else n_dmso
    n_poscon = _DEFAULT_POSCON[plate_format] if n_poscon is None else n_poscon
    concentrations = tuple(float(c) for c in concentrations)
    lib = library[library["Metadata_CompoundID"] != POSITIVE_CONTROL_ID]
    n_compounds = _fit_design(n_available=len(lib), n_compounds=n_compounds, plate_format=plate_format,
                              n_plates=n_plates, replicates=replicates, concentrations=concentrations,
                              n_dmso=n_dmso, n_poscon=n_poscon)
    plates_per_rep = n_plates // replicates
    chosen = lib.iloc[:n_compounds]
    pairs = [
        (cid, smi, conc)
        for cid, smi in zip(chosen["Metadata_CompoundID"], chosen["Metadata_SMILES"])
        for conc in concentrations
    ]
    chunks = np.array_split(np.arange(len(pairs)), plates_per_rep)
    names = well_names(plate_format)
    maps = []
    for p in range(n_plates):
        rng = np.random.default_rng([seed, p, 0xD51])
        grid = _control_grid(rng, p, rows=rows, cols=cols, n_dmso=n_dmso, n_poscon=n_poscon)
        free = rng.permutation(np.flatnonzero(grid.ravel() == 0))
        records = {}
        for idx in np.flatnonzero(grid.ravel() == 1):
            records[idx] = (None, None, np.nan, "negcon")
        for idx in np.flatnonzero(grid.ravel() == 2):
            records[idx] = (POSITIVE_CONTROL_ID, POSITIVE_CONTROL_SMILES, max(concentrations), "poscon")
        for idx, k in zip(free, chunks[p % plates_per_rep]):
            cid, smi, conc = pairs[k]
            records[idx] = (cid, smi, conc, "trt")
        maps.append(_map_table(records, names))
    return maps


def _fit_design(*, n_available: int, n_compounds: int | None, plate_format: int, n_plates: int, replicates: int,
                concentrations: tuple[float, ...], n_dmso: int, n_poscon: int) -> int:
    """The number of compounds the design holds (``n_compounds``, or as many as fit).

    Raises
    ------
    ValueError
        As :func:`design_plates` says.
    """
    rows, cols = _plate_shape(plate_format)
    if n_plates < 1 or replicates < 1 or not concentrations or min(concentrations) <= 0:
        raise ValueError(
            f"need n_plates >= 1, replicates >= 1 and positive concentrations; got n_plates="
            f"{n_plates}, replicates={replicates}, concentrations={concentrations}"
        )
    if n_plates % replicates:
        raise ValueError(f"n_plates={n_plates} is not a multiple of replicates={replicates}")
    capacity = rows * cols - n_dmso - n_poscon
    if n_dmso < 0 or n_poscon < 0 or capacity < 0:
        raise ValueError(
            f"n_dmso={n_dmso} + n_poscon={n_poscon} exceed the {rows * cols} wells of a plate"
        )
    slots = (n_plates // replicates) * capacity // len(concentrations)
    if n_compounds is None:
        n_compounds = min(n_available, slots)
    if n_compounds > n_available:
        raise ValueError(f"n_compounds={n_compounds} exceeds the library's {n_available} compounds")
    if n_compounds > slots:
        raise ValueError(
            f"design does not fit: {n_compounds} compounds x {len(concentrations)} "
            f"concentrations x {replicates} replicates need more than {n_plates} plates of "
            f"{capacity} treatment wells ({plate_format} wells - {n_dmso} DMSO - {n_poscon} "
            f"positive controls); at most {slots} compounds fit"
        )
    return n_compounds


def _control_grid(rng: np.random.Generator, p: int, *, rows: int, cols: int, n_dmso: int,
                  n_poscon: int) -> np.ndarray:
    """(rows, cols) int8 grid of plate ``p``: 0 free, 1 DMSO (a diagonal stride: every row, all
    columns incl. both edges), 2 positive control (random free wells)."""
    grid = np.zeros((rows, cols), dtype=np.int8)
    for j in range(n_dmso):
        r, c = (j + p) % rows, (j * 5 + p) % cols
        while grid[r, c]:
            c = (c + 1) % cols
        grid[r, c] = 1
    free = np.flatnonzero(grid.ravel() == 0)
    grid.ravel()[rng.choice(free, size=n_poscon, replace=False)] = 2
    return grid


def _map_table(records: dict, names: list[str]) -> pd.DataFrame:
    """A plate map from ``{well index: (compound id, SMILES, concentration, control type)}``."""
    order = sorted(records)
    return pd.DataFrame(
        {
            "Metadata_Well": [names[i] for i in order],
            "Metadata_CompoundID": pd.array([records[i][0] for i in order], dtype="string"),
            "Metadata_SMILES": pd.array([records[i][1] for i in order], dtype="string"),
            "Metadata_Concentration": np.array([records[i][2] for i in order], dtype=float),
            "Metadata_ControlType": [records[i][3] for i in order],
        }
    )
