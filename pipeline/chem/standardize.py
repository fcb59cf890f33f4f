"""Compound standardization: input records -> standardized parent structures.

The reference behaviour is the ChEMBL structure pipeline (``standardize_mol`` followed by
``get_parent_mol``), re-implemented on :mod:`rdkit.Chem.MolStandardize` with its own salt and
solvent dictionary:

1. parse without sanitization (so fixable inputs such as pentavalent nitro groups survive),
   drop substance groups, kekulize, remove explicit hydrogens;
2. break alkali-metal--O/N bonds into ion pairs, apply the functional-group normalizations
   (RDKit's MolVS set: nitro, N-oxide, azide, diazo, sulfoxide ...) and neutralize charges
   where a neutral form exists (quaternary ammonium stays charged);
3. keep the parent: isotopes cleared, solvent fragments removed (all of them solvents: keep
   the input), then counter-ion fragments removed (all of them counter-ions: keep them all,
   the ChEMBL edge case); identical remaining fragments are collapsed; the parent is
   neutralized again;
4. sanitize; optionally canonicalize the tautomer (off by default, as in ChEMBL);
5. canonical isomeric SMILES, standard InChI and InChIKey.

Stereochemistry is kept. Per-molecule functions raise :class:`StandardizationError`; the
table-level functions turn it into ``Status``/``Error`` columns and never drop a row.
"""

from __future__ import annotations

import contextlib
import re
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
import pandas as pd
from rdkit import Chem, rdBase
from rdkit.Chem.MolStandardize import rdMolStandardize
from rdkit.Chem.Scaffolds import MurckoScaffold

from pipeline.ingest.pool import pool_context, process_pool

__all__ = [
    "StandardizationError",
    "StandardizedCompound",
    "FragmentMode",
    "RECORD_COLUMNS",
    "quiet_rdkit",
    "standardize_mol",
    "standardize_smiles",
    "standardize_table",
    "standardize_stream",
    "merge_parents",
    "well_compounds",
    "wells_without_compounds",
    "CompoundsOutOfDate",
]

#: How the parent is chosen among the fragments left after removing solvents and counter-ions:
#: ``"all"`` keeps every remaining fragment (ChEMBL), ``"largest"`` keeps the largest one
#: (most heavy atoms, organic preferred).
FragmentMode = Literal["all", "largest"]
_FRAGMENT_MODES = ("all", "largest")

#: Columns every input-record frame must have (``Error`` is optional: a reader's failure).
RECORD_COLUMNS: tuple[str, ...] = ("Metadata_Source", "Metadata_CompoundID", "Input_SMILES")
_OUTPUT_COLUMNS = (
    *RECORD_COLUMNS,
    "Status",
    "Error",
    "Metadata_InChIKey",
    "Metadata_SMILES",
)


class StandardizationError(ValueError):
    """A molecule cannot be standardized; the message is the reason."""


@dataclass(frozen=True)
class StandardizedCompound:
    """Outcome of standardizing one SMILES.

    Attributes
    ----------
    smiles : str or None
        Canonical isomeric SMILES of the parent; None on failure.
    inchikey, inchi : str or None
        Standard InChIKey / InChI of the parent; None on failure.
    status : {'ok', 'failed'}
    error : str or None
        Reason for failure; None when ``status == 'ok'``.
    """

    smiles: str | None
    inchikey: str | None
    inchi: str | None
    status: Literal["ok", "failed"]
    error: str | None

    @classmethod
    def failed(cls, reason: str) -> StandardizedCompound:
        return cls(None, None, None, "failed", reason)


# ---------------------------------------------------------------------------------------------
# RDKit logging
# ---------------------------------------------------------------------------------------------

_LOG_STAMP = re.compile(r"^\[\d\d:\d\d:\d\d\]\s*")


@contextlib.contextmanager
def quiet_rdkit() -> Iterator[rdBase.CaptureErrorLog]:
    """Silence RDKit's log while the block runs, capturing its error messages.

    Yields the ``rdBase.CaptureErrorLog`` whose ``messages`` hold what RDKit reported, so
    callers can turn a failure into a reason instead of printing it.
    """
    with rdBase.BlockLogs(), rdBase.CaptureErrorLog() as capture:
        yield capture


def _last_message(capture: rdBase.CaptureErrorLog) -> str | None:
    lines = [_LOG_STAMP.sub("", ln).strip() for ln in capture.messages.splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else None


# ---------------------------------------------------------------------------------------------
# Counter-ion and solvent dictionary (written for cmcl; matched ignoring charges, hydrogens,
# isotopes and stereo, after the same normalization as the input)
# ---------------------------------------------------------------------------------------------

_SOLVENTS = """
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

_COUNTERIONS = """
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


def _fragment_key(frag: Chem.Mol, *, charges: bool = False) -> str:
    """Identity of a fragment's heavy-atom graph ignoring hydrogens, isotopes and stereo.

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
class _Dictionary:
    solvents: frozenset[str]  # keys with charges
    counterions: frozenset[str]  # keys without charges
    tartrate: str
    largest: int  # heavy atoms of the largest entry


@cache
def _dictionary() -> _Dictionary:
    def normalized(smiles: str) -> Chem.Mol:
        return _normalized(Chem.MolFromSmiles(smiles, sanitize=False))

    solvents = [normalized(smi) for _, smi in _entries(_SOLVENTS)]
    counterions = [normalized(smi) for _, smi in _entries(_COUNTERIONS)]
    return _Dictionary(
        solvents=frozenset(_fragment_key(m, charges=True) for m in solvents),
        counterions=frozenset(_fragment_key(m) for m in counterions),
        tartrate=_fragment_key(normalized("OC(=O)C(O)C(O)C(=O)O")),
        largest=max(m.GetNumAtoms() for m in solvents + counterions),
    )


# ---------------------------------------------------------------------------------------------
# Per-molecule standardization
# ---------------------------------------------------------------------------------------------

_ALKALI_BOND = Chem.MolFromSmarts("[Li,Na,K;+0]-[#7,#8;+0]")


@cache
def _normalizer() -> rdMolStandardize.Normalizer:
    return rdMolStandardize.Normalizer()


@cache
def _uncharger() -> rdMolStandardize.Uncharger:
    return rdMolStandardize.Uncharger(canonicalOrder=True)


@cache
def _tautomer_enumerator() -> rdMolStandardize.TautomerEnumerator:
    return rdMolStandardize.TautomerEnumerator()


def _neutralized(mol: Chem.Mol) -> Chem.Mol:
    out = _uncharger().uncharge(mol)
    out.UpdatePropertyCache(strict=False)
    return out


def _normalized(mol: Chem.Mol) -> Chem.Mol:
    """Kekulized, hydrogen-stripped, ion-separated, normalized, neutralized copy of ``mol``."""
    m = Chem.Mol(mol)
    m.UpdatePropertyCache(strict=False)
    Chem.ClearMolSubstanceGroups(m)
    try:
        Chem.Kekulize(m)
    except Chem.MolSanitizeException as exc:
        raise StandardizationError(str(exc).strip()) from None
    m = Chem.RemoveHs(m, sanitize=False)
    Chem.FastFindRings(m)
    if m.HasSubstructMatch(_ALKALI_BOND):
        m = Chem.RWMol(m)
        for metal, partner in m.GetSubstructMatches(_ALKALI_BOND):
            m.RemoveBond(metal, partner)
            m.GetAtomWithIdx(metal).SetFormalCharge(1)
            m.GetAtomWithIdx(partner).SetFormalCharge(-1)
        m = m.GetMol()
        m.UpdatePropertyCache(strict=False)
    m = _normalizer().normalize(m)
    return _neutralized(m)


def _neutral_smiles(frag: Chem.Mol) -> str:
    m = _neutralized(frag)
    Chem.SetAromaticity(m)
    return Chem.MolToSmiles(m)


def _parent(mol: Chem.Mol, fragments: FragmentMode) -> Chem.Mol:
    """Strip solvents and counter-ions (ChEMBL rules) and return the parent, uncharged.

    Free tartrate fragments lose their stereo tags, as in ChEMBL (counter-ion stereo is
    unreliable in registrations).
    """
    labelled = [atom for atom in mol.GetAtoms() if atom.GetIsotope()]
    for atom in labelled:
        atom.SetIsotope(0)
    if labelled:  # deuterium became plain explicit hydrogen
        mol = Chem.RemoveHs(mol, sanitize=False)
    d = _dictionary()
    frags = list(Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False))
    small = [f.GetNumAtoms() <= d.largest for f in frags]
    keys = [_fragment_key(f) if s else None for f, s in zip(frags, small)]
    for i, key in enumerate(keys):
        if key == d.tartrate:
            for atom in frags[i].GetAtoms():
                atom.SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
    if len(frags) == 1:
        mol = frags[0]
    else:
        solvent = [s and _fragment_key(f, charges=True) in d.solvents for f, s in zip(frags, small)]
        kept = [i for i in range(len(frags)) if not solvent[i]]
        if not kept:  # all solvents: keep the input
            kept = list(range(len(frags)))
        else:
            non_salt = [i for i in kept if keys[i] not in d.counterions]
            kept = non_salt or kept  # all counter-ions: keep them all
            unique = {_neutral_smiles(frags[i]) for i in kept}
            if len(unique) == 1:
                kept = kept[:1]
            elif fragments == "largest":
                kept = [_largest(frags, kept)]
        mol = frags[kept[0]]
        for i in kept[1:]:
            mol = Chem.CombineMols(mol, frags[i])
    if mol.GetNumAtoms() == 0:
        raise StandardizationError("no atoms after salt stripping")
    return _neutralized(mol)


def _largest(frags: list[Chem.Mol], candidates: list[int]) -> int:
    def rank(i: int) -> tuple[int, int, float, str]:
        f = frags[i]
        organic = any(a.GetAtomicNum() == 6 for a in f.GetAtoms())
        return (organic, f.GetNumAtoms(), sum(a.GetMass() for a in f.GetAtoms()), Chem.MolToSmiles(f))

    return max(candidates, key=rank)


def standardize_mol(
    mol: Chem.Mol,
    *,
    canonicalize_tautomer: bool = False,
    fragments: FragmentMode = "all",
) -> Chem.Mol:
    """Return the standardized parent of ``mol`` (ChEMBL ``standardize_mol`` + ``get_parent_mol``).

    Parameters
    ----------
    mol : rdkit.Chem.Mol
        Input molecule, sanitized or not; it is copied, never modified.
    canonicalize_tautomer : bool, default False
        Replace the parent by RDKit's canonical tautomer (ChEMBL does not).
    fragments : {'all', 'largest'}, default 'all'
        Which of the fragments left after removing solvents and counter-ions form the parent:
        all of them (ChEMBL) or only the largest.

    Returns
    -------
    rdkit.Chem.Mol
        Sanitized parent molecule.

    Raises
    ------
    StandardizationError
        With the reason (RDKit's valence or kekulization message, 'no atoms after salt
        stripping', ...).
    ValueError
        If ``fragments`` is not a valid mode.
    """
    if fragments not in _FRAGMENT_MODES:
        raise ValueError(f"fragments={fragments!r}; valid modes: {', '.join(_FRAGMENT_MODES)}")
    if mol is None or mol.GetNumAtoms() == 0:
        raise StandardizationError("empty molecule")
    with quiet_rdkit() as capture:
        try:
            parent = _parent(_normalized(mol), fragments)
            Chem.SanitizeMol(parent)
            if canonicalize_tautomer:
                parent = _tautomer_enumerator().Canonicalize(parent)
        except Chem.MolSanitizeException as exc:
            raise StandardizationError(str(exc).strip()) from None
        except RuntimeError as exc:  # RDKit invariant violations surface as RuntimeError
            reason = _last_message(capture) or str(exc).strip()
            raise StandardizationError(reason) from None
    return parent


def standardize_smiles(
    smiles: str,
    *,
    canonicalize_tautomer: bool = False,
    fragments: FragmentMode = "all",
) -> StandardizedCompound:
    """Standardize one SMILES; never raises for a bad structure.

    Parameters
    ----------
    smiles : str
        Input SMILES (may contain salts, solvents, charges, stereo).
    canonicalize_tautomer : bool, default False
        See :func:`standardize_mol`.
    fragments : {'all', 'largest'}, default 'all'
        See :func:`standardize_mol`.

    Returns
    -------
    StandardizedCompound
        ``status='failed'`` with ``error`` set to 'empty SMILES', 'unparsable SMILES: <RDKit
        message>', RDKit's valence message, 'no atoms after salt stripping' or 'InChI
        generation failed'.

    Raises
    ------
    TypeError
        If ``smiles`` is not a string.
    """
    if not isinstance(smiles, str):
        raise TypeError(f"smiles must be a str, got {type(smiles).__name__}: {smiles!r}")
    if not smiles.strip():
        return StandardizedCompound.failed("empty SMILES")
    with quiet_rdkit() as capture:
        mol = Chem.MolFromSmiles(smiles.strip(), sanitize=False)
        if mol is None:
            detail = _last_message(capture)
            return StandardizedCompound.failed(
                "unparsable SMILES" + (f": {detail}" if detail else "")
            )
        if mol.GetNumAtoms() == 0:
            return StandardizedCompound.failed("empty SMILES")
        try:
            parent = standardize_mol(
                mol, canonicalize_tautomer=canonicalize_tautomer, fragments=fragments
            )
        except StandardizationError as exc:
            return StandardizedCompound.failed(str(exc))
        inchi = Chem.MolToInchi(parent)
        if not inchi:
            detail = _last_message(capture)
            return StandardizedCompound.failed(
                "InChI generation failed" + (f": {detail}" if detail else "")
            )
        key = Chem.InchiToInchiKey(inchi)
    return StandardizedCompound(Chem.MolToSmiles(parent), key, inchi, "ok", None)


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def _validate_records(records: pd.DataFrame) -> None:
    if not isinstance(records, pd.DataFrame):
        raise TypeError(f"records must be a pandas DataFrame, got {type(records).__name__}")
    missing = [c for c in RECORD_COLUMNS if c not in records.columns]
    if missing:
        raise ValueError(
            f"records lack column(s) {missing}; have {list(records.columns)}; "
            f"required: {list(RECORD_COLUMNS)}"
        )


def _standardize_batch(
    smiles: list[str], canonicalize_tautomer: bool, fragments: FragmentMode
) -> list[tuple[str | None, str | None, str | None, str, str | None]]:
    """Worker function: strings in, tuples out (RDKit objects never cross processes)."""
    out = []
    for s in smiles:
        r = standardize_smiles(s, canonicalize_tautomer=canonicalize_tautomer, fragments=fragments)
        out.append((r.smiles, r.inchikey, r.inchi, r.status, r.error))
    return out


def _assemble(
    records: pd.DataFrame,
    results: list[tuple[str | None, str | None, str | None, str, str | None]],
    todo: np.ndarray,
) -> pd.DataFrame:
    n = len(records)
    status = np.full(n, "failed", dtype=object)
    error = np.full(n, None, dtype=object)
    key = np.full(n, None, dtype=object)
    smi = np.full(n, None, dtype=object)
    if "Error" in records.columns:
        error[:] = records["Error"].to_numpy(dtype=object)
    idx = np.flatnonzero(todo)
    for i, (s, k, _inchi, st, err) in zip(idx, results, strict=True):
        status[i], error[i], key[i], smi[i] = st, err, k, s
    out = pd.DataFrame(
        {
            "Metadata_Source": records["Metadata_Source"].astype(str).to_numpy(),
            "Metadata_CompoundID": records["Metadata_CompoundID"].astype(str).to_numpy(),
            "Input_SMILES": records["Input_SMILES"].fillna("").astype(str).to_numpy(),
            "Status": status,
            "Error": error,
            "Metadata_InChIKey": key,
            "Metadata_SMILES": smi,
        }
    )
    for col in ("Error", "Metadata_InChIKey", "Metadata_SMILES"):
        out[col] = out[col].astype("string")
    if len(out) != n:  # pragma: no cover - guarded invariant
        raise RuntimeError(f"standardization lost rows: {n} in, {len(out)} out")
    return out


def _pending(records: pd.DataFrame) -> np.ndarray:
    """Rows to standardize: those without a reader error."""
    if "Error" not in records.columns:
        return np.ones(len(records), dtype=bool)
    return records["Error"].isna().to_numpy()


def _smiles_list(records: pd.DataFrame, todo: np.ndarray) -> list[str]:
    return records["Input_SMILES"].fillna("").astype(str).to_numpy()[todo].tolist()


def _executor(n_jobs: int) -> ProcessPoolExecutor:
    """Worker pool; forkserver (thread-safe, unlike fork) with RDKit and this module preloaded."""
    return process_pool(n_jobs, pool_context(["pipeline.chem.standardize", "pipeline.chem.graphs"]))


def _split(items: list[str], parts: int) -> list[list[str]]:
    bounds = np.linspace(0, len(items), parts + 1).astype(int)
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _check_n_jobs(n_jobs: int) -> None:
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive int, got {n_jobs!r}")


def standardize_table(
    records: pd.DataFrame,
    *,
    canonicalize_tautomer: bool = False,
    fragments: FragmentMode = "all",
    n_jobs: int = 1,
) -> pd.DataFrame:
    """Standardize every input record; return the ``compound_inputs`` table.

    Parameters
    ----------
    records : pandas.DataFrame
        Columns ``Metadata_Source``, ``Metadata_CompoundID``, ``Input_SMILES`` and optionally
        ``Error`` (a reader's failure: such rows are kept as failed without standardizing),
        as yielded by :func:`pipeline.chem.io.read_compounds`.
    canonicalize_tautomer, fragments
        See :func:`standardize_mol`.
    n_jobs : int, default 1
        Worker processes; 1 runs in this process.

    Returns
    -------
    pandas.DataFrame
        One row per input row, in input order, with the columns of ``compound_inputs``
        (``Status`` 'ok'/'failed', ``Error``, ``Metadata_InChIKey``, ``Metadata_SMILES``).

    Raises
    ------
    ValueError
        If a required column is missing or ``n_jobs`` < 1.
    """
    _validate_records(records)
    _check_n_jobs(n_jobs)
    records = records.reset_index(drop=True)
    todo = _pending(records)
    smiles = _smiles_list(records, todo)
    if n_jobs == 1 or len(smiles) < 2:
        results = _standardize_batch(smiles, canonicalize_tautomer, fragments)
    else:
        with _executor(n_jobs) as pool:
            futures = [
                pool.submit(_standardize_batch, part, canonicalize_tautomer, fragments)
                for part in _split(smiles, n_jobs * 4)
            ]
            results = [r for f in futures for r in f.result()]
    return _assemble(records, results, todo)


def standardize_stream(
    chunks: Iterable[pd.DataFrame],
    *,
    canonicalize_tautomer: bool = False,
    fragments: FragmentMode = "all",
    n_jobs: int = 2,
) -> Iterator[pd.DataFrame]:
    """Standardize record chunks as they arrive, yielding one ``compound_inputs`` chunk each.

    Each chunk is split among ``n_jobs`` worker processes (SMILES strings go out, strings come
    back); while the workers process chunk *i*, chunk *i+1* is read and queued, so at most two
    chunks are in memory and both cores stay busy.

    Parameters
    ----------
    chunks : iterable of pandas.DataFrame
        Record frames as for :func:`standardize_table`.
    canonicalize_tautomer, fragments
        See :func:`standardize_mol`.
    n_jobs : int, default 2
        Worker processes; 1 runs in this process without a pool.

    Yields
    ------
    pandas.DataFrame
        The ``compound_inputs`` rows of each input chunk, in order.
    """
    _check_n_jobs(n_jobs)
    if n_jobs == 1:
        for chunk in chunks:
            yield standardize_table(
                chunk, canonicalize_tautomer=canonicalize_tautomer, fragments=fragments
            )
        return
    with _executor(n_jobs) as pool:
        queue: deque[tuple[pd.DataFrame, np.ndarray, list[Future]]] = deque()
        for chunk in chunks:
            _validate_records(chunk)
            chunk = chunk.reset_index(drop=True)
            todo = _pending(chunk)
            futures = [
                pool.submit(_standardize_batch, part, canonicalize_tautomer, fragments)
                for part in _split(_smiles_list(chunk, todo), n_jobs * 2)
            ]
            queue.append((chunk, todo, futures))
            if len(queue) > 1:
                yield _collect(*queue.popleft())
        while queue:
            yield _collect(*queue.popleft())


def _collect(chunk: pd.DataFrame, todo: np.ndarray, futures: list[Future]) -> pd.DataFrame:
    return _assemble(chunk, [r for f in futures for r in f.result()], todo)


def _scaffold(mol: Chem.Mol) -> str:
    if mol.GetRingInfo().NumRings() == 0:
        return ""
    return Chem.MolToSmiles(MurckoScaffold.GetScaffoldForMol(mol))


def merge_parents(inputs: pd.DataFrame) -> pd.DataFrame:
    """Merge standardized inputs by parent InChIKey; return the ``compounds`` table.

    Parameters
    ----------
    inputs : pandas.DataFrame
        A ``compound_inputs`` table (from :func:`standardize_table`); failed rows are skipped.

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
                    "Metadata_Scaffold": _scaffold(mol),
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


# --------------------------------------------------------------------------------------------
# wells -> compounds
# --------------------------------------------------------------------------------------------
_WELL_KEY = ["Metadata_Plate", "Metadata_Well"]


class CompoundsOutOfDate(ValueError):
    """Plate-map wells name structures the compound table has not standardized yet."""


def _named_wells(platemap: pd.DataFrame) -> pd.DataFrame:
    smiles = platemap["Metadata_SMILES"]
    return platemap[smiles.notna() & (smiles.astype(str).str.strip() != "")]


def well_compounds(platemap: pd.DataFrame, inputs: pd.DataFrame) -> pd.DataFrame:
    """The compound identity of every plate-map well that names a structure.

    Each such well became one input record of its plate (``Metadata_Source`` =
    ``platemap:<plate>``, ``Input_SMILES`` = the well's SMILES, as
    :func:`flows.compounds.collect_records` builds them); the well takes the parent InChIKey
    its plate's record standardized to.

    Parameters
    ----------
    platemap : DataFrame
        Rows of the ``platemap`` table (all plates).
    inputs : DataFrame
        Rows of the ``compound_inputs`` table (:func:`standardize_table` output).

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
    src = inputs[inputs["Metadata_Source"].astype(str).str.startswith("platemap:")]
    records = pd.DataFrame({"Metadata_Plate": src["Metadata_Source"].astype(str).str[len("platemap:"):],
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
