"""Tests of pipeline.chem.parents: plate-map records, and the parent each well holds."""

from __future__ import annotations

import pandas as pd

from pipeline.chem.parents import platemap_records, well_compounds, wells_without_compounds
from pipeline.chem.standardize import standardize_table


def _platemap() -> pd.DataFrame:
    return pd.DataFrame({
        "Metadata_Plate": ["P1", "P1", "P1", "P1", "P2"],
        "Metadata_Well": ["A01", "A02", "A03", "A04", "A01"],
        "Metadata_CompoundID": ["aspirin", None, "DMSO", "blank-trt", None],
        "Metadata_SMILES": ["CC(=O)Oc1ccccc1C(=O)O.[Na+]", "CCO", None, "", "CCO"],
        "Metadata_ControlType": ["trt", "trt", "negcon", "trt", "trt"],
    })


def test_platemap_records_name_their_plate_and_flag_blank_treatments() -> None:
    rec = platemap_records(_platemap())
    assert rec["Metadata_Source"].tolist() == ["platemap:P1"] * 3 + ["platemap:P2"]  # the DMSO well names nothing
    assert rec["Metadata_CompoundID"].tolist() == ["aspirin", "P1:A02", "blank-trt", "P2:A01"]
    assert rec["Input_SMILES"].tolist() == ["CC(=O)Oc1ccccc1C(=O)O.[Na+]", "CCO", "", "CCO"]
    assert rec["Error"].isna().tolist() == [True, True, False, True]
    assert "P1, well A04" in rec["Error"].iloc[2]
    assert platemap_records(_platemap().iloc[2:3]).empty


def test_every_named_well_gets_the_parent_of_its_plate_record() -> None:
    pm = _platemap()
    inputs = standardize_table(platemap_records(pm))
    wells = well_compounds(pm, inputs)
    assert wells[["Metadata_Plate", "Metadata_Well"]].values.tolist() == [["P1", "A01"], ["P1", "A02"], ["P2", "A01"]]
    assert wells["Metadata_InChIKey"].tolist() == ["BSYNRYMUTXBXSQ-UHFFFAOYSA-N", "LFQSCWFLJHTTHZ-UHFFFAOYSA-N",
                                                   "LFQSCWFLJHTTHZ-UHFFFAOYSA-N"]  # aspirin (salt stripped), ethanol
    assert wells_without_compounds(pm, wells).empty
    changed = pm.assign(Metadata_SMILES=pm["Metadata_SMILES"].where(pm["Metadata_Well"] != "A02", "CCCO"))
    assert wells_without_compounds(changed, wells).values.tolist() == [["P1", "A02"]]
