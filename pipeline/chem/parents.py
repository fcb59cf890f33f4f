"""Parents: standardized inputs merged into parent compounds, and the parent each plate-map well holds.

:func:`merge_parents` turns the ``compound_inputs`` table (:func:`pipeline.chem.standardize.standardize_table`)
into the ``compounds`` table, one row per parent InChIKey with its Bemis-Murcko scaffold
(:func:`pipeline.chem.scaffolds.scaffold`); :func:`well_compounds` gives every plate-map well that
names a structure its parent (the ``well_compounds`` table), and :func:`wells_without_compounds`
finds the wells the compound stage has not seen yet.
"""

from __future__ import annotations

import pandas as pd
from rdkit import Chem

from pipeline.chem.rdkit_log import quiet_rdkit
from pipeline.chem.scaffolds import scaffold

__all__ = ["CompoundsOutOfDate", "PLATEMAP_SOURCE", "platemap_records", "merge_parents", "well_compounds",
           "wells_without_compounds"]

_WELL_KEY = ["Metadata_Plate", "Metadata_Well"]


#: ``Metadata_Source`` prefix of the input records built from a plate map (``platemap:<plate>``).
PLATEMAP_SOURCE = "platemap:"


class CompoundsOutOfDate(ValueError):
    """Plate-map wells name structures the compound table has not standardized yet."""


def platemap_records(platemap: pd.DataFrame) -> pd.DataFrame:
    """Input records of the plate-map wells that name a structure or are treatments.

    Parameters
    ----------
    platemap : DataFrame
        Rows of the ``platemap`` table (all plates).

    Returns
    -------
    DataFrame
        ``Metadata_Source`` (``platemap:<plate>``), ``Metadata_CompoundID`` (the map's, else
        ``<plate>:<well>``), ``Input_SMILES`` ('' where blank) and ``Error``: a treatment well
        without SMILES is a record whose ``Error`` says so (standardization reports it as
        failed). Empty (no columns) when no well qualifies.
    """
    has_smiles = platemap["Metadata_SMILES"].notna() & (platemap["Metadata_SMILES"] != "")
    pm = platemap[has_smiles | (platemap["Metadata_ControlType"] == "trt")]
    if not len(pm):
        return pd.DataFrame()
    blank = pm["Metadata_SMILES"].isna() | (pm["Metadata_SMILES"] == "")
    return pd.DataFrame({
        "Metadata_Source": PLATEMAP_SOURCE + pm["Metadata_Plate"],
        "Metadata_CompoundID": pm["Metadata_CompoundID"].fillna(pm["Metadata_Plate"] + ":" + pm["Metadata_Well"]),
        "Input_SMILES": pm["Metadata_SMILES"].fillna(""),
        "Error": [f"plate map of {p}, well {w}: a treatment well without SMILES (Metadata_SMILES is blank)"
                  if b else None for p, w, b in zip(pm["Metadata_Plate"], pm["Metadata_Well"], blank)]})


def merge_parents(inputs: pd.DataFrame) -> pd.DataFrame:
    """Merge standardized inputs by parent InChIKey; return the ``compounds`` table.

    Parameters
    ----------
    inputs : pandas.DataFrame
        A ``compound_inputs`` table (from :func:`pipeline.chem.standardize.standardize_table`); failed rows are skipped.

    Returns
    -------
    pandas.DataFrame
        One row per parent InChIKey (sorted), with ``Metadata_SMILES``, ``Metadata_InChI``,
        ``Metadata_CompoundIDs`` (sorted unique input IDs), ``Metadata_Scaffold``
        (Bemis--Murcko scaffold, '' for acyclic parents) and ``Num_HeavyAtoms`` (int32).

    Raises
    ------
    ValueError
        If a column of ``compound_inputs`` is missing.

    Notes
    -----
    InChI is insensitive to some tautomerism, so inputs drawn as different tautomers can share
    a parent InChIKey; the lexicographically first of their SMILES represents the parent.
    """
    missing = [c for c in ("Status", "Metadata_InChIKey", "Metadata_SMILES", "Metadata_CompoundID")
               if c not in inputs.columns]
    if missing:
        raise ValueError(f"inputs lack column(s) {missing}; have {list(inputs.columns)}")
    ok = inputs[inputs["Status"] == "ok"]
    groups = ok.groupby("Metadata_InChIKey", sort=True)
    rows = []
    with quiet_rdkit():
        for key, g in groups:
            smiles = sorted(set(g["Metadata_SMILES"].astype(str)))
            mol = Chem.MolFromSmiles(smiles[0])
            if mol is None:
                raise ValueError(f"parent SMILES {smiles[0]!r} of {key} does not parse")
            rows.append(
                {
                    "Metadata_InChIKey": str(key),
                    "Metadata_SMILES": smiles[0],
                    "Metadata_InChI": Chem.MolToInchi(mol),
                    "Metadata_CompoundIDs": sorted(set(g["Metadata_CompoundID"].astype(str))),
                    # chirality=True: Hu et al.'s scaffold, which the split drawn from this column
                    # (cmcl_model.data.pairs.scaffold_split) follows
                    "Metadata_Scaffold": scaffold(smiles[0], chirality=True),
                    "Num_HeavyAtoms": mol.GetNumHeavyAtoms(),
                }
            )
    out = pd.DataFrame(
        rows,
        columns=[
            "Metadata_InChIKey",
            "Metadata_SMILES",
            "Metadata_InChI",
            "Metadata_CompoundIDs",
            "Metadata_Scaffold",
            "Num_HeavyAtoms",
        ],
    )
    out["Num_HeavyAtoms"] = out["Num_HeavyAtoms"].astype("int32")
    if out["Metadata_InChIKey"].nunique() != ok["Metadata_InChIKey"].nunique():  # pragma: no cover
        raise RuntimeError("merge_parents lost parents")
    return out


def _named_wells(platemap: pd.DataFrame) -> pd.DataFrame:
    smiles = platemap["Metadata_SMILES"]
    return platemap[smiles.notna() & (smiles.astype(str).str.strip() != "")]


def well_compounds(platemap: pd.DataFrame, inputs: pd.DataFrame) -> pd.DataFrame:
    """The compound identity of every plate-map well that names a structure.

    Each such well became one input record of its plate (``Metadata_Source`` =
    ``platemap:<plate>``, ``Input_SMILES`` = the well's SMILES: :func:`platemap_records`); the
    well takes the parent InChIKey its plate's record standardized to.

    Parameters
    ----------
    platemap : DataFrame
        Rows of the ``platemap`` table (all plates).
    inputs : DataFrame
        Rows of the ``compound_inputs`` table (:func:`pipeline.chem.standardize.standardize_table` output).

    Returns
    -------
    DataFrame
        Rows of the ``well_compounds`` table: ``Metadata_Plate``, ``Metadata_Well``,
        ``Metadata_InChIKey`` (None where standardization failed), ``Input_SMILES``; one row per
        named well, sorted by plate and well.

    Raises
    ------
    ValueError
        If a named well has no input record of its plate (the records were not built from
        this plate map).
    """
    wells = _named_wells(platemap)[_WELL_KEY + ["Metadata_SMILES"]].rename(columns={"Metadata_SMILES": "Input_SMILES"})
    src = inputs[inputs["Metadata_Source"].astype(str).str.startswith(PLATEMAP_SOURCE)]
    records = pd.DataFrame({"Metadata_Plate": src["Metadata_Source"].astype(str).str[len(PLATEMAP_SOURCE):],
                            "Input_SMILES": src["Input_SMILES"],
                            "Metadata_InChIKey": src["Metadata_InChIKey"].where(src["Status"] == "ok")})
    records = records.drop_duplicates(["Metadata_Plate", "Input_SMILES"])
    out = wells.merge(records, on=["Metadata_Plate", "Input_SMILES"], how="left", indicator=True)
    lost = out[out["_merge"] != "both"]
    if len(lost):
        first = lost.iloc[0]
        raise ValueError(f"{len(lost)} plate-map well(s) have no compound input record of their plate "
                         f"(first: {first['Metadata_Plate']} {first['Metadata_Well']})")
    out = out.drop(columns="_merge")[_WELL_KEY + ["Metadata_InChIKey", "Input_SMILES"]]
    out["Metadata_InChIKey"] = out["Metadata_InChIKey"].astype(object).where(out["Metadata_InChIKey"].notna(), None)
    return out.sort_values(_WELL_KEY, ignore_index=True)


def wells_without_compounds(platemap: pd.DataFrame, wells: pd.DataFrame) -> pd.DataFrame:
    """Named plate-map wells that ``wells`` (the ``well_compounds`` table) does not cover, or covers
    with another structure than the plate map now names: wells of plates ingested (or
    re-ingested with a changed plate map) after the compound stage last ran.

    Returns
    -------
    DataFrame
        ``Metadata_Plate``, ``Metadata_Well`` of those wells (empty when the compound table is current).
    """
    named = _named_wells(platemap)[_WELL_KEY + ["Metadata_SMILES"]]
    known = wells[_WELL_KEY + ["Input_SMILES"]]
    both = named.merge(known, on=_WELL_KEY, how="left")
    stale = both["Input_SMILES"].isna() | (both["Input_SMILES"].astype(str) != both["Metadata_SMILES"].astype(str))
    return both.loc[stale, _WELL_KEY].reset_index(drop=True)
