"""Tests of pipeline.chem.rules (the standardization rule list) and pipeline.chem.salts."""

from __future__ import annotations

import pytest
from rdkit import Chem

from pipeline.chem import rules
from pipeline.chem.rules import RULES, StandardizationError, break_alkali_bonds, kekulize, normalize
from pipeline.chem.salts import COUNTERIONS, SOLVENTS, fragment_key, salt_dictionary, strip_salts
from pipeline.chem.standardize import standardize_smiles


def _raw(smiles: str) -> Chem.Mol:
    return Chem.MolFromSmiles(smiles, sanitize=False)


def test_rules_are_the_documented_steps_in_order() -> None:
    assert [r.__name__ for r in RULES] == ["clear_substance_groups", "kekulize", "remove_hydrogens",
                                           "break_alkali_bonds", "apply_normalizations", "neutralize"]


def test_normalize_copies_and_applies_every_rule() -> None:
    mol = _raw("[O-][N+](=O)c1ccccc1C(=O)O[Na]")  # aromatic, alkali salt, charge-separated nitro
    before = Chem.MolToSmiles(mol)
    out = normalize(mol)
    assert Chem.MolToSmiles(mol) == before  # the input is never modified
    assert Chem.BondType.AROMATIC not in {b.GetBondType() for b in out.GetBonds()}  # kekulized
    charges = sorted((a.GetSymbol(), a.GetFormalCharge()) for a in out.GetAtoms() if a.GetFormalCharge())
    assert charges == [("N", 1), ("Na", 1), ("O", -1), ("O", -1)]  # Na-O broken into an ion pair; nitro kept


def test_break_alkali_bonds_makes_an_ion_pair() -> None:
    mol = _raw("CC(=O)O[K]")
    mol.UpdatePropertyCache(strict=False)
    out = break_alkali_bonds(mol)
    assert len(Chem.GetMolFrags(out)) == 2
    assert {a.GetSymbol(): a.GetFormalCharge() for a in out.GetAtoms() if a.GetFormalCharge()} == {"K": 1, "O": -1}


def test_kekulize_failure_is_a_standardization_error() -> None:
    with pytest.raises(StandardizationError, match="kekulize"):
        kekulize(_raw("c1cccc1"))


def test_a_registered_rule_runs_on_every_molecule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a rule is one function plus one entry in RULES (the module docstring's recipe)."""
    def refuse_platinum(mol: Chem.Mol) -> Chem.Mol:
        if any(a.GetSymbol() == "Pt" for a in mol.GetAtoms()):
            raise StandardizationError("platinum complexes are not standardized")
        return mol

    cisplatin = "N.N.Cl[Pt]Cl"
    assert standardize_smiles(cisplatin).status == "ok"
    monkeypatch.setattr(rules, "RULES", (*RULES, refuse_platinum))
    r = standardize_smiles(cisplatin)
    assert (r.status, r.error) == ("failed", "platinum complexes are not standardized")
    assert standardize_smiles("CCO").smiles == "CCO"


def test_dictionary_entries_parse_and_are_normalized_like_inputs() -> None:
    d = salt_dictionary()
    assert len(SOLVENTS.split()) // 2 == 14 and len(COUNTERIONS.split()) // 2 > 100
    assert fragment_key(normalize(_raw("[Na+]"))) in d.counterions  # charges ignored for counter-ions
    assert fragment_key(normalize(_raw("O")), charges=True) in d.solvents
    hydroxide = _raw("[OH-]")
    hydroxide.UpdatePropertyCache(strict=False)
    assert fragment_key(hydroxide) == "O" and fragment_key(hydroxide, charges=True) not in d.solvents  # not water


@pytest.mark.parametrize(("smiles", "fragments", "parent"), [
    ("CCN.Cl", "all", "CCN"),  # counter-ion removed
    ("CCN.O.O", "all", "CCN"),  # solvent removed
    ("[Na+].[Cl-]", "all", "[Na+].[Cl-]"),  # all counter-ions: all kept (a balanced ion pair stays charged)
    ("O.O", "all", "O.O"),  # all solvents: the input
    ("CCCCCCO.CCN", "all", "CCCCCCO.CCN"),
    ("CCCCCCO.CCN", "largest", "CCCCCCO"),
    ("CCN.CCN.Cl", "all", "CCN"),  # identical fragments collapsed
    ("[2H]C([2H])([2H])c1ccccc1", "all", "Cc1ccccc1"),  # isotopes cleared
])
def test_strip_salts(smiles: str, fragments: str, parent: str) -> None:
    out = strip_salts(normalize(_raw(smiles)), fragments=fragments)
    Chem.SanitizeMol(out)
    assert Chem.MolToSmiles(out) == Chem.MolToSmiles(Chem.MolFromSmiles(parent))
