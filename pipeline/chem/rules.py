"""Standardization rules: the steps that turn a parsed input into its normalized, neutral form.

:func:`normalize` copies the molecule and applies :data:`RULES` in order; it is step 1-2 of
:func:`pipeline.chem.standardize.standardize_mol` (then come the salt and solvent stripping of
:mod:`pipeline.chem.salts`, sanitization and the optional canonical tautomer). The counter-ion
and solvent dictionary is normalized by the same rules, so a new rule applies to both sides of
every salt match.

Adding a rule
-------------
Write a function that takes the working molecule and returns the molecule to go on with (it may
change its argument in place: :func:`normalize` hands every rule a private copy), raising
:class:`StandardizationError` with a one-line reason when the molecule cannot be standardized,
then add it to :data:`RULES` where it belongs in the order::

    def drop_dative_bonds(mol: Chem.Mol) -> Chem.Mol:
        \"\"\"Turn dative bonds into single bonds.\"\"\"
        for bond in mol.GetBonds():
            if bond.GetBondType() == Chem.BondType.DATIVE:
                bond.SetBondType(Chem.BondType.SINGLE)
        return mol

    RULES = (clear_substance_groups, kekulize, remove_hydrogens, drop_dative_bonds, ...)

A rule changes every standardized structure it touches: the compounds stage's fingerprint covers
this module's code, so the next ``cmcl compounds`` standardizes every store's records again.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from rdkit import Chem
from rdkit.Chem.MolStandardize import rdMolStandardize

__all__ = [
    "StandardizationError",
    "Rule",
    "RULES",
    "normalize",
    "neutralize",
    "clear_substance_groups",
    "kekulize",
    "remove_hydrogens",
    "break_alkali_bonds",
    "apply_normalizations",
]


class StandardizationError(ValueError):
    """A molecule cannot be standardized; the message is the reason."""


#: A standardization rule: the working molecule in, the molecule to go on with out.
Rule = Callable[[Chem.Mol], Chem.Mol]

_ALKALI_BOND = Chem.MolFromSmarts("[Li,Na,K;+0]-[#7,#8;+0]")


@cache
def _normalizer() -> rdMolStandardize.Normalizer:
    return rdMolStandardize.Normalizer()


@cache
def _uncharger() -> rdMolStandardize.Uncharger:
    return rdMolStandardize.Uncharger(canonicalOrder=True)


def clear_substance_groups(mol: Chem.Mol) -> Chem.Mol:
    """Drop substance groups (SRUs, brackets of mixtures): they do not survive the other rules."""
    Chem.ClearMolSubstanceGroups(mol)
    return mol


def kekulize(mol: Chem.Mol) -> Chem.Mol:
    """Kekulize in place.

    Raises
    ------
    StandardizationError
        With RDKit's message when the aromatic system cannot be kekulized.
    """
    try:
        Chem.Kekulize(mol)
    except Chem.MolSanitizeException as exc:
        raise StandardizationError(str(exc).strip()) from None
    return mol


def remove_hydrogens(mol: Chem.Mol) -> Chem.Mol:
    """Explicit hydrogens removed (without sanitizing) and ring information rebuilt."""
    mol = Chem.RemoveHs(mol, sanitize=False)
    Chem.FastFindRings(mol)
    return mol


def break_alkali_bonds(mol: Chem.Mol) -> Chem.Mol:
    """Covalent Li/Na/K-O and -N bonds broken into ion pairs (``[Na]OC(=O)C`` -> ``[Na+].[O-]C(=O)C``),
    so the metal becomes a counter-ion fragment."""
    if not mol.HasSubstructMatch(_ALKALI_BOND):
        return mol
    m = Chem.RWMol(mol)
    for metal, partner in m.GetSubstructMatches(_ALKALI_BOND):
        m.RemoveBond(metal, partner)
        m.GetAtomWithIdx(metal).SetFormalCharge(1)
        m.GetAtomWithIdx(partner).SetFormalCharge(-1)
    out = m.GetMol()
    out.UpdatePropertyCache(strict=False)
    return out


def apply_normalizations(mol: Chem.Mol) -> Chem.Mol:
    """RDKit's functional-group normalizations (the MolVS set: nitro, N-oxide, azide, diazo,
    sulfoxide, ...)."""
    return _normalizer().normalize(mol)


def neutralize(mol: Chem.Mol) -> Chem.Mol:
    """Charges neutralized where a neutral form exists (quaternary ammonium stays charged);
    a new molecule, property cache updated without sanitizing."""
    out = _uncharger().uncharge(mol)
    out.UpdatePropertyCache(strict=False)
    return out


#: The rules :func:`normalize` applies, in order.
RULES: tuple[Rule, ...] = (
    clear_substance_groups,
    kekulize,
    remove_hydrogens,
    break_alkali_bonds,
    apply_normalizations,
    neutralize,
)


def normalize(mol: Chem.Mol) -> Chem.Mol:
    """Kekulized, hydrogen-stripped, ion-separated, normalized, neutralized copy of ``mol``:
    :data:`RULES` applied in order to a copy (``mol`` is never modified).

    Raises
    ------
    StandardizationError
        When a rule cannot apply (e.g. the aromatic system cannot be kekulized).
    """
    m = Chem.Mol(mol)
    m.UpdatePropertyCache(strict=False)
    for rule in RULES:
        m = rule(m)
    return m
