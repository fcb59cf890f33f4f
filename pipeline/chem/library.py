"""The compound libraries shipped with cmcl (``pipeline/chem/data``).

Two CSV files ship as package data, both with the columns ``Metadata_CompoundID``,
``Metadata_SMILES`` and ``Name`` (see ``pipeline/chem/data/README.md`` for their source and licence):

* ``compound_library.csv``: 720 ChEMBL approved small-molecule drugs, SMILES as in ChEMBL
  (salts and solvates included).
* ``compound_library_messy.csv``: 40 hand-made records (salts, charged forms, stereo variants,
  one parent under two IDs, solvates and 6 invalid SMILES) that exercise standardization.
"""

from __future__ import annotations

from importlib.resources import files

import pandas as pd

__all__ = ["LIBRARY_COLUMNS", "load_compound_library"]

#: Columns of both shipped library files, in order.
LIBRARY_COLUMNS: tuple[str, ...] = ("Metadata_CompoundID", "Metadata_SMILES", "Name")


def load_compound_library(*, messy: bool = False) -> pd.DataFrame:
    """Load a compound library shipped with cmcl.

    Parameters
    ----------
    messy : bool, optional
        If True, load the small messy library (salts, charges, stereo variants, duplicates,
        solvates, invalid SMILES) instead of the 720 approved drugs.

    Returns
    -------
    pandas.DataFrame
        One row per record with string columns ``Metadata_CompoundID``, ``Metadata_SMILES``
        (exactly as in the file; an absent SMILES is the empty string, never NaN) and ``Name``.
    """
    name = "compound_library_messy.csv" if messy else "compound_library.csv"
    with files("pipeline.chem.data").joinpath(name).open("r", encoding="utf-8") as fh:
        frame = pd.read_csv(fh, dtype=str, keep_default_na=False, na_filter=False)
    return frame.loc[:, list(LIBRARY_COLUMNS)]
