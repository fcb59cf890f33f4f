"""The hidden structure -> morphology rule of the synthetic screen.

:func:`phenotype_from_smiles` maps a molecule (RDKit descriptors, substructure counts, hashed
Morgan counts) to morphology parameters (:class:`Phenotype`); similar structures get similar
phenotypes. :func:`effective_phenotype` applies a Hill dose response.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import Crippen, rdFingerprintGenerator, rdMolDescriptors

__all__ = [
    "DMSO",
    "POSITIVE_CONTROL_ID",
    "POSITIVE_CONTROL_SMILES",
    "POSITIVE_CONTROL",
    "Phenotype",
    "phenotype_from_smiles",
    "effective_phenotype",
    "hill",
]


@dataclass(frozen=True)
class Phenotype:
    """Morphology parameters of a treatment; :data:`DMSO` (all defaults) is neutral.

    The morphology fields describe the effect at saturating concentration; use
    :func:`effective_phenotype` to apply a concentration. :func:`render_field` uses the
    morphology fields as given.

    Attributes
    ----------
    potency : float
        Magnitude of the effect in [0, 1] (already folded into the morphology fields; kept as
        a summary). Near 0 for inactive compounds.
    ec50_um : float
        Concentration (uM) of half-maximal effect.
    hill_slope : float
        Hill coefficient of the dose response.
    toxicity : float
        Fraction of cells lost, in [0, 0.9].
    nuclear_area : float
        Multiplier of nuclear area (1 neutral).
    dna_intensity, er_intensity, rna_intensity, agp_intensity, mito_intensity : float
        Per-channel intensity multipliers (1 neutral).
    texture : float
        Extra granularity of DNA, ER and RNA staining, >= 0 (0 neutral).
    mito_fragmentation : float
        Shift of mitochondria from filaments to puncta, in [0, 1] (0 neutral).
    cell_size : float
        Multiplier of the cytoplasm's radius (1 neutral).
    """

    potency: float = 0.0
    ec50_um: float = 10.0
    hill_slope: float = 1.5
    toxicity: float = 0.0
    nuclear_area: float = 1.0
    dna_intensity: float = 1.0
    er_intensity: float = 1.0
    rna_intensity: float = 1.0
    agp_intensity: float = 1.0
    mito_intensity: float = 1.0
    texture: float = 0.0
    mito_fragmentation: float = 0.0
    cell_size: float = 1.0

    #: Multiplicative fields (interpolated geometrically towards 1).
    _SCALES = (
        "nuclear_area",
        "dna_intensity",
        "er_intensity",
        "rna_intensity",
        "agp_intensity",
        "mito_intensity",
        "cell_size",
    )
    #: Additive fields (interpolated linearly towards 0).
    _SHIFTS = ("toxicity", "texture", "mito_fragmentation")

    def as_vector(self) -> np.ndarray:
        """Morphology as a (10,) float64 vector: log of the scales, then the shifts; 0 = DMSO."""
        return np.array(
            [math.log(getattr(self, f)) for f in self._SCALES]
            + [getattr(self, f) for f in self._SHIFTS]
        )

    def magnitude(self) -> float:
        """Euclidean norm of :meth:`as_vector` (0 for DMSO)."""
        return float(np.linalg.norm(self.as_vector()))


#: The neutral phenotype of a DMSO (vehicle) well.
DMSO = Phenotype()
#: Positive control: doxorubicin (ChEMBL53463), a strong cytotoxic with a fixed phenotype.
POSITIVE_CONTROL_ID = "CHEMBL53463"
POSITIVE_CONTROL_SMILES = (
    "COc1cccc2c1C(=O)c1c(O)c3c(c(O)c1C2=O)C[C@@](O)(C(=O)CO)C[C@@H]3O[C@H]1C[C@H](N)[C@H](O)[C@H](C)O1"
)
#: Phenotype of the positive control (fixed, not derived from its structure).
POSITIVE_CONTROL = Phenotype(
    potency=1.0,
    ec50_um=0.1,
    hill_slope=2.0,
    toxicity=0.55,
    nuclear_area=1.7,
    dna_intensity=1.6,
    er_intensity=0.6,
    rna_intensity=1.9,
    agp_intensity=1.5,
    mito_intensity=0.55,
    texture=0.9,
    mito_fragmentation=0.8,
    cell_size=1.35,
)


def hill(concentration: float, ec50_um: float, slope: float) -> float:
    """Fraction of maximal effect, ``c**n / (c**n + ec50**n)``; 0 for ``c <= 0``."""
    if concentration <= 0:
        return 0.0
    return float(1.0 / (1.0 + (ec50_um / concentration) ** slope))


def effective_phenotype(phenotype: Phenotype, concentration: float) -> Phenotype:
    """Phenotype at ``concentration`` (uM): morphology moved towards DMSO by the Hill factor.

    Scales are interpolated geometrically (``scale ** f``), shifts linearly (``shift * f``) with
    ``f = hill(concentration, phenotype.ec50_um, phenotype.hill_slope)``; ``potency`` becomes
    ``potency * f``.
    """
    f = hill(concentration, phenotype.ec50_um, phenotype.hill_slope)
    changes = {k: getattr(phenotype, k) ** f for k in Phenotype._SCALES}
    changes.update({k: getattr(phenotype, k) * f for k in Phenotype._SHIFTS})
    changes["potency"] = phenotype.potency * f
    return dataclasses.replace(phenotype, **changes)


_BASIC_AMINE = Chem.MolFromSmarts("[NX3;!$(N-C=[O,S,N]);!$(N-a);!$(N-[S,P]=O);!$(N#*);!$(N=*)]")
_ACID = Chem.MolFromSmarts("[CX3](=O)[OX1H0-,OX2H1]")
_HALOGEN = Chem.MolFromSmarts("[F,Cl,Br,I]")
_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=64)
# Fixed "biology": random but frozen weights (seeded), never exposed.
_W_RNG = np.random.default_rng(0xC311)
_W_MORPH = _W_RNG.normal(0.0, 1.0, (10, 10 + 6))
_W_MORGAN = _W_RNG.normal(0.0, 1.0, (6, 64))
_W_ACT = np.array([0.9, -0.6, 0.2, 0.5, 0.35, 0.6, -0.25, 0.0, -0.3, 0.1])
_W_ACT_MORGAN = _W_RNG.normal(0.0, 0.45, 6)
_ACT_THRESHOLD = 0.6  # ~42 % of the shipped library is near-inactive at 10 uM
# Morphology amplitudes per output (log-scales first, then shifts).
_AMPLITUDE = np.array([0.45, 0.35, 0.5, 0.5, 0.5, 0.5, 0.3, 0.0, 0.8, 0.7])


def _largest_fragment(mol: Chem.Mol) -> Chem.Mol:
    frags = Chem.GetMolFrags(mol, asMols=True)
    return max(frags, key=lambda f: (f.GetNumHeavyAtoms(), Chem.MolToSmiles(f)))


def _features(mol: Chem.Mol) -> tuple[np.ndarray, np.ndarray]:
    """(10,) standardized descriptors and (6,) projected Morgan counts of a parent molecule."""
    logp = Crippen.MolLogP(mol)
    tpsa = rdMolDescriptors.CalcTPSA(mol)
    mw = rdMolDescriptors.CalcExactMolWt(mol)
    desc = np.array(
        [
            (logp - 2.5) / 2.0,
            (tpsa - 80.0) / 50.0,
            (mw - 350.0) / 150.0,
            (rdMolDescriptors.CalcNumAromaticRings(mol) - 1.7) / 1.2,
            min(len(mol.GetSubstructMatches(_HALOGEN)), 4) / 1.5 - 0.4,
            min(len(mol.GetSubstructMatches(_BASIC_AMINE)), 3) - 0.6,
            min(len(mol.GetSubstructMatches(_ACID)), 2) - 0.2,
            (rdMolDescriptors.CalcNumRotatableBonds(mol) - 5.0) / 4.0,
            (rdMolDescriptors.CalcNumHBD(mol) - 2.0) / 1.5,
            (rdMolDescriptors.CalcFractionCSP3(mol) - 0.4) / 0.25,
        ]
    )
    counts = np.asarray(_MORGAN.GetCountFingerprintAsNumPy(mol), dtype=float)
    morgan = _W_MORGAN @ counts / max(1.0, math.sqrt(float(counts.sum())))
    return np.clip(desc, -3.0, 3.0), np.tanh(morgan / 2.0)


@functools.lru_cache(maxsize=4096)
def phenotype_from_smiles(smiles: str) -> Phenotype:
    """Hidden, deterministic morphology of a compound (at saturating concentration).

    The largest fragment is used (counter-ions are ignored). Descriptors (logP, TPSA, mass,
    aromatic rings, halogens, basic amines, carboxylic acids, rotatable bonds, H-bond donors,
    Fsp3) and hashed Morgan counts are mapped through fixed random weights to a potency and to
    ten morphology directions; the morphology is then scaled by the potency, so inactive
    compounds look like DMSO.

    Parameters
    ----------
    smiles : str
        Any SMILES RDKit parses.

    Returns
    -------
    Phenotype
        Saturating-concentration phenotype; apply :func:`effective_phenotype` for a dose.

    Raises
    ------
    ValueError
        If ``smiles`` is empty or RDKit cannot parse it.
    """
    blocker = rdBase.BlockLogs()
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    del blocker
    if mol is None or mol.GetNumAtoms() == 0:
        raise ValueError(f"cannot derive a phenotype: RDKit cannot parse SMILES {smiles!r}")
    desc, morgan = _features(_largest_fragment(mol))
    score = float(_W_ACT @ desc + _W_ACT_MORGAN @ morgan) / 2.0
    potency = 1.0 / (1.0 + math.exp(-(score - _ACT_THRESHOLD) / 0.12))
    direction = np.tanh(_W_MORPH @ np.concatenate([desc, morgan]) / 3.0)
    vec = potency * _AMPLITUDE * direction
    # cationic amphiphilic and lipophilic compounds are the toxic ones
    tox = 1.0 / (1.0 + math.exp(-(1.3 * desc[0] + 0.8 * desc[5] + 0.4 * desc[4] - 1.2)))
    ec50 = float(np.clip(10.0 ** (0.6 - 0.45 * desc[0] - 0.3 * morgan[0]), 0.05, 100.0))
    return Phenotype(
        potency=potency,
        ec50_um=ec50,
        hill_slope=1.0 + 0.5 * (1.0 + math.tanh(desc[7])),
        toxicity=float(np.clip(potency * 0.6 * tox, 0.0, 0.9)),
        nuclear_area=math.exp(vec[0]),
        dna_intensity=math.exp(vec[1]),
        er_intensity=math.exp(vec[2]),
        rna_intensity=math.exp(vec[3]),
        agp_intensity=math.exp(vec[4]),
        mito_intensity=math.exp(vec[5]),
        cell_size=math.exp(vec[6]),
        texture=float(abs(vec[8])),
        mito_fragmentation=float(np.clip(abs(vec[9]), 0.0, 1.0)),
    )
