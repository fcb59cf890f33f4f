"""Profile importers on small real fixtures (tests/data/profile_formats, provenance in
tests/data/README.md): JUMP-MOA-style inline structures, JUMP cpg0016 numbered features joined
through the JCP2022 compound table, IDR0133's plain column names, the Hub join of LINCS, and
what is reported when a compound cannot be joined."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.chem.standardize import standardize_smiles
from pipeline.profiles.imports import (DMSO_INCHIKEY, ProfileImportError, as_well_profiles, compound_records,
                                     import_profiles, resolve_columns)
from pipeline.profiles.io import read_column_map, read_compound_map, read_name_table, read_profile_table
from pipeline.profiles.wells import PROFILE_METADATA
from pipeline.store.schema import conform

DATA = Path(__file__).resolve().parents[2] / "data"
FMT = DATA / "profile_formats"
LINCS = DATA / "profiles_lincs_SQ00015054"
KEY = r"[A-Z]{14}-[A-Z]{10}-[A-Z]"


def _fraction_joined(res) -> float:
    s = res.summary()
    return s["joined"] / s["compounds"]


def test_jump_moa_style_plate_keys_its_compounds_from_inline_smiles():
    table = read_profile_table(FMT / "jump_moa_style_plate.csv.gz")
    res = import_profiles(table, source="import:jump_moa_style_plate.csv.gz")
    p, s = res.profiles, res.summary()
    assert s["rows"] == 384 and s["features"] == 64 and res.feature_kind == "cellprofiler"
    assert s["compounds"] == table["Metadata_broad_sample"].nunique() and _fraction_joined(res) >= 0.95
    assert res.roles["smiles"] == "Metadata_smiles" and res.roles["inchikey"] == "Metadata_InChIKey"
    trt = p[p["Metadata_InChIKey"].notna()]
    assert set(trt["Metadata_Identity"]) == {"inline"} and trt["Metadata_InChIKey"].str.fullmatch(KEY).all()
    # the parent is cmcl's own standardization of the file's SMILES; the file's key is kept beside it
    row = trt.iloc[5]
    assert row["Metadata_InChIKey"] == standardize_smiles(row["Metadata_InputSMILES"]).inchikey
    src = table.set_index("Metadata_Well").loc[row["Metadata_Well"]]
    assert row["Metadata_InputInChIKey"] == src["Metadata_InChIKey"] and row["Metadata_broad_sample"] == src["Metadata_broad_sample"]
    # DMSO wells name no compound
    assert (p["Metadata_ControlType"] == "negcon").sum() == table["Metadata_broad_sample"].isna().sum() == 24
    assert s["compounds"] == 90 and (p["Metadata_ControlType"] == "trt").sum() == 360
    np.testing.assert_array_equal(p["Cells_AreaShape_Compactness"], table["Cells_AreaShape_Compactness"].astype(np.float32))
    conform(p, "profiles_imported")


def test_jump_cpg0016_style_joins_through_the_jcp2022_table_and_names_numbered_features():
    table = read_profile_table(FMT / "jump_cpg0016_style.parquet")
    cmap, roles = read_compound_map(FMT / "jump_compound_ids_subset.csv.gz", ids=set(table["Metadata_JCP2022"]),
                                    id_columns=list(table.columns))
    assert list(cmap.columns) == ["Metadata_JCP2022", "smiles"] and len(cmap) == 41  # only the IDs the table names
    names = read_name_table(FMT / "jump_cpg0016_feature_names.csv")
    res = import_profiles(table, source="import:jump_cpg0016_style.parquet", compound_map=cmap, map_roles=roles,
                          feature_names=names)
    p, s = res.profiles, res.summary()
    assert s["compounds"] == 41 and s["joined"] == 40 and _fraction_joined(res) >= 0.95
    assert s["unjoined"] == [{"Metadata_CompoundID": "JCP2022_999999", "rows": 3,
                              "reason": "Metadata_JCP2022 not in the compound map"}]
    assert set(p["Metadata_Identity"].dropna()) == {"map:Metadata_JCP2022"}
    assert (p.loc[p["Metadata_JCP2022"] == "JCP2022_033924", "Metadata_InChIKey"] == DMSO_INCHIKEY).all()
    assert (p.loc[p["Metadata_JCP2022"] == "JCP2022_033924", "Metadata_ControlType"] == "negcon").all()
    assert set(p["Metadata_Batch"]) == {"source_3", "source_7"} and p["Metadata_JCP2022"].equals(table["Metadata_JCP2022"])
    assert res.features == names["name"].tolist() and res.feature_kind == "cellprofiler"
    np.testing.assert_array_equal(p[names["name"][3]], table["X_4"])
    conform(p, "profiles_imported")
    # without the name table the numbered columns are the features, and the schema takes them
    raw = import_profiles(table, source="import:x", compound_map=cmap, map_roles=roles)
    assert raw.feature_kind == "numbered" and raw.features == [f"X_{i}" for i in range(1, 65)]
    conform(raw.profiles, "profiles_imported")
    assert as_well_profiles(raw.profiles, metadata=PROFILE_METADATA) is None  # nothing cmcl profile can score
    # JUMP's own compound table gives InChI and InChIKey, no SMILES: the InChI is the structure
    from rdkit import Chem

    inchi = cmap.assign(Metadata_InChI=[Chem.MolToInchi(Chem.MolFromSmiles(x)) for x in cmap["smiles"]],
                        Metadata_InChIKey="NOTAREALKEY-UHFFFAOYSA-N").drop(columns=["smiles"])
    via = import_profiles(table, source="import:x", compound_map=inchi,
                          map_roles={"inchi": "Metadata_InChI", "inchikey": "Metadata_InChIKey"})
    assert via.summary()["joined"] == 40
    same = (via.profiles["Metadata_InChIKey"] == p["Metadata_InChIKey"])[p["Metadata_InChIKey"].notna()]
    assert same.mean() >= 0.95 and (via.profiles["Metadata_InputInChIKey"].dropna() == "NOTAREALKEY-UHFFFAOYSA-N").all()
    bare = table.rename(columns={f"X_{i}": str(i - 1) for i in range(1, 65)})
    assert import_profiles(bare, source="import:x").features == [str(i) for i in range(64)]


def test_idr0133_plain_column_names_are_recognised():
    table = read_profile_table(FMT / "idr0133_fs_well_holdout_every7th.csv.gz")
    res = import_profiles(table, source="import:idr")
    p, s = res.profiles, res.summary()
    assert res.roles == {"plate": "Plate", "well": "Well", "smiles": "Compound SMILES", "inchikey": "Compound InChIKey",
                         "compound": "Compound BRD", "name": "Compound Name",
                         "dose": "Compound Concentration (microMolar)", "control": "Control Type",
                         "batch": "Experimental Condition [Experimental Batch]"}
    assert s["features"] == 352 and s["joined"] == s["compounds"] > 10
    assert ((p["Metadata_ControlType"] == "negcon") == (table["Control Type"] == "Negative")).all()
    assert (p.loc[p["Metadata_ControlType"] == "negcon", "Metadata_InChIKey"] == DMSO_INCHIKEY).all()
    np.testing.assert_allclose(p["Metadata_Concentration"], table["Compound Concentration (microMolar)"])
    assert p["Metadata_injury_type"].tolist() == table["injury_type"].astype(str).tolist()
    assert p["Metadata_Compound_BRD_short"].notna().any()
    conform(p, "profiles_imported")
    recs = compound_records(p)
    assert set(recs["Metadata_CompoundID"]) == set(p.loc[p["Metadata_ControlType"] != "negcon", "Metadata_CompoundID"])


def test_a_toml_column_map_reads_any_spelling(tmp_path):
    table = read_profile_table(FMT / "idr0133_fs_treatment_holdout.csv.gz")
    odd = table.rename(columns={"Compound SMILES": "Struktur", "Plate": "Platte", "Well": "Napf",
                                "Compound Concentration (microMolar)": "Dosis"})
    toml = tmp_path / "cols.toml"
    toml.write_text('dose_unit = "nM"\n[columns]\nStruktur = "smiles"\nPlatte = "plate"\nNapf = "well"\nDosis = "dose"\n')
    user_map, unit = read_column_map(toml)
    res = import_profiles(odd, source="import:odd", user_map=user_map, dose_unit=unit)
    ref = import_profiles(table, source="import:odd")
    assert res.roles["smiles"] == "Struktur" and res.summary()["joined"] == ref.summary()["joined"] == 6
    assert res.profiles["Metadata_InChIKey"].equals(ref.profiles["Metadata_InChIKey"])
    assert res.profiles["Metadata_Plate"].equals(ref.profiles["Metadata_Plate"])
    np.testing.assert_allclose(res.profiles["Metadata_Concentration"], ref.profiles["Metadata_Concentration"] * 1e-3)
    toml.write_text('Struktur = "structure"\n')
    with pytest.raises(ProfileImportError, match="not roles"):
        read_column_map(toml)
    with pytest.raises(ProfileImportError, match="no column 'Nope'"):
        resolve_columns(odd.columns, user_map={"Nope": "smiles"})


def test_lincs_joins_through_the_hub_by_pert_id():
    table = read_profile_table(LINCS / "SQ00015054_normalized_feature_select.csv.gz")
    cmap, roles = read_compound_map(LINCS / "repurposing_samples_20200324.txt",
                                    ids=set(table["Metadata_broad_sample"].dropna()), id_columns=list(table.columns))
    res = import_profiles(table, source="import:lincs", compound_map=cmap, map_roles=roles)
    p, s = res.profiles, res.summary()
    assert s["rows"] == 384 and s["features"] == 454 and s["compounds"] == 58 and s["joined"] == 48
    # 3 of them only through the Hub's deprecated_broad_id (bortezomib's old sample ID, say)
    bortezomib = p.loc[p["Metadata_broad_sample"] == "BRD-K50691590-001-02-2", "Metadata_InChIKey"]
    assert set(bortezomib) == {"GXJABQQUPOEUTA-RDJZCZTQSA-N"}
    assert (p["Metadata_ControlType"] == "negcon").sum() == 24
    np.testing.assert_allclose(p["Metadata_Concentration"], table["Metadata_mmoles_per_liter"] * 1000)
    assert {u["reason"] for u in s["unjoined"]} == {"Metadata_broad_sample not in the compound map"}
    assert len(s["unjoined"]) == s["compounds"] - s["joined"]
    wells = as_well_profiles(p, metadata=PROFILE_METADATA)
    assert list(wells.columns[: len(PROFILE_METADATA)]) == list(PROFILE_METADATA) and wells.shape[1] == len(PROFILE_METADATA) + 454


def test_unjoined_compounds_are_listed_with_their_reason():
    feats = {f"Cells_AreaShape_F{i}": np.arange(6, dtype=float) + i for i in range(3)}
    table = pd.DataFrame({"Metadata_Plate": "P", "Metadata_Well": ["A01", "A02", "A03", "A04", "A05", "A06"],
                          "Metadata_JCP2022": ["J1", "J2", "J3", "J4", None, "J1"],
                          "Metadata_SMILES": ["CCO", "C1CC", None, None, None, "CCO"],
                          "Metadata_InChIKey": [None, None, None, "LFQSCWFLJHTTHZ-UHFFFAOYSA-N", None, None], **feats})
    cmap = pd.DataFrame({"Metadata_JCP2022": ["J3"], "smiles": [None]})
    res = import_profiles(table, source="import:t", compound_map=cmap, map_roles={"smiles": "smiles"})
    reasons = {u["Metadata_CompoundID"]: u["reason"] for u in res.summary()["unjoined"]}
    assert reasons["J2"].startswith("SMILES failed standardization: unparsable SMILES")
    assert reasons["J3"] == "the compound map has no structure for it"
    assert set(reasons) == {"J2", "J3"}  # J1 inline, J4 by its InChIKey, the unnamed well is a control
    p = res.profiles.set_index("Metadata_Well")
    assert p.loc["A04", "Metadata_Identity"] == "inchikey" and p.loc["A05", "Metadata_ControlType"] == "negcon"
    plain = import_profiles(table.drop(columns=["Metadata_SMILES", "Metadata_InChIKey"]), source="import:t")
    assert {u["reason"] for u in plain.summary()["unjoined"]} == {
        "no SMILES, InChI or InChIKey in the file, and no --compound-map given"}
    with pytest.raises(ProfileImportError, match="shares no identifier"):
        import_profiles(table, source="import:t", compound_map=pd.DataFrame({"other": ["x"], "smiles": ["C"]}),
                        map_roles={"smiles": "smiles"})
    with pytest.raises(ProfileImportError, match="no feature columns"):
        import_profiles(table[["Metadata_Plate", "Metadata_Well"]], source="import:t")
