"""Synthetic Cell Painting plates with a hidden structure -> morphology rule.

The generator stands in for a microscope and a compound screen so that cmcl can be built,
tested and demonstrated without real data. It has four layers:

1. :func:`phenotype_from_smiles`: a deterministic, hidden map from molecular structure (RDKit
   descriptors, substructure counts, hashed Morgan counts) to morphology parameters
   (:class:`Phenotype`). Similar structures get similar phenotypes; about 40 % of the shipped
   library is near-inactive at 10 uM. :func:`effective_phenotype` applies a Hill dose response.
2. :func:`design_plates`: plate maps (DMSO spread over the plate, positive controls,
   compounds spilling over plates, replicates on different plates).
3. :func:`render_field`: one 5-channel field (DNA, ER, RNA, AGP, Mito) plus its nuclei and cell
   label images, with camera offset, shot and read noise, illumination, debris, saturation and
   optional defocus. :func:`illumination_fields` gives the microscope's flat fields.
4. :func:`write_plate`: a plate folder in ImageXpress, Phenix/Harmony or LoadData layout, with
   ``platemap.csv``, ground truth and, optionally, deliberate file faults. :func:`generate` and
   :func:`generate_demo` are the entry points of the CLI.

All randomness flows from explicit seeds: a field's pixels depend only on
``(seed, plate_id, well, site)`` and the plate's illumination only on ``seed`` (one simulated
microscope), so results never depend on the order in which fields are generated, and the same
seed writes byte-identical files.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import uuid
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.ndimage as ndi
import tifffile
from rdkit import Chem, rdBase
from rdkit.Chem import Crippen, rdFingerprintGenerator, rdMolDescriptors
from scipy.spatial import cKDTree

from pipeline.plates import LAYOUTS, Layout
from pipeline.store import CHANNELS

__all__ = [
    "CHANNELS",
    "DARK_OFFSET",
    "DMSO",
    "POSITIVE_CONTROL_ID",
    "POSITIVE_CONTROL_SMILES",
    "POSITIVE_CONTROL",
    "FAULT_KINDS",
    "Phenotype",
    "phenotype_from_smiles",
    "effective_phenotype",
    "hill",
    "design_plates",
    "well_names",
    "illumination_fields",
    "render_field",
    "write_plate",
    "generate",
    "generate_demo",
]

#: Cell Painting channels in file order (``w1``..``w5`` / ``ch1``..``ch5``).
#: Camera dark offset in ADU, added to every pixel.
DARK_OFFSET: float = 100.0
#: Faults written by ``write_plate(..., faults=True)``, one of each.
FAULT_KINDS: tuple[str, ...] = (
    "truncated",
    "zero_bytes",
    "missing_channel",
    "wrong_dtype",
    "wrong_shape",
    "duplicate_site",
)

_PLATE_SHAPES: dict[int, tuple[int, int]] = {96: (8, 12), 384: (16, 24)}
_DEFAULT_DMSO: dict[int, int] = {96: 12, 384: 32}
_DEFAULT_POSCON: dict[int, int] = {96: 2, 384: 4}


# --------------------------------------------------------------------------------------------
# Phenotypes
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Plate design
# --------------------------------------------------------------------------------------------


def well_names(plate_format: Literal[96, 384]) -> list[str]:
    """Wells of a plate in row-major order, zero-padded (``A01`` .. ``P24``)."""
    rows, cols = _plate_shape(plate_format)
    return [f"{chr(65 + r)}{c + 1:02d}" for r in range(rows) for c in range(cols)]


def _plate_shape(plate_format: int) -> tuple[int, int]:
    if plate_format not in _PLATE_SHAPES:
        raise ValueError(f"plate_format must be one of {sorted(_PLATE_SHAPES)}, got {plate_format!r}")
    return _PLATE_SHAPES[plate_format]


def design_plates(
    library: pd.DataFrame,
    *,
    n_plates: int = 1,
    plate_format: Literal[96, 384] = 96,
    n_compounds: int | None = None,
    replicates: int = 1,
    concentrations: Sequence[float] = (10.0,),
    n_dmso: int | None = None,
    n_poscon: int | None = None,
    seed: int = 0,
) -> list[pd.DataFrame]:
    """Plate maps for a screen of ``library``.

    DMSO wells are spread over every row and over the columns, edges included; ``n_poscon``
    wells get :data:`POSITIVE_CONTROL_SMILES`; the remaining wells receive (compound,
    concentration) pairs. Each replicate occupies its own block of ``n_plates // replicates``
    plates, so replicates of a compound are on different plates; within a block the pairs are
    spread evenly over the plates (spill-over) and shuffled over the wells.

    Parameters
    ----------
    library : pandas.DataFrame
        Needs ``Metadata_CompoundID`` and ``Metadata_SMILES``; compounds are taken in row order
        (rows with the positive control's ID are skipped).
    n_plates : int
        Number of plates; must be a multiple of ``replicates``.
    plate_format : {96, 384}
        Wells per plate.
    n_compounds : int or None
        Compounds to screen; None fills the available wells (at most the library's size).
    replicates : int
        Copies of every (compound, concentration), each on a different plate.
    concentrations : sequence of float
        Concentrations in uM, each compound gets all of them.
    n_dmso, n_poscon : int or None
        DMSO and positive-control wells per plate; None: 12 and 2 (96-well), 32 and 4 (384).
    seed : int
        Seed of the well shuffle.

    Returns
    -------
    list of pandas.DataFrame
        One plate map per plate, rows in well order, only used wells, columns
        ``Metadata_Well``, ``Metadata_CompoundID``, ``Metadata_SMILES`` (None for DMSO),
        ``Metadata_Concentration`` (float uM, NaN for DMSO), ``Metadata_ControlType``
        (``negcon``, ``poscon`` or ``trt``).

    Raises
    ------
    ValueError
        If the columns are missing, an argument is out of range, or the design does not fit
        (the message gives the capacity).
    """
    missing = {"Metadata_CompoundID", "Metadata_SMILES"} - set(library.columns)
    if missing:
        raise ValueError(f"library lacks columns {sorted(missing)}; has {list(library.columns)}")
    rows, cols = _plate_shape(plate_format)
    n_dmso = _DEFAULT_DMSO[plate_format] if n_dmso is None else n_dmso
    n_poscon = _DEFAULT_POSCON[plate_format] if n_poscon is None else n_poscon
    concentrations = tuple(float(c) for c in concentrations)
    if n_plates < 1 or replicates < 1 or not concentrations or min(concentrations) <= 0:
        raise ValueError(
            f"need n_plates >= 1, replicates >= 1 and positive concentrations; got n_plates="
            f"{n_plates}, replicates={replicates}, concentrations={concentrations}"
        )
    if n_plates % replicates:
        raise ValueError(f"n_plates={n_plates} is not a multiple of replicates={replicates}")
    capacity = rows * cols - n_dmso - n_poscon
    if n_dmso < 0 or n_poscon < 0 or capacity < 0:
        raise ValueError(
            f"n_dmso={n_dmso} + n_poscon={n_poscon} exceed the {rows * cols} wells of a plate"
        )
    lib = library[library["Metadata_CompoundID"] != POSITIVE_CONTROL_ID]
    plates_per_rep = n_plates // replicates
    slots = plates_per_rep * capacity // len(concentrations)
    if n_compounds is None:
        n_compounds = min(len(lib), slots)
    if n_compounds > len(lib):
        raise ValueError(f"n_compounds={n_compounds} exceeds the library's {len(lib)} compounds")
    if n_compounds > slots:
        raise ValueError(
            f"design does not fit: {n_compounds} compounds x {len(concentrations)} "
            f"concentrations x {replicates} replicates need more than {n_plates} plates of "
            f"{capacity} treatment wells ({plate_format} wells - {n_dmso} DMSO - {n_poscon} "
            f"positive controls); at most {slots} compounds fit"
        )
    chosen = lib.iloc[:n_compounds]
    pairs = [
        (cid, smi, conc)
        for cid, smi in zip(chosen["Metadata_CompoundID"], chosen["Metadata_SMILES"])
        for conc in concentrations
    ]
    chunks = np.array_split(np.arange(len(pairs)), plates_per_rep)
    names = well_names(plate_format)
    maps = []
    for p in range(n_plates):
        rng = np.random.default_rng([seed, p, 0xD51])
        grid = np.zeros((rows, cols), dtype=np.int8)  # 0 free, 1 DMSO, 2 poscon
        for j in range(n_dmso):  # diagonal stride: every row, all columns incl. both edges
            r, c = (j + p) % rows, (j * 5 + p) % cols
            while grid[r, c]:
                c = (c + 1) % cols
            grid[r, c] = 1
        free = np.flatnonzero(grid.ravel() == 0)
        grid.ravel()[rng.choice(free, size=n_poscon, replace=False)] = 2
        free = rng.permutation(np.flatnonzero(grid.ravel() == 0))
        records = {}
        for idx in np.flatnonzero(grid.ravel() == 1):
            records[idx] = (None, None, np.nan, "negcon")
        for idx in np.flatnonzero(grid.ravel() == 2):
            records[idx] = (POSITIVE_CONTROL_ID, POSITIVE_CONTROL_SMILES, max(concentrations), "poscon")
        for idx, k in zip(free, chunks[p % plates_per_rep]):
            cid, smi, conc = pairs[k]
            records[idx] = (cid, smi, conc, "trt")
        order = sorted(records)
        maps.append(
            pd.DataFrame(
                {
                    "Metadata_Well": [names[i] for i in order],
                    "Metadata_CompoundID": pd.array([records[i][0] for i in order], dtype="string"),
                    "Metadata_SMILES": pd.array([records[i][1] for i in order], dtype="string"),
                    "Metadata_Concentration": np.array([records[i][2] for i in order], dtype=float),
                    "Metadata_ControlType": [records[i][3] for i in order],
                }
            )
        )
    return maps


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

#: Expected cells per (nucleus_radius ** 2) of field area, untreated.
_CELL_DENSITY = 1.0 / 32.0
#: Signal levels (ADU above offset) before illumination: nucleus DNA, ER, RNA, AGP, Mito.
_LEVELS = np.array([2400.0, 900.0, 700.0, 800.0, 1100.0])
#: Autofluorescent background (ADU above offset) per channel.
_BACKGROUND = np.array([40.0, 70.0, 55.0, 60.0, 45.0])
_READ_NOISE = 3.0
_GAIN = 1.0  # ADU per photo-electron


def illumination_fields(size: int, seed: int) -> np.ndarray:
    """Flat fields of the simulated microscope ``seed``.

    Each channel is a smooth vignetting (off-centre quadratic fall-off) times a linear
    gradient, different per channel.

    Returns
    -------
    (5, size, size) ndarray of float32
        Multiplicative fields, each with mean exactly 1 (to float32 precision), all > 0.
    """
    _check_size(size)
    rng = np.random.default_rng([seed, 0x111])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / max(size - 1, 1) - 0.5
    out = np.empty((len(CHANNELS), size, size), dtype=np.float32)
    for c in range(len(CHANNELS)):
        cy, cx = rng.uniform(-0.15, 0.15, 2)
        vignette = 1.0 - rng.uniform(0.25, 0.45) * ((yy - cy) ** 2 + (xx - cx) ** 2) / 0.5
        gy, gx = rng.uniform(-0.25, 0.25, 2)
        field = vignette * (1.0 + gy * yy + gx * xx)
        out[c] = field / field.mean()
    return out


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < 32:
        raise ValueError(f"size must be an integer >= 32, got {size!r}")


def _fourier_noise(size: int, seed: int, gain: np.ndarray) -> np.ndarray:
    """Periodic (size, size) float32 noise: white noise filtered by ``gain(|k|)``, unit std."""
    white = np.random.default_rng([0x7E57, size, seed]).standard_normal((size, size))
    out = np.fft.irfft2(np.fft.rfft2(white) * gain, s=(size, size)).astype(np.float32)
    return (out - out.mean()) / (out.std() + 1e-12)


@functools.lru_cache(maxsize=4)
def _texture_bank(size: int, s: float, radius: float) -> dict[str, np.ndarray]:
    """Periodic textures, computed once per (size, scale) with fixed seeds.

    Fields draw them with a random shift, flip and transpose (:func:`_draw`), which is much
    cheaper than filtering fresh noise for every field and keeps fields independent of the order
    in which they are generated.
    """
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.rfftfreq(size)[None, :]
    k2 = (2 * np.pi) ** 2 * (ky**2 + kx**2)

    def dog(s1: float, s2: float) -> np.ndarray:
        return np.exp(-k2 * s1**2 / 2) - np.exp(-k2 * s2**2 / 2)

    def smooth(length: float) -> np.ndarray:
        return np.exp(-k2 * length**2 / 2)

    ridge = np.clip(1.0 - np.abs(_fourier_noise(size, 3, dog(1.2 * s, 4.0 * s))) / 0.45, 0, 1) ** 2
    dots = (np.random.default_rng([0x7E57, size, 4]).random((size, size)) < 0.05).astype(float)
    sigma = 0.9 * s
    puncta = np.fft.irfft2(np.fft.rfft2(dots) * smooth(sigma), s=(size, size))
    bank = {
        "chromatin": _fourier_noise(size, 1, dog(0.8 * s, 2.5 * s)),
        "reticulum": _fourier_noise(size, 2, dog(1.0 * s, 3.0 * s)),
        "ridge": ridge.astype(np.float32),
        "puncta": (puncta * 2 * np.pi * sigma**2).astype(np.float32),
        "rough": _fourier_noise(size, 5, smooth(1.5 * s)),
        "limit": _fourier_noise(size, 6, smooth(1.2 * radius)),
    }
    for arr in bank.values():
        arr.setflags(write=False)
    return bank


def _draw(texture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A randomly shifted, flipped and transposed copy of a periodic texture."""
    dy, dx = rng.integers(0, texture.shape[0], 2)
    flip_y, flip_x, transpose = rng.random(3) < 0.5
    view = texture[:: -1 if flip_y else 1, :: -1 if flip_x else 1]
    view = view.T if transpose else view
    return np.roll(view, (int(dy), int(dx)), axis=(0, 1))


def _place_centres(
    rng: np.random.Generator, size: int, radius: float, n: int, n_nominal: float
) -> np.ndarray:
    """(n', 2) float centres (y, x): a jittered grid at nominal density, n sites kept, some pairs."""
    spacing = math.sqrt(size * size * 0.85 / max(n_nominal, 1.0))
    k = max(1, int(size // spacing))
    spacing = size / k
    gy, gx = np.mgrid[0:k, 0:k].reshape(2, -1).astype(float)
    sites = (np.stack([gy, gx], axis=1) + 0.5) * spacing
    sites += rng.uniform(-0.3, 0.3, sites.shape) * spacing + rng.uniform(0.0, spacing, 2)
    sites %= size  # random grid phase: no cell pattern fixed to the image frame
    n = min(n, len(sites))
    centres = sites[rng.choice(len(sites), size=n, replace=False)]
    if n >= 2:  # some touching pairs/clumps: pull ~12 % of cells next to their neighbour
        _, nn = cKDTree(centres).query(centres, k=2)
        movers = np.flatnonzero(rng.random(n) < 0.12)
        for i in movers:
            j = nn[i, 1]
            d = centres[i] - centres[j]
            dist = float(np.hypot(*d))
            if dist > 1e-6:
                centres[i] = centres[j] + d / dist * radius * rng.uniform(1.8, 2.2)
    return np.clip(centres, 1.0, size - 2.0)


def _impulses(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, w: np.ndarray) -> np.ndarray:
    img = np.zeros(shape, dtype=np.float32)
    yi = np.clip(np.rint(ys).astype(np.intp), 0, shape[0] - 1)
    xi = np.clip(np.rint(xs).astype(np.intp), 0, shape[1] - 1)
    np.add.at(img, (yi, xi), w.astype(np.float32))
    return img


def render_field(
    phenotype: Phenotype,
    *,
    size: int = 256,
    nucleus_radius: float = 8.0,
    rng: np.random.Generator,
    illumination: np.ndarray | None = None,
    out_of_focus: bool = False,
    cell_density: float = 1.0,
    brightness: float = 1.0,
    debris: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one Cell Painting field.

    Cells sit on a jittered grid (with some touching pairs); nuclei are textured ellipses cut by
    their Voronoi neighbours; cells grow from the nuclei to a noisy radius, limited by the
    neighbouring cells. DNA: chromatin texture, bright small mitotic/apoptotic nuclei; ER:
    perinuclear reticulum and nuclear rim; RNA: nucleoli plus cytoplasm; AGP: membranes and a
    Golgi blob; Mito: perinuclear filaments or puncta (``mito_fragmentation``). The camera adds
    :data:`DARK_OFFSET`, shot noise (normal approximation of Poisson, gain 1 ADU/e-) and
    Gaussian read noise, after the illumination field has multiplied the signal.

    Parameters
    ----------
    phenotype : Phenotype
        Effective phenotype (see :func:`effective_phenotype`).
    size : int
        Field edge in pixels (>= 32).
    nucleus_radius : float
        Typical nucleus radius in pixels; cell count scales with ``size**2 / nucleus_radius**2``
        (about 32 cells at size 256, radius 8, before toxicity).
    rng : numpy.random.Generator
        Source of all randomness of this field.
    illumination : (5, size, size) ndarray or None
        Multiplicative flat fields (e.g. :func:`illumination_fields`); None: flat.
    out_of_focus : bool
        Blur the optical signal as a defocused field.
    cell_density : float
        Multiplier of the expected cell count (well-to-well variation, edge effects).
    brightness : float
        Multiplier of all stain intensities (plate/well staining variation).
    debris : bool
        Allow occasional debris and a few saturated pixels.

    Returns
    -------
    image : (5, size, size) ndarray of uint16
        Channels in :data:`CHANNELS` order, clipped to [0, 65535].
    nuclei : (size, size) ndarray of uint32
        Nucleus labels 1..N, 0 background.
    cells : (size, size) ndarray of uint32
        Cell labels; cell k contains nucleus k.

    Raises
    ------
    ValueError
        If ``size`` or ``nucleus_radius`` is out of range or ``illumination`` has the wrong shape.
    """
    _check_size(size)
    if not 2.0 <= nucleus_radius <= size / 4:
        raise ValueError(f"nucleus_radius must be in [2, size/4={size / 4}], got {nucleus_radius!r}")
    if illumination is not None and illumination.shape != (len(CHANNELS), size, size):
        raise ValueError(
            f"illumination must have shape {(len(CHANNELS), size, size)}, got {illumination.shape}"
        )
    r = float(nucleus_radius)
    s = r / 8.0  # texture scale
    shape = (size, size)
    ph = phenotype

    # ---- cell placement and per-cell parameters ----------------------------------------------
    n_nominal = _CELL_DENSITY * size * size / (r * r) * cell_density
    n = int(rng.poisson(n_nominal * (1.0 - min(ph.toxicity, 0.95))))
    centres = _place_centres(rng, size, r, n, n_nominal) if n else np.zeros((0, 2))
    n = len(centres)
    special = rng.random(n) < 0.03 + 0.15 * ph.toxicity  # mitotic / apoptotic
    area = ph.nuclear_area * rng.lognormal(0.0, 0.15, n)
    elong = 1.0 + np.abs(rng.normal(0.0, 0.22, n))
    a = r * np.sqrt(area * elong)
    b = r * np.sqrt(area / elong)
    a[special] *= 0.55
    b[special] *= 0.55
    theta = rng.uniform(0.0, np.pi, n)
    dna_level = _LEVELS[0] * ph.dna_intensity * rng.lognormal(0.0, 0.12, n)
    dna_level[special] *= 2.4
    cyto = 1.3 * r * ph.cell_size * rng.lognormal(0.0, 0.18, n)
    cyto[special] = 0.5 * r
    frag = np.clip(0.25 + 0.75 * ph.mito_fragmentation + rng.normal(0.0, 0.06, n), 0.0, 1.0)
    cell_gain = rng.lognormal(0.0, 0.1, (len(CHANNELS), n))

    # Prepend a background entry so that arrays can be gathered with label images directly.
    def per_label(values: np.ndarray, background: float = 0.0) -> np.ndarray:
        return np.concatenate([[background], values]).astype(np.float32)

    # ---- nuclei: ellipses, assigned to the nearest centre (Voronoi) ---------------------------
    seeds = np.zeros(shape, dtype=np.int32)
    cy, cx = centres[:, 0], centres[:, 1]
    seeds[np.rint(cy).astype(np.intp), np.rint(cx).astype(np.intp)] = np.arange(1, n + 1)
    if n:
        iy, ix = ndi.distance_transform_edt(seeds == 0, return_distances=False, return_indices=True)
        owner = seeds[iy, ix]
    else:
        owner = np.zeros(shape, dtype=np.int32)
    yy, xx = np.indices(shape, dtype=np.float32)
    dy = yy - per_label(cy)[owner]
    dx = xx - per_label(cx)[owner]
    cos_t, sin_t = per_label(np.cos(theta)), per_label(np.sin(theta))
    u = dx * cos_t[owner] + dy * sin_t[owner]
    v = dy * cos_t[owner] - dx * sin_t[owner]
    rho = np.sqrt((u / per_label(a, 1.0)[owner]) ** 2 + (v / per_label(b, 1.0)[owner]) ** 2)
    bank = _texture_bank(size, s, r)
    rho *= 1.0 + 0.07 * _draw(bank["rough"], rng)
    nuclei = np.where((rho < 1.0) & (owner > 0), owner, 0).astype(np.uint32)
    in_nuc = nuclei > 0

    # ---- cells: grow from nuclei to a noisy radius, split by nearest nucleus -------------------
    if n:
        dist, (jy, jx) = ndi.distance_transform_edt(~in_nuc, return_indices=True)
        dist = dist.astype(np.float32)
        near = nuclei[jy, jx]
        limit = per_label(cyto)[near] * (1.0 + 0.3 * _draw(bank["limit"], rng))
        cells = np.where(dist <= limit, near, 0).astype(np.uint32)
    else:
        dist = np.full(shape, np.inf, dtype=np.float32)
        cells = np.zeros(shape, dtype=np.uint32)
    in_cell = cells > 0
    cytoplasm = in_cell & ~in_nuc
    q = np.where(in_cell, dist / per_label(cyto, 1.0)[cells], np.float32(1.0))

    sig = np.empty((len(CHANNELS),) + shape, dtype=np.float32)
    gain = [per_label(cell_gain[c], 0.0)[cells] for c in range(len(CHANNELS))]

    # DNA: domed nuclei with chromatin texture
    chromatin = _draw(bank["chromatin"], rng)
    tex = 0.12 + 0.3 * ph.texture
    dna = per_label(dna_level)[nuclei] * (1.0 - 0.3 * np.minimum(rho, 1.0) ** 2)
    sig[0] = np.where(in_nuc, dna * np.maximum(1.0 + tex * chromatin, 0.1), 0.0)

    # ER: perinuclear reticulum + nuclear rim
    reticulum = _draw(bank["reticulum"], rng)
    er = np.exp(-1.6 * q) * (1.0 + (0.35 + 0.3 * ph.texture) * reticulum)
    er += 0.8 * np.exp(-(((rho - 1.0) * r / (1.2 * s)) ** 2))
    sig[1] = _LEVELS[1] * ph.er_intensity * np.where(in_nuc, 0.15, np.maximum(er, 0.0)) * gain[1]
    sig[1] *= in_cell

    # RNA: nucleoli + cytoplasm
    k_nucleoli = np.where(special, 0, rng.integers(1, 5, n))
    owner_idx = np.repeat(np.arange(n), k_nucleoli)
    ang = rng.uniform(0, 2 * np.pi, owner_idx.size)
    rad = 0.5 * np.sqrt(rng.random(owner_idx.size))
    uu, vv = rad * a[owner_idx] * np.cos(ang), rad * b[owner_idx] * np.sin(ang)
    ny = cy[owner_idx] + uu * np.sin(theta[owner_idx]) + vv * np.cos(theta[owner_idx])
    nx = cx[owner_idx] + uu * np.cos(theta[owner_idx]) - vv * np.sin(theta[owner_idx])
    nucleoli = ndi.gaussian_filter(
        _impulses(shape, ny, nx, rng.uniform(0.6, 1.0, owner_idx.size)), 1.1 * s
    ) * (2 * np.pi * (1.1 * s) ** 2)
    rna_cyto = (1.0 - 0.5 * q) * (1.0 + (0.2 + 0.3 * ph.texture) * reticulum)
    rna = np.where(in_nuc, 0.45 + 2.2 * nucleoli, np.maximum(rna_cyto, 0.0))
    sig[2] = _LEVELS[2] * ph.rna_intensity * rna * gain[2] * in_cell

    # AGP: membranes (label edges), cortical actin, Golgi blob beside the nucleus
    edge = np.zeros(shape, dtype=bool)
    edge[:-1] |= cells[:-1] != cells[1:]
    edge[1:] |= cells[:-1] != cells[1:]
    edge[:, :-1] |= cells[:, :-1] != cells[:, 1:]
    edge[:, 1:] |= cells[:, :-1] != cells[:, 1:]
    membrane = ndi.gaussian_filter(edge.astype(np.float32), 0.8 * s)
    phi = rng.uniform(0, 2 * np.pi, n)
    golgi = ndi.gaussian_filter(
        _impulses(shape, cy + 1.1 * b * np.sin(phi), cx + 1.1 * b * np.cos(phi), np.ones(n)),
        1.6 * s,
    ) * (2 * np.pi * (1.6 * s) ** 2)
    agp = 0.3 + 1.6 * membrane + 1.2 * golgi + 0.1 * chromatin
    sig[3] = _LEVELS[3] * ph.agp_intensity * np.maximum(agp, 0.0) * gain[3] * in_cell

    # Mito: perinuclear network of filaments (ridges of band-pass noise) or puncta
    ridges = _draw(bank["ridge"], rng)
    puncta = _draw(bank["puncta"], rng)
    f = per_label(frag)[cells]
    mito = np.exp(-1.3 * q) * ((1.0 - f) * 1.4 * ridges + f * 1.2 * puncta)
    sig[4] = _LEVELS[4] * ph.mito_intensity * mito * gain[4] * cytoplasm

    sig[0] *= gain[0]
    sig *= brightness
    sig += _BACKGROUND[:, None, None].astype(np.float32)

    # ---- debris and defocus (optical) --------------------------------------------------------
    if debris and rng.random() < 0.25:
        for _ in range(int(rng.integers(1, 3))):
            steps = int(rng.integers(5, 25))
            path = np.cumsum(rng.normal(0.0, 1.5 * s, (steps, 2)), axis=0) + rng.uniform(0, size, 2)
            blob = ndi.gaussian_filter(
                _impulses(shape, path[:, 0], path[:, 1], np.ones(steps)), 1.2 * s
            )
            sig += blob[None] * (rng.uniform(2000, 8000, len(CHANNELS))[:, None, None] * s * s)
    if out_of_focus:
        sig = ndi.gaussian_filter(sig, (0.0, 3.0 * s, 3.0 * s))

    # ---- camera --------------------------------------------------------------------------------
    if illumination is not None:
        sig *= illumination
    np.maximum(sig, 0.0, out=sig)
    noise = rng.standard_normal(sig.shape, dtype=np.float32)
    sig += noise * np.sqrt(sig * _GAIN + _READ_NOISE**2)
    sig += DARK_OFFSET
    if debris and rng.random() < 0.3:
        k = int(rng.integers(1, 6))
        sig[rng.integers(0, len(CHANNELS), k), rng.integers(0, size, k), rng.integers(0, size, k)] = 65535
    image = np.clip(np.rint(sig), 0, 65535).astype(np.uint16)
    cells_out = cells.astype(np.uint32)
    return image, nuclei, cells_out


# --------------------------------------------------------------------------------------------
# Plate folders
# --------------------------------------------------------------------------------------------


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _field_rng(seed: int, plate_id: str, well: str, site: int) -> np.random.Generator:
    return np.random.default_rng([seed, _crc(plate_id), _crc(well), site])


def _guid(*parts: object) -> str:
    digest = zlib.crc32(repr(parts).encode()).to_bytes(4, "big")
    raw = np.random.default_rng(list(digest)).bytes(16)
    return str(uuid.UUID(bytes=raw)).upper()


def _write_tiff(path: Path, array: np.ndarray) -> None:
    tifffile.imwrite(path, array, photometric="minisblack", metadata=None, software=False)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    """A compressed .npz with fixed zip timestamps (np.savez stamps the current time)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def _image_relpath(layout: str, plate_id: str, well: str, site: int, ch: int, guid: str) -> str:
    if layout == "imagexpress":
        return f"{plate_id}_{well}_s{site}_w{ch + 1}{guid}.tif"
    if layout == "phenix":
        return f"Images/r{ord(well[0]) - 64:02d}c{int(well[1:]):02d}f{site:02d}p01-ch{ch + 1}sk1fk1fl1.tiff"
    return f"images/{well}/{well}_s{site}_{CHANNELS[ch]}.tiff"


def _well_phenotype(row: pd.Series, rng: np.random.Generator) -> tuple[Phenotype, bool]:
    control = row["Metadata_ControlType"]
    if control == "negcon":
        base = DMSO
    elif control == "poscon":
        base = effective_phenotype(POSITIVE_CONTROL, float(row["Metadata_Concentration"]))
    else:
        base = effective_phenotype(
            phenotype_from_smiles(str(row["Metadata_SMILES"])), float(row["Metadata_Concentration"])
        )
    active = control == "poscon" or (control == "trt" and base.magnitude() > 0.15)
    # biological well-to-well noise on the intensities
    jitter = {
        k: getattr(base, k) * float(rng.lognormal(0.0, 0.04))
        for k in ("dna_intensity", "er_intensity", "rna_intensity", "agp_intensity", "mito_intensity")
    }
    return dataclasses.replace(base, **jitter), active


def write_plate(
    out_dir: Path,
    platemap: pd.DataFrame,
    *,
    plate_id: str,
    layout: Layout = "imagexpress",
    sites: int = 1,
    size: int = 256,
    nucleus_radius: float = 8.0,
    seed: int = 0,
    faults: bool = False,
    ground_truth: bool = True,
    defocus_rate: float = 0.03,
) -> Path:
    """Render and write one plate folder ``out_dir / plate_id``.

    Files (channels 1..5 = :data:`CHANNELS`; uint16, uncompressed, no varying tags):

    * ``imagexpress``: ``<plate>_<well>_s<site>_w<ch><GUID>.tif`` plus a 4x-downsampled
      ``<plate>_<well>_s<site>_w<ch>_thumb<GUID>.tif`` beside each (readers must skip thumbs);
      the GUID (36 uppercase characters) is derived from (seed, plate, channel).
    * ``phenix``: ``Images/r<row>c<col>f<site>p01-ch<ch>sk1fk1fl1.tiff`` (two digits each).
    * ``loaddata``: ``images/<well>/<well>_s<site>_<Channel>.tiff`` and ``load_data.csv`` with
      ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site``, ``FileName_Orig<Ch>`` and
      ``PathName_Orig<Ch>`` (relative to the CSV).

    Always ``platemap.csv`` (as from :func:`design_plates`). With ``ground_truth``:
    ``ground_truth/labels/<well>_s<site>.npz`` (arrays ``nuclei``, ``cells``, uint32),
    ``ground_truth/illumination.npy`` ((5, size, size) float32), ``ground_truth/phenotypes.csv``
    (per well: effective phenotype, ``active``), ``ground_truth/fields.csv`` (per field:
    ``n_nuclei``, ``out_of_focus``). With ``faults``: one each of :data:`FAULT_KINDS`, listed in
    ``ground_truth/faults.csv`` (columns ``fault``, ``file``, ``well``, ``site``, ``channel``).

    Fields are rendered and written one at a time, so memory stays at a few field sizes.

    Parameters
    ----------
    out_dir : pathlib.Path
        Parent folder; created if absent.
    platemap : pandas.DataFrame
        One plate map from :func:`design_plates`.
    plate_id : str
        Plate name, used in folder and file names (letters, digits, ``-``; no ``_``).
    layout : {'imagexpress', 'phenix', 'loaddata'}
        File naming scheme.
    sites : int
        Fields per well.
    size, nucleus_radius : int, float
        See :func:`render_field`.
    seed : int
        Seed of everything (also selects the simulated microscope's illumination).
    faults : bool
        Inject one fault of each kind (needs at least 6 wells).
    ground_truth : bool
        Write the ``ground_truth/`` folder.
    defocus_rate : float
        Probability that a field is out of focus.

    Returns
    -------
    pathlib.Path
        The plate folder.

    Raises
    ------
    ValueError
        On an unknown layout (the message lists the valid ones), a bad plate id, a plate map
        without the required columns, or too few wells for ``faults``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not plate_id or "_" in plate_id or "/" in plate_id:
        raise ValueError(f"plate_id must be non-empty without '_' or '/', got {plate_id!r}")
    required = ["Metadata_Well", "Metadata_CompoundID", "Metadata_SMILES", "Metadata_Concentration", "Metadata_ControlType"]
    missing = [c for c in required if c not in platemap.columns]
    if missing:
        raise ValueError(f"platemap lacks columns {missing}; has {list(platemap.columns)}")
    if sites < 1:
        raise ValueError(f"sites must be >= 1, got {sites!r}")
    wells = list(platemap["Metadata_Well"])
    if faults and len(wells) < len(FAULT_KINDS):
        raise ValueError(f"faults=True needs >= {len(FAULT_KINDS)} wells, platemap has {len(wells)}")

    plate_dir = Path(out_dir) / plate_id
    plate_dir.mkdir(parents=True, exist_ok=True)
    platemap.loc[:, required].to_csv(plate_dir / "platemap.csv", index=False)
    illum = illumination_fields(size, seed)
    guids = [_guid(seed, plate_id, ch) for ch in range(len(CHANNELS))]
    gt = plate_dir / "ground_truth"
    if ground_truth:
        (gt / "labels").mkdir(parents=True, exist_ok=True)
        with open(gt / "illumination.npy", "wb") as fh:
            np.save(fh, illum)

    # faults: which (well, site, channel) gets which fault
    fault_at: dict[tuple[str, int, int], str] = {}
    if faults:
        frng = np.random.default_rng([seed, _crc(plate_id), 0xFA17])
        picked = frng.choice(len(wells), size=len(FAULT_KINDS), replace=False)
        for kind, w in zip(FAULT_KINDS, picked):
            fault_at[(wells[int(w)], int(frng.integers(1, sites + 1)), int(frng.integers(0, len(CHANNELS))))] = kind
    fault_rows: list[dict[str, object]] = []

    plate_rng = np.random.default_rng([seed, _crc(plate_id), 0xB0B])
    plate_brightness = float(plate_rng.lognormal(0.0, 0.05))
    rows, cols = max(ord(w[0]) - 64 for w in wells), max(int(w[1:]) for w in wells)
    rows, cols = (16, 24) if rows > 8 or cols > 12 else (8, 12)
    pheno_rows, field_rows, load_rows = [], [], []
    for _, row in platemap.iterrows():
        well = row["Metadata_Well"]
        wrng = _field_rng(seed, plate_id, well, 0)
        pheno, active = _well_phenotype(row, wrng)
        edge = well[0] in ("A", chr(64 + rows)) or int(well[1:]) in (1, cols)
        density = float(wrng.lognormal(0.0, 0.08)) * (0.85 if edge else 1.0)
        brightness = plate_brightness * float(wrng.lognormal(0.0, 0.03))
        pheno_rows.append(
            {"Metadata_Well": well, "Metadata_CompoundID": row["Metadata_CompoundID"],
             "Metadata_ControlType": row["Metadata_ControlType"],
             "Metadata_Concentration": row["Metadata_Concentration"],
             **{k: getattr(pheno, k) for k in (f.name for f in dataclasses.fields(Phenotype))},
             "magnitude": pheno.magnitude(), "active": active}
        )
        for site in range(1, sites + 1):
            frng = _field_rng(seed, plate_id, well, site)
            blurred = bool(frng.random() < defocus_rate)
            image, nuclei, cells = render_field(
                pheno, size=size, nucleus_radius=nucleus_radius, rng=frng, illumination=illum,
                out_of_focus=blurred, cell_density=density, brightness=brightness,
            )
            field_rows.append({"Metadata_Well": well, "Metadata_Site": site,
                               "n_nuclei": int(nuclei.max()), "out_of_focus": blurred})
            if ground_truth:
                (gt / "labels" / f"{well}_s{site}.npz").write_bytes(_npz_bytes(nuclei=nuclei, cells=cells))
            load_row: dict[str, object] = {"Metadata_Plate": plate_id, "Metadata_Well": well, "Metadata_Site": site}
            for ch in range(len(CHANNELS)):
                rel = _image_relpath(layout, plate_id, well, site, ch, guids[ch])
                path = plate_dir / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                kind = fault_at.get((well, site, ch))
                load_row[f"FileName_Orig{CHANNELS[ch]}"] = Path(rel).name
                load_row[f"PathName_Orig{CHANNELS[ch]}"] = str(Path(rel).parent)
                if kind is not None:
                    fault_rows.append({"fault": kind, "file": rel, "well": well, "site": site, "channel": CHANNELS[ch]})
                if kind == "missing_channel":
                    continue
                if kind == "zero_bytes":
                    path.write_bytes(b"")
                    continue
                data = image[ch]
                if kind == "wrong_dtype":
                    data = (data >> 8).astype(np.uint8)
                elif kind == "wrong_shape":
                    data = data[: size // 2]
                _write_tiff(path, data)
                if kind == "truncated":
                    raw = path.read_bytes()
                    path.write_bytes(raw[: len(raw) // 2])
                if kind == "duplicate_site":
                    dup_rel = _duplicate_relpath(layout, rel, plate_id, well, site, ch, seed)
                    _write_tiff(plate_dir / dup_rel, data)
                    fault_rows[-1]["file"] = dup_rel
                    if layout == "loaddata":
                        load_rows.append(("dup", ch, dup_rel))
                if layout == "imagexpress":
                    thumb = plate_dir / f"{plate_id}_{well}_s{site}_w{ch + 1}_thumb{guids[ch]}.tif"
                    _write_tiff(thumb, image[ch, ::4, ::4])
            load_rows.append(load_row)

    if layout == "loaddata":
        _write_load_data(plate_dir / "load_data.csv", load_rows)
    if ground_truth:
        pd.DataFrame(pheno_rows).to_csv(gt / "phenotypes.csv", index=False)
        pd.DataFrame(field_rows).to_csv(gt / "fields.csv", index=False)
        if faults:
            pd.DataFrame(fault_rows, columns=["fault", "file", "well", "site", "channel"]).to_csv(
                gt / "faults.csv", index=False
            )
    return plate_dir


def _duplicate_relpath(layout: str, rel: str, plate_id: str, well: str, site: int, ch: int, seed: int) -> str:
    """A second file name that maps to the same (well, site, channel) as ``rel``."""
    if layout == "imagexpress":
        return _image_relpath(layout, plate_id, well, site, ch, _guid(seed, plate_id, ch, "duplicate"))
    if layout == "phenix":
        return rel.replace("sk1fk1fl1", "sk2fk1fl1")
    return rel.replace(".tiff", "_copy.tiff")


def _write_load_data(path: Path, load_rows: list) -> None:
    """Write ``load_data.csv``; a ``('dup', ch, rel)`` marker repeats the next field's row with one
    channel's file replaced (a duplicate site)."""
    out: list[dict[str, object]] = []
    pending: list[tuple[int, str]] = []
    for item in load_rows:
        if isinstance(item, tuple):
            pending.append(item[1:])
            continue
        out.append(item)
        for ch, rel in pending:
            dup = dict(item)
            dup[f"FileName_Orig{CHANNELS[ch]}"] = Path(rel).name
            dup[f"PathName_Orig{CHANNELS[ch]}"] = str(Path(rel).parent)
            out.append(dup)
        pending = []
    cols = ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    cols += [f"FileName_Orig{c}" for c in CHANNELS] + [f"PathName_Orig{c}" for c in CHANNELS]
    pd.DataFrame(out, columns=cols).to_csv(path, index=False)


def generate(
    out_dir: Path,
    *,
    layout: Layout = "imagexpress",
    plate_id: str = "P1",
    plate_format: Literal[96, 384] = 96,
    n_wells: int = 96,
    sites: int = 1,
    size: int = 256,
    seed: int = 0,
    faults: bool = False,
    library: pd.DataFrame | None = None,
) -> Path:
    """Design one plate from ``library`` (default: the shipped one), keep its first ``n_wells``
    wells in row-major order and write it with :func:`write_plate`; returns the plate folder.

    Raises
    ------
    ValueError
        If ``n_wells`` is not in ``1..plate_format`` or :func:`write_plate` refuses.
    """
    from pipeline.library import load_compound_library

    if not 1 <= n_wells <= plate_format:
        raise ValueError(f"n_wells must be in 1..{plate_format}, got {n_wells!r}")
    lib = load_compound_library() if library is None else library
    platemap = design_plates(lib, plate_format=plate_format, seed=seed)[0]
    order = {w: i for i, w in enumerate(well_names(plate_format))}
    keep = platemap["Metadata_Well"].map(order) < n_wells
    platemap = platemap[keep].reset_index(drop=True)
    return write_plate(Path(out_dir), platemap, plate_id=plate_id, layout=layout, sites=sites,
                       size=size, seed=seed, faults=faults)


def generate_demo(
    out_dir: Path,
    *,
    n_plates: int = 2,
    plate_format: Literal[96, 384] = 384,
    n_compounds: int | None = None,
    sites: int = 1,
    size: int = 256,
    nucleus_radius: float = 8.0,
    seed: int = 0,
) -> list[Path]:
    """Design ``n_plates`` plates of the shipped library and write them (ImageXpress layout,
    plates ``DEMO-1``, ``DEMO-2``, ...); returns the plate folders."""
    from pipeline.library import load_compound_library

    maps = design_plates(load_compound_library(), n_plates=n_plates, plate_format=plate_format,
                         n_compounds=n_compounds, seed=seed)
    return [
        write_plate(Path(out_dir), m, plate_id=f"DEMO-{i + 1}", sites=sites, size=size,
                    nucleus_radius=nucleus_radius, seed=seed)
        for i, m in enumerate(maps)
    ]
