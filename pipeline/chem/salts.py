"""Salts and solvents: the counter-ion and solvent dictionary and the ChEMBL parent rules.

:func:`strip_salts` is step 3 of :func:`pipeline.chem.standardize.standardize_mol`: on a
molecule already normalized by :func:`pipeline.chem.rules.normalize` it clears isotopes, removes
solvent fragments (all of them solvents: the input is kept), then counter-ion fragments (all of
them counter-ions: they are all kept, the ChEMBL edge case), collapses identical remaining
fragments and neutralizes the parent again.

The dictionary below was written for cmcl. Fragments are matched ignoring charges, hydrogens,
isotopes and stereo, after the same normalization as the input (solvents match neutral
fragments only, so hydroxide is not water). To add a counter-ion or a solvent, add a line
``name SMILES`` to :data:`COUNTERIONS` or :data:`SOLVENTS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from rdkit import Chem

from pipeline.chem.choices import FragmentMode
from pipeline.chem.rules import StandardizationError, neutralize, normalize

__all__ = ["SOLVENTS", "COUNTERIONS", "SaltDictionary", "salt_dictionary", "fragment_key", "strip_salts"]

#: Solvents, one ``name SMILES`` per line (matched with charges: neutral fragments only).
SOLVENTS = """
water O
methanol CO
ethanol CCO
propan-2-ol CC(C)O
acetone CC(C)=O
dimethyl_sulfoxide CS(C)=O
dichloromethane ClCCl
chloroform ClC(Cl)Cl
ethyl_acetate CCOC(C)=O
acetonitrile CC#N
dimethylformamide CN(C)C=O
tetrahydrofuran C1CCOC1
diethyl_ether CCOCC
1,4-dioxane C1COCCO1
"""

#: Counter-ions, one ``name SMILES`` per line (matched without charges).
COUNTERIONS = """
water O
hydrogen [H]
lithium [Li]
sodium [Na]
potassium [K]
rubidium [Rb]
caesium [Cs]
magnesium [Mg]
calcium [Ca]
strontium [Sr]
barium [Ba]
zinc [Zn]
aluminium [Al]
silver [Ag]
bismuth [Bi]
fluoride F
chloride Cl
bromide Br
iodide I
ammonium N
sulfide S
hydrogen_peroxide OO
sulfate OS(=O)(=O)O
sulfite OS(=O)O
sulfamate NS(=O)(=O)O
phosphate OP(=O)(O)O
phosphite OP(=O)O
fluorophosphate OP(=O)(O)F
nitrate O[N+](=O)[O-]
perchlorate OCl(=O)(=O)=O
carbonate OC(=O)O
borate OB(O)O
tetrafluoroborate F[B-](F)(F)F
hexafluorophosphate F[P-](F)(F)(F)(F)F
thiocyanate SC#N
formate OC=O
acetate CC(=O)O
propionate CCC(=O)O
butyrate CCCC(=O)O
isobutyrate CC(C)C(=O)O
valerate CCCCC(=O)O
pivalate CC(C)(C)C(=O)O
hexanoate CCCCCC(=O)O
heptanoate CCCCCCC(=O)O
octanoate CCCCCCCC(=O)O
decanoate CCCCCCCCCC(=O)O
undecanoate CCCCCCCCCCC(=O)O
laurate CCCCCCCCCCCC(=O)O
palmitate CCCCCCCCCCCCCCCC(=O)O
stearate CCCCCCCCCCCCCCCCCC(=O)O
oleate CCCCCCCCC=CCCCCCCCC(=O)O
undecylenate C=CCCCCCCCCC(=O)O
trifluoroacetate OC(=O)C(F)(F)F
trichloroacetate OC(=O)C(Cl)(Cl)Cl
dichloroacetate OC(=O)C(Cl)Cl
glycolate OCC(=O)O
lactate CC(O)C(=O)O
oxalate OC(=O)C(=O)O
malonate OC(=O)CC(=O)O
succinate OC(=O)CCC(=O)O
glutarate OC(=O)CCCC(=O)O
adipate OC(=O)CCCCC(=O)O
maleate_fumarate OC(=O)C=CC(=O)O
malate OC(=O)CC(O)C(=O)O
tartrate OC(=O)C(O)C(O)C(=O)O
citrate OC(=O)CC(O)(CC(=O)O)C(=O)O
ketoglutarate OC(=O)CCC(=O)C(=O)O
gluconate OCC(O)C(O)C(O)C(O)C(=O)O
glucoheptonate OCC(O)C(O)C(O)C(O)C(O)C(=O)O
glucuronate OC1OC(C(=O)O)C(O)C(O)C1O
lactobionate OCC(O)C(OC1OC(CO)C(O)C(O)C1O)C(O)C(O)C(=O)O
ascorbate OCC(O)C1OC(=O)C(O)=C1O
aceturate CC(=O)NCC(=O)O
hippurate OC(=O)CNC(=O)c1ccccc1
benzoate OC(=O)c1ccccc1
salicylate OC(=O)c1ccccc1O
gentisate OC(=O)c1cc(O)ccc1O
mandelate OC(=O)C(O)c1ccccc1
cinnamate OC(=O)C=Cc1ccccc1
phenylacetate OC(=O)Cc1ccccc1
terephthalate OC(=O)c1ccc(C(=O)O)cc1
xinafoate OC(=O)c1ccc2ccccc2c1O
pamoate OC(=O)c1cc2ccccc2c(Cc2c(O)c(C(=O)O)cc3ccccc23)c1O
orotate OC(=O)c1cc(=O)[nH]c(=O)[nH]1
pyroglutamate OC(=O)C1CCC(=O)N1
acetylaminobenzoate CC(=O)Nc1ccc(C(=O)O)cc1
glutamate NC(CCC(=O)O)C(=O)O
aspartate NC(CC(=O)O)C(=O)O
lysine NCCCCC(N)C(=O)O
arginine NC(=N)NCCCC(N)C(=O)O
mesylate CS(=O)(=O)O
esylate CCS(=O)(=O)O
edisylate OS(=O)(=O)CCS(=O)(=O)O
isethionate OCCS(=O)(=O)O
triflate OS(=O)(=O)C(F)(F)F
besylate OS(=O)(=O)c1ccccc1
tosylate Cc1ccc(S(=O)(=O)O)cc1
closylate OS(=O)(=O)c1ccc(Cl)cc1
mesitylenesulfonate Cc1cc(C)c(S(=O)(=O)O)c(C)c1
napsylate OS(=O)(=O)c1ccc2ccccc2c1
napadisylate OS(=O)(=O)c1cccc2c(S(=O)(=O)O)cccc12
camsylate CC1(C)C2CCC1(CS(=O)(=O)O)C(=O)C2
cyclamate OS(=O)(=O)NC1CCCCC1
methylsulfate COS(=O)(=O)O
ethylsulfate CCOS(=O)(=O)O
laurylsulfate CCCCCCCCCCCCOS(=O)(=O)O
saccharin O=C1NS(=O)(=O)c2ccccc21
picrate Oc1c([N+](=O)[O-])cc([N+](=O)[O-])cc1[N+](=O)[O-]
meglumine CNCC(O)C(O)C(O)C(O)CO
tromethamine NC(CO)(CO)CO
ethanolamine NCCO
diethanolamine OCCNCCO
triethanolamine OCCN(CCO)CCO
deanol CN(C)CCO
diethylaminoethanol CCN(CC)CCO
aminomethylpropanol CC(C)(N)CO
epolamine OCCN1CCCC1
choline C[N+](C)(C)CCO
diethylamine CCNCC
triethylamine CCN(CC)CC
tert-butylamine CC(C)(C)N
ethylenediamine NCCN
piperazine C1CNCCN1
dicyclohexylamine C1CCC(NC2CCCCC2)CC1
benzathine C(CNCc1ccccc1)NCc1ccccc1
benethamine C(Cc1ccccc1)NCc1ccccc1
imidazole c1c[nH]cn1
dimethylaminopropanol CC(O)CN(C)C
propylene_glycol CC(O)CO
glycerol OCC(O)CO
glycerophosphate OCC(O)COP(=O)(O)O
glucarate OC(=O)C(O)C(O)C(O)C(O)C(=O)O
triphenylacetate OC(=O)C(c1ccccc1)(c1ccccc1)c1ccccc1
edetate OC(=O)CN(CCN(CC(=O)O)CC(=O)O)CC(=O)O
"""


def _entries(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.strip().splitlines():
        name, smiles = line.split()
        out.append((name, smiles))
    return out


def fragment_key(frag: Chem.Mol, *, charges: bool = False) -> str:
    """Identity of a fragment's heavy-atom graph ignoring hydrogens, isotopes and stereo:
    a non-isomeric SMILES.

    Charges are ignored too unless ``charges`` (solvents match neutral fragments only, so
    hydroxide is not water).
    """
    m = Chem.RWMol(frag)
    for atom in m.GetAtoms():
        if not charges:
            atom.SetFormalCharge(0)
        atom.SetNumExplicitHs(0)
        atom.SetNoImplicit(True)
        atom.SetIsotope(0)
        atom.SetNumRadicalElectrons(0)
    m.UpdatePropertyCache(strict=False)
    Chem.SetAromaticity(m)
    return Chem.MolToSmiles(m, isomericSmiles=False)


@dataclass(frozen=True)
class SaltDictionary:
    """The normalized dictionary: fragment keys (:func:`fragment_key`) to match against.

    Attributes
    ----------
    solvents : frozenset of str
        Keys of :data:`SOLVENTS`, with charges.
    counterions : frozenset of str
        Keys of :data:`COUNTERIONS`, without charges.
    tartrate : str
        Key of tartrate, whose free fragments lose their stereo tags.
    largest : int
        Heavy atoms of the largest entry (larger fragments are never looked up).
    """

    solvents: frozenset[str]
    counterions: frozenset[str]
    tartrate: str
    largest: int


@cache
def salt_dictionary() -> SaltDictionary:
    """:data:`SOLVENTS` and :data:`COUNTERIONS` normalized like an input (built once per process)."""
    def normalized(smiles: str) -> Chem.Mol:
        return normalize(Chem.MolFromSmiles(smiles, sanitize=False))

    solvents = [normalized(smi) for _, smi in _entries(SOLVENTS)]
    counterions = [normalized(smi) for _, smi in _entries(COUNTERIONS)]
    return SaltDictionary(
        solvents=frozenset(fragment_key(m, charges=True) for m in solvents),
        counterions=frozenset(fragment_key(m) for m in counterions),
        tartrate=fragment_key(normalized("OC(=O)C(O)C(O)C(=O)O")),
        largest=max(m.GetNumAtoms() for m in solvents + counterions),
    )


def _neutral_smiles(frag: Chem.Mol) -> str:
    m = neutralize(frag)
    Chem.SetAromaticity(m)
    return Chem.MolToSmiles(m)


def _largest(frags: list[Chem.Mol], candidates: list[int]) -> int:
    def rank(i: int) -> tuple[int, int, float, str]:
        f = frags[i]
        organic = any(a.GetAtomicNum() == 6 for a in f.GetAtoms())
        return (organic, f.GetNumAtoms(), sum(a.GetMass() for a in f.GetAtoms()), Chem.MolToSmiles(f))

    return max(candidates, key=rank)


def _clear_isotopes(mol: Chem.Mol) -> Chem.Mol:
    labelled = [atom for atom in mol.GetAtoms() if atom.GetIsotope()]
    for atom in labelled:
        atom.SetIsotope(0)
    if labelled:  # deuterium became plain explicit hydrogen
        mol = Chem.RemoveHs(mol, sanitize=False)
    return mol


def _kept_fragments(frags: list[Chem.Mol], keys: list[str | None], small: list[bool],
                    fragments: FragmentMode, d: SaltDictionary) -> list[int]:
    """Indices of the fragments that form the parent of a multi-fragment molecule."""
    solvent = [s and fragment_key(f, charges=True) in d.solvents for f, s in zip(frags, small)]
    kept = [i for i in range(len(frags)) if not solvent[i]]
    if not kept:  # all solvents: keep the input
        return list(range(len(frags)))
    non_salt = [i for i in kept if keys[i] not in d.counterions]
    kept = non_salt or kept  # all counter-ions: keep them all
    unique = {_neutral_smiles(frags[i]) for i in kept}
    if len(unique) == 1:
        return kept[:1]
    if fragments == "largest":
        return [_largest(frags, kept)]
    return kept


def strip_salts(mol: Chem.Mol, *, fragments: FragmentMode = "all") -> Chem.Mol:
    """Strip solvents and counter-ions (ChEMBL rules) and return the parent, uncharged.

    Free tartrate fragments lose their stereo tags, as in ChEMBL (counter-ion stereo is
    unreliable in registrations).

    Parameters
    ----------
    mol : rdkit.Chem.Mol
        A molecule normalized by :func:`pipeline.chem.rules.normalize` (its atoms' isotopes and
        the tartrate fragments' stereo tags are changed in place).
    fragments : {'all', 'largest'}, default 'all'
        Which of the fragments left after removing solvents and counter-ions form the parent
        (:data:`pipeline.chem.choices.FragmentMode`).

    Returns
    -------
    rdkit.Chem.Mol
        The parent, neutralized, not sanitized.

    Raises
    ------
    StandardizationError
        'no atoms after salt stripping'.
    """
    mol = _clear_isotopes(mol)
    d = salt_dictionary()
    frags = list(Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False))
    small = [f.GetNumAtoms() <= d.largest for f in frags]
    keys = [fragment_key(f) if s else None for f, s in zip(frags, small)]
    for i, key in enumerate(keys):
        if key == d.tartrate:
            for atom in frags[i].GetAtoms():
                atom.SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
    kept = [0] if len(frags) == 1 else _kept_fragments(frags, keys, small, fragments, d)
    mol = frags[kept[0]]
    for i in kept[1:]:
        mol = Chem.CombineMols(mol, frags[i])
    if mol.GetNumAtoms() == 0:
        raise StandardizationError("no atoms after salt stripping")
    return neutralize(mol)
