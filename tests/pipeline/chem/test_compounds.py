"""Tests of pipeline.chem.standardize: ChEMBL-grade standardization and parent merging."""

from __future__ import annotations

import pandas as pd
import pytest
from rdkit import Chem

from pipeline.chem.parents import merge_parents
from pipeline.chem.rules import StandardizationError
from pipeline.chem.standardize import (
    StandardizedCompound,
    standardize_mol,
    standardize_smiles,
    standardize_stream,
    standardize_table,
)
from pipeline.chem.library import load_compound_library
from pipeline.store.schema import conform, write_table


def _smiles(s: str) -> str:
    r = standardize_smiles(s)
    assert r.status == "ok", r.error
    return r.smiles


def _canon(s: str) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(s))


@pytest.mark.parametrize(
    ("given", "parent"),
    [
        ("CNCCC(Oc1ccccc1C)c1ccccc1.Cl", "CNCCC(Oc1ccccc1C)c1ccccc1"),  # HCl salt
        ("CC(C)[NH2+]CC(O)COc1cccc2ccccc12.[Cl-]", "CC(C)NCC(O)COc1cccc2ccccc12"),  # ionic HCl
        ("O=C([O-])Cc1ccccc1Nc1c(Cl)cccc1Cl.[Na+]", "O=C(O)Cc1ccccc1Nc1c(Cl)cccc1Cl"),  # Na salt
        ("C[N+](C)(C)CCOC(C)=O.[Cl-]", "CC(=O)OCC[N+](C)(C)C"),  # quaternary ammonium stays
        ("CN(=O)=O", "C[N+](=O)[O-]"),  # pentavalent nitro normalized
        ("O.O.O.CC(=O)Nc1ccc(O)cc1", "CC(=O)Nc1ccc(O)cc1"),  # hydrate
        ("CS(C)=O.CC(C)Cc1ccc(C(C)C(=O)O)cc1", "CC(C)Cc1ccc(C(C)C(=O)O)cc1"),  # DMSO solvate
        ("CCCC(CCC)C(=O)O.CCCC(CCC)C(=O)[O-].[Na+]", "CCCC(CCC)C(=O)O"),  # same parent twice
        ("[2H]C([2H])([2H])Oc1ccccc1", "COc1ccccc1"),  # isotope parent
    ],
)
def test_parent(given: str, parent: str) -> None:
    assert _smiles(given) == _canon(parent)


def test_all_salt_input_keeps_every_fragment() -> None:
    assert set(_smiles("[Na+].[Cl-]").split(".")) == {"[Na+]", "[Cl-]"}
    assert set(_smiles("CC(=O)[O-].[Na+]").split(".")) == {"CC(=O)[O-]", "[Na+]"}
    assert _smiles("CC(=O)O") == "CC(=O)O"  # acetic acid on its own is the compound
    assert _smiles("O") == "O"  # water on its own (all solvent) is kept


def test_stereo_preserved_and_distinguished() -> None:
    r, s = standardize_smiles("C[C@H](N)Cc1ccccc1.Cl"), standardize_smiles("C[C@@H](N)Cc1ccccc1")
    assert r.smiles == "C[C@H](N)Cc1ccccc1" and s.smiles == "C[C@@H](N)Cc1ccccc1"
    assert r.inchikey != s.inchikey
    assert _smiles("C/C=C/C(=O)O") != _smiles("C/C=C\\C(=O)O")


def test_tautomer_option() -> None:
    default = standardize_smiles("Oc1ccccn1")
    taut = standardize_smiles("Oc1ccccn1", canonicalize_tautomer=True)
    assert default.smiles == "Oc1ccccn1"  # off by default, as in ChEMBL
    assert taut.smiles == _canon("O=c1cccc[nH]1")


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("", "empty SMILES"),
        ("   ", "empty SMILES"),
        ("c1ccccc1C1CCC", "unparsable SMILES"),
        ("CC(C)(C)(C)C", "valence"),
        ("c1cccc1", "kekulize"),
    ],
)
def test_invalid_input_gives_reason(given: str, reason: str) -> None:
    r = standardize_smiles(given)
    assert r == StandardizedCompound(None, None, None, "failed", r.error)
    assert reason.lower() in r.error.lower()


def test_standardize_mol_copies_and_raises() -> None:
    mol = Chem.MolFromSmiles("CC(C)Cc1ccc(C(C)C(=O)[O-])cc1.[Na+]")
    before = Chem.MolToSmiles(mol)
    assert Chem.MolToSmiles(standardize_mol(mol)) == "CC(C)Cc1ccc(C(C)C(=O)O)cc1"
    assert Chem.MolToSmiles(mol) == before
    bad = Chem.MolFromSmiles("CC(C)(C)(C)C", sanitize=False)
    with pytest.raises(StandardizationError, match="valence"):
        standardize_mol(bad)
    with pytest.raises(ValueError, match="valid modes"):
        standardize_mol(mol, fragments="biggest")  # type: ignore[arg-type]


def test_largest_fragment_mode() -> None:
    mixture = "CCCCCCCCO.c1ccccc1CCN"
    assert "." in _smiles(mixture)
    assert standardize_smiles(mixture, fragments="largest").smiles == "CCCCCCCCO"


def _records(smiles: list[str], ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"Metadata_Source": "test.csv", "Metadata_CompoundID": ids, "Input_SMILES": smiles})


def test_table_keeps_every_row_and_merges_parents(tmp_path) -> None:
    records = _records(
        ["CC(=O)Nc1ccc(O)cc1", "CC(=O)Nc1ccc(O)cc1.Cl", "not a smiles", "", "OC(=O)c1ccccc1OC(C)=O"],
        ["A", "B", "C", "D", "E"],
    )
    records["Error"] = pd.array([None, None, None, "unreadable SD record 4", None], dtype="string")
    inputs = standardize_table(records)
    assert len(inputs) == len(records)
    assert inputs["Status"].tolist() == ["ok", "ok", "failed", "failed", "ok"]
    assert inputs.loc[3, "Error"] == "unreadable SD record 4"  # a reader's reason is kept
    assert inputs.loc[2, "Error"].startswith("unparsable SMILES")
    write_table(inputs, "compound_inputs", tmp_path / "ci.parquet")
    compounds = merge_parents(inputs)
    conform(compounds, "compounds")
    assert len(compounds) == 2
    para = compounds[compounds["Metadata_SMILES"] == "CC(=O)Nc1ccc(O)cc1"].iloc[0]
    assert list(para["Metadata_CompoundIDs"]) == ["A", "B"]
    assert para["Metadata_Scaffold"] == "c1ccccc1" and para["Num_HeavyAtoms"] == 11
    assert compounds["Num_HeavyAtoms"].dtype == "int32"
    acyclic = merge_parents(standardize_table(_records(["CCO.Cl"], ["X"])))
    assert acyclic["Metadata_Scaffold"].tolist() == [""]


def test_messy_library() -> None:
    lib = load_compound_library(messy=True)
    inputs = standardize_table(_records(lib["Metadata_SMILES"].tolist(), lib["Metadata_CompoundID"].tolist()))
    conform(inputs, "compound_inputs")
    assert len(inputs) == len(lib)
    failed = inputs[inputs["Status"] == "failed"]
    assert set(failed["Metadata_CompoundID"]) == {f"MESSY-BAD-0{i}" for i in range(1, 7)}
    assert failed["Error"].notna().all()
    compounds = merge_parents(inputs)
    conform(compounds, "compounds")
    ids = compounds["Metadata_CompoundIDs"].map(list)
    assert ["MESSY-DUP-01", "MESSY-DUP-02", "MESSY-SOL-01"] in ids.tolist()


def test_parallel_and_stream_match_serial() -> None:
    lib = load_compound_library().head(120)
    records = _records(lib["Metadata_SMILES"].tolist(), lib["Metadata_CompoundID"].tolist())
    serial = standardize_table(records)
    parallel = standardize_table(records, n_jobs=2)
    pd.testing.assert_frame_equal(serial, parallel)
    chunks = [records.iloc[i : i + 50] for i in range(0, len(records), 50)]
    streamed = pd.concat(list(standardize_stream(chunks, n_jobs=2)), ignore_index=True)
    pd.testing.assert_frame_equal(serial, streamed)


def test_agrees_with_chembl_structure_pipeline() -> None:
    csp = pytest.importorskip("chembl_structure_pipeline", reason="chembl_structure_pipeline not installed")
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    lib = load_compound_library()
    agree = total = 0
    for smiles in lib["Metadata_SMILES"]:
        ours = standardize_smiles(smiles)
        if ours.status != "ok":
            continue
        total += 1
        parent, _ = csp.get_parent_mol(csp.standardize_mol(Chem.MolFromSmiles(smiles, sanitize=False)))
        Chem.SanitizeMol(parent)
        agree += Chem.MolToInchiKey(parent) == ours.inchikey
    assert total == len(lib)
    assert agree / total >= 0.99, f"{agree}/{total} parent InChIKeys agree"
