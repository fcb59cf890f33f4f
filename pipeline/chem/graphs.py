"""OGB-compatible molecular graphs, their Parquet table, and fingerprints for baselines.

:func:`smiles_to_graph` returns exactly what ``ogb.utils.smiles2graph`` returns (same keys,
dtypes, feature indices and edge order) without depending on ``ogb``: per-atom properties are
read once into an integer array and mapped to vocabulary indices with lookup tables, instead
of formatting every RDKit enum as a string and searching a list.

Feature vocabularies (index = position in the list; the last entry of a list marked *misc*
collects every value not listed):

Atom features, ``node_feat[:, k]`` (sizes :data:`ATOM_FEATURE_DIMS`):

0. atomic number 1..118, misc (119)
1. chirality tag CHI_UNSPECIFIED, CHI_TETRAHEDRAL_CW, CHI_TETRAHEDRAL_CCW, CHI_OTHER, misc (5)
2. total degree 0..10, misc (12)
3. formal charge -5..5, misc (12)
4. total hydrogens 0..8, misc (10)
5. radical electrons 0..4, misc (6)
6. hybridization SP, SP2, SP3, SP3D, SP3D2, misc (6)
7. is aromatic False, True (2)
8. is in ring False, True (2)

Bond features, ``edge_feat[:, k]`` (sizes :data:`BOND_FEATURE_DIMS`):

0. bond type SINGLE, DOUBLE, TRIPLE, AROMATIC, misc (5)
1. bond stereo STEREONONE, STEREOZ, STEREOE, STEREOCIS, STEREOTRANS, STEREOANY (6)
2. is conjugated False, True (2)

Every bond gives two directed edges, (begin, end) then (end, begin), in RDKit bond order.
One deviation from ``ogb``: atropisomer bond stereo (STEREOATROPCW/CCW, which RDKit never
derives from SMILES) maps to STEREOANY, where ``ogb`` raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from rdkit import Chem, rdBase
from rdkit.Chem import rdFingerprintGenerator

from pipeline.chem.rdkit_log import quiet_rdkit
from pipeline.store.schema import conform

__all__ = [
    "GraphError",
    "ATOM_FEATURE_DIMS",
    "BOND_FEATURE_DIMS",
    "ATOM_VOCABULARY",
    "BOND_VOCABULARY",
    "smiles_to_graph",
    "graphs_table",
    "graphs_to_data",
    "morgan_fingerprints",
    "HU2020_ATOM_VOCABULARY",
    "HU2020_BOND_VOCABULARY",
    "HU2020_ATOM_FEATURE_DIMS",
    "HU2020_BOND_FEATURE_DIMS",
    "HU2020_SELF_LOOP_BOND",
    "smiles_to_graph_hu2020",
]


class GraphError(ValueError):
    """A SMILES cannot be turned into a graph; the message names it and the reason."""


#: Vocabularies of the atom features, in feature order (``'misc'`` = any other value).
ATOM_VOCABULARY: tuple[tuple[object, ...], ...] = (
    (*range(1, 119), "misc"),
    ("CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW", "CHI_OTHER", "misc"),
    (*range(0, 11), "misc"),
    (*range(-5, 6), "misc"),
    (*range(0, 9), "misc"),
    (*range(0, 5), "misc"),
    ("SP", "SP2", "SP3", "SP3D", "SP3D2", "misc"),
    (False, True),
    (False, True),
)
#: Vocabularies of the bond features, in feature order.
BOND_VOCABULARY: tuple[tuple[object, ...], ...] = (
    ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC", "misc"),
    ("STEREONONE", "STEREOZ", "STEREOE", "STEREOCIS", "STEREOTRANS", "STEREOANY"),
    (False, True),
)
#: Number of categories of each atom feature (equals ``ogb``'s ``get_atom_feature_dims()``).
ATOM_FEATURE_DIMS: list[int] = [len(v) for v in ATOM_VOCABULARY]
#: Number of categories of each bond feature (equals ``ogb``'s ``get_bond_feature_dims()``).
BOND_FEATURE_DIMS: list[int] = [len(v) for v in BOND_VOCABULARY]


def _enum_table(enum: type, vocabulary: tuple[object, ...], *, other: int) -> np.ndarray:
    """Lookup array: RDKit enum value -> vocabulary index (``other`` when not listed)."""
    values = enum.values  # {int: member}
    table = np.full(max(values) + 1, other, dtype=np.int64)
    for value, member in values.items():
        name = str(member).rsplit(".", 1)[-1]
        if name in vocabulary:
            table[value] = vocabulary.index(name)
    return table


_CHIRALITY = _enum_table(Chem.ChiralType, ATOM_VOCABULARY[1], other=4)
_HYBRIDIZATION = _enum_table(Chem.HybridizationType, ATOM_VOCABULARY[6], other=5)
_BOND_TYPE = _enum_table(Chem.BondType, BOND_VOCABULARY[0], other=4)
_BOND_STEREO = _enum_table(Chem.BondStereo, BOND_VOCABULARY[1], other=5)

# Integer-valued atom features: value v maps to v - low when low <= v <= high, else to misc.
# Columns of the raw array: atomic number, chirality, formal charge, total Hs, radical
# electrons, hybridization, aromatic, heavy degree (from the bonds), in ring (from RingInfo).
_LOW = np.array([1, 0, -5, 0, 0, 0, 0, 0, 0], dtype=np.int64)
_HIGH = np.array([118, 1 << 30, 5, 8, 4, 1 << 30, 1, 1 << 30, 1], dtype=np.int64)
_MISC = np.array([118, 0, 11, 9, 5, 0, 0, 0, 0], dtype=np.int64)
_OUT_ORDER = [0, 1, 7, 2, 3, 4, 5, 6, 8]  # raw columns in node_feat order (degree patched)


# Bond orders as GetBondTypeAsDouble() reports them -> bond-type index (others: misc). Reading
# the order as a float avoids building a Boost enum per bond; SMILES that can hold bond types
# with an ambiguous order (dative '->', quadruple '$') take the enum path instead.
_ORDER_INDEX = {1.0: 0, 2.0: 1, 3.0: 2, 1.5: 3}
_ENUM_BOND_CHARS = frozenset("<>$")


def _features(mol: Chem.Mol, smiles: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(node_feat, edge_index, edge_feat) of ``mol`` parsed from ``smiles``; ogb layout, int64.

    Enum-valued properties are the expensive RDKit calls, so they are read only where they can
    differ from the default: chiral tags only when ``smiles`` contains '@' (the SMILES parser
    is their only source), bond stereo only on double bonds.
    """
    n = mol.GetNumAtoms()
    chiral = "@" in smiles
    raw = np.array(
        [
            (
                a.GetAtomicNum(),
                a.GetChiralTag() if chiral else 0,
                a.GetFormalCharge(),
                a.GetTotalNumHs(),
                a.GetNumRadicalElectrons(),
                a.GetHybridization(),
                a.GetIsAromatic(),
                0,
                0,
            )
            for a in map(mol.GetAtomWithIdx, range(n))  # bypasses the slow GetAtoms() sequence
        ],
        dtype=np.int64,
    ).reshape(n, 9)
    bond_list = list(map(mol.GetBondWithIdx, range(mol.GetNumBonds())))
    if _ENUM_BOND_CHARS.isdisjoint(smiles):
        bonds = np.array(
            [
                (b.GetBeginAtomIdx(), b.GetEndAtomIdx(), _ORDER_INDEX.get(b.GetBondTypeAsDouble(), 4), 0, b.GetIsConjugated())
                for b in bond_list
            ],
            dtype=np.int64,
        ).reshape(-1, 5)
        double = np.flatnonzero(bonds[:, 2] == 1)
        bonds[double, 3] = _BOND_STEREO[[int(bond_list[i].GetStereo()) for i in double]]
    else:
        bonds = np.array(
            [
                (b.GetBeginAtomIdx(), b.GetEndAtomIdx(), b.GetBondType(), b.GetStereo(), b.GetIsConjugated())
                for b in bond_list
            ],
            dtype=np.int64,
        ).reshape(-1, 5)
        bonds[:, 2] = _BOND_TYPE[bonds[:, 2]]
        bonds[:, 3] = _BOND_STEREO[bonds[:, 3]]
    ends = bonds[:, :2]
    # total degree = heavy (graph) degree + total hydrogens, as in Atom.GetTotalDegree()
    raw[:, 7] = np.bincount(ends.ravel(), minlength=n) + raw[:, 3]
    ring_atoms = [i for ring in mol.GetRingInfo().AtomRings() for i in ring]
    raw[ring_atoms, 8] = 1
    raw[:, 1] = _CHIRALITY[raw[:, 1]]
    raw[:, 5] = _HYBRIDIZATION[raw[:, 5]]
    node_feat = np.where((raw < _LOW) | (raw > _HIGH), _MISC, raw - _LOW)
    node_feat[:, 7] = np.where(raw[:, 7] <= 10, raw[:, 7], 11)  # total degree 0..10, misc
    node_feat = node_feat[:, _OUT_ORDER]
    edge_index = np.empty((2, 2 * len(bonds)), dtype=np.int64)
    edge_index[:, 0::2] = ends.T
    edge_index[:, 1::2] = ends.T[::-1]
    return node_feat, edge_index, np.repeat(bonds[:, 2:], 2, axis=0)


def _parse(smiles: str) -> Chem.Mol:
    if not isinstance(smiles, str):
        raise TypeError(f"smiles must be a str, got {type(smiles).__name__}: {smiles!r}")
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        with quiet_rdkit() as capture:  # parse again to capture RDKit's reason
            Chem.MolFromSmiles(smiles)
        detail = capture.messages.strip().splitlines()
        reason = detail[-1].split("]", 1)[-1].strip() if detail else "no atoms"
        raise GraphError(f"cannot build a graph from SMILES {smiles!r}: {reason}")
    return mol


def smiles_to_graph(smiles: str) -> dict[str, np.ndarray | int]:
    """Build the OGB molecular graph of ``smiles`` (same output as ``ogb.utils.smiles2graph``).

    Parameters
    ----------
    smiles : str
        A SMILES, parsed with RDKit's default sanitization (as ``ogb`` does).

    Returns
    -------
    dict
        ``node_feat`` : (num_nodes, 9) int64 ndarray of atom-feature indices;
        ``edge_index`` : (2, num_edges) int64 ndarray, both directions of every bond;
        ``edge_feat`` : (num_edges, 3) int64 ndarray of bond-feature indices;
        ``num_nodes`` : int.

    Raises
    ------
    GraphError
        If RDKit cannot parse ``smiles`` (or it has no atoms); the message quotes it.
    TypeError
        If ``smiles`` is not a string.
    """
    node_feat, edge_index, edge_feat = _features(_parse(smiles), smiles)
    return {
        "edge_index": edge_index,
        "edge_feat": edge_feat,
        "node_feat": node_feat,
        "num_nodes": int(node_feat.shape[0]),
    }


def _list_array(parts: list[np.ndarray], value_type: pa.DataType) -> pa.ListArray:
    lengths = np.fromiter((p.size for p in parts), dtype=np.int64, count=len(parts))
    offsets = np.zeros(len(parts) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate([p.ravel() for p in parts]) if parts else np.empty(0, dtype=np.int64)
    values = pa.array(flat.astype(value_type.to_pandas_dtype()), type=value_type)
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), values)


def graphs_table(compounds: pd.DataFrame, *, n_jobs: int = 1) -> pd.DataFrame:
    """Build the ``graphs`` table for the parents of a ``compounds`` table.

    Parameters
    ----------
    compounds : pandas.DataFrame
        Columns ``Metadata_InChIKey`` and ``Metadata_SMILES`` (other columns are ignored).
    n_jobs : int, default 1
        Worker processes (SMILES strings out, arrays back); 1 runs in this process.

    Returns
    -------
    pandas.DataFrame
        One row per input row, in order: ``Metadata_InChIKey``, ``Metadata_SMILES``,
        ``num_nodes`` and ``num_edges`` (int32), and the flat row-major lists ``node_feat``
        (int16, num_nodes*9), ``edge_index`` (int32, 2*num_edges: sources then targets) and
        ``edge_feat`` (int16, num_edges*3) as Arrow-backed list columns.

    Raises
    ------
    ValueError
        If a required column is missing or ``n_jobs`` < 1.
    GraphError
        If a parent SMILES does not parse (parents come from standardization, so this means
        the table was not produced by :func:`pipeline.chem.parents.merge_parents`).
    """
    missing = [c for c in ("Metadata_InChIKey", "Metadata_SMILES") if c not in compounds.columns]
    if missing:
        raise ValueError(f"compounds lack column(s) {missing}; have {list(compounds.columns)}")
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive int, got {n_jobs!r}")
    smiles = compounds["Metadata_SMILES"].astype(str).tolist()
    if n_jobs == 1 or len(smiles) < 2:
        graphs = [smiles_to_graph(s) for s in smiles]
    else:
        from pipeline.chem.batch import chem_pool, split_evenly

        with chem_pool(n_jobs) as pool:
            graphs = [g for part in pool.map(_graph_batch, split_evenly(smiles, n_jobs * 4)) for g in part]
    table = pa.table(
        {
            "Metadata_InChIKey": pa.array(compounds["Metadata_InChIKey"].astype(str).tolist(), pa.string()),
            "Metadata_SMILES": pa.array(smiles, pa.string()),
            "num_nodes": pa.array([g["num_nodes"] for g in graphs], pa.int32()),
            "num_edges": pa.array([g["edge_index"].shape[1] for g in graphs], pa.int32()),
            "node_feat": _list_array([g["node_feat"] for g in graphs], pa.int16()),
            "edge_index": _list_array([g["edge_index"] for g in graphs], pa.int32()),
            "edge_feat": _list_array([g["edge_feat"] for g in graphs], pa.int16()),
        }
    )
    table = conform(table, "graphs")
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _graph_batch(smiles: list[str]) -> list[dict[str, np.ndarray | int]]:
    return [smiles_to_graph(s) for s in smiles]


def _flat(table: pa.Table, name: str, width: int, counts: np.ndarray) -> np.ndarray:
    """Flat values of list column ``name`` (respecting slicing), checked against ``counts``."""
    col = table.column(name).combine_chunks()
    values = col.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    if values.size != int(counts.sum()) * width:
        raise ValueError(
            f"graphs column {name!r} holds {values.size} values, expected {int(counts.sum()) * width}"
        )
    return values


def graphs_to_data(table: pd.DataFrame) -> list:
    """Turn a ``graphs`` table into one ``torch_geometric.data.Data`` per row.

    The list columns are read as flat Arrow values and split with NumPy by the row counts;
    there is no per-atom Python loop.

    Parameters
    ----------
    table : pandas.DataFrame
        A ``graphs`` table (as returned by :func:`graphs_table` or read from Parquet).

    Returns
    -------
    list of torch_geometric.data.Data
        Each with ``x`` (num_nodes, 9) int64, ``edge_index`` (2, num_edges) int64,
        ``edge_attr`` (num_edges, 3) int64, ``num_nodes`` and ``inchikey`` (str).

    Raises
    ------
    pipeline.store.schema.SchemaError
        If ``table`` does not match the ``graphs`` declaration.
    ValueError
        If the list lengths disagree with ``num_nodes``/``num_edges``.
    """
    import torch
    from torch_geometric.data import Data

    arrow = conform(table, "graphs")
    nodes = arrow.column("num_nodes").to_numpy().astype(np.int64)
    edges = arrow.column("num_edges").to_numpy().astype(np.int64)
    x = torch.from_numpy(_flat(arrow, "node_feat", 9, nodes).reshape(-1, 9))
    ea = torch.from_numpy(_flat(arrow, "edge_feat", 3, edges).reshape(-1, 3))
    ei_flat = _flat(arrow, "edge_index", 2, edges)
    # each row's edge_index is [sources..., targets...]; split rows, then view as (2, E)
    ei_rows = np.split(ei_flat, np.cumsum(2 * edges)[:-1])
    xs = torch.split(x, nodes.tolist())
    eas = torch.split(ea, edges.tolist())
    keys = arrow.column("Metadata_InChIKey").to_pylist()
    return [
        Data(
            x=xs[i],
            edge_index=torch.from_numpy(ei_rows[i].reshape(2, -1)),
            edge_attr=eas[i],
            num_nodes=int(nodes[i]),
            inchikey=keys[i],
        )
        for i in range(len(keys))
    ]


def morgan_fingerprints(
    smiles: Sequence[str], *, radius: int = 2, n_bits: int = 2048
) -> np.ndarray:
    """Morgan (ECFP-like) bit fingerprints.

    Parameters
    ----------
    smiles : sequence of str
        SMILES to fingerprint.
    radius : int, default 2
        Morgan radius (2 ~ ECFP4).
    n_bits : int, default 2048
        Fingerprint length.

    Returns
    -------
    (n, n_bits) uint8 ndarray
        Bit vectors (0/1), one row per SMILES.

    Raises
    ------
    GraphError
        If a SMILES does not parse; the message gives its position.
    ValueError
        If ``radius`` < 0 or ``n_bits`` < 1.
    """
    if radius < 0 or n_bits < 1:
        raise ValueError(f"need radius >= 0 and n_bits >= 1, got radius={radius}, n_bits={n_bits}")
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    out = np.zeros((len(smiles), n_bits), dtype=np.uint8)
    for i, s in enumerate(smiles):
        try:
            mol = _parse(s)
        except GraphError as exc:
            raise GraphError(f"SMILES #{i}: {exc}") from None
        out[i] = gen.GetFingerprintAsNumPy(mol)
    return out


# ---------------------------------------------------------------------------------------------
# Hu et al. (2020)'s featurizer
# ---------------------------------------------------------------------------------------------

#: Hu et al. (2020)'s atom features (pretrain-gnns ``chem/loader.py``,
#: ``mol_to_graph_data_obj_simple``): atom type = atomic number - 1 (1..118 -> 0..117; index 118
#: is never produced), chirality tag. Formal charge, hydrogens, degree and aromaticity are not
#: features: a protonated amine and its free base differ only by an H the graph does not hold.
HU2020_ATOM_VOCABULARY: tuple[tuple[object, ...], ...] = (
    (*range(1, 119), "unused"),
    ("CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW", "CHI_OTHER"),
)
#: Hu et al.'s bond features: bond type (index 4 reserved for the self-loop edges their GIN
#: adds; never produced here) and bond direction (the ``/`` ``\\`` marks of double-bond stereo).
HU2020_BOND_VOCABULARY: tuple[tuple[object, ...], ...] = (
    ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC", "self-loop"),
    ("NONE", "ENDUPRIGHT", "ENDDOWNRIGHT"),
)
#: Sizes of Hu et al.'s atom features (with one mask row per feature the embedding tables have
#: Hu et al.'s 120 atom types; they size the chirality table 3).
HU2020_ATOM_FEATURE_DIMS: list[int] = [len(v) for v in HU2020_ATOM_VOCABULARY]
#: Sizes of Hu et al.'s bond features (with the mask row: their 6 bond types, 3 directions + 1).
HU2020_BOND_FEATURE_DIMS: list[int] = [len(v) for v in HU2020_BOND_VOCABULARY]
#: Bond-type index of a self-loop edge (Hu et al.'s ``self_loop_attr[:, 0] = 4``).
HU2020_SELF_LOOP_BOND: int = 4

_HU_CHIRALITY = {getattr(Chem.ChiralType, n): i for i, n in enumerate(HU2020_ATOM_VOCABULARY[1])}
_HU_BOND_TYPE = {getattr(Chem.BondType, n): i for i, n in enumerate(HU2020_BOND_VOCABULARY[0][:4])}
_HU_BOND_DIR = {getattr(Chem.BondDir, n): i for i, n in enumerate(HU2020_BOND_VOCABULARY[1])}


def smiles_to_graph_hu2020(smiles: str) -> dict[str, np.ndarray | int]:
    """Hu et al. (2020)'s molecular graph of ``smiles`` (``mol_to_graph_data_obj_simple``).

    The molecule is parsed with RDKit's default sanitization, as given (no standardization:
    counter-ions stay as separate fragments). Atom order and edge order are RDKit's, every bond
    giving (begin, end) then (end, begin), as in :func:`smiles_to_graph`.

    Parameters
    ----------
    smiles : str

    Returns
    -------
    dict
        ``node_feat`` : (num_nodes, 2) int64 ndarray, atom type and chirality indices
        (:data:`HU2020_ATOM_VOCABULARY`); ``edge_index`` : (2, num_edges) int64 ndarray;
        ``edge_feat`` : (num_edges, 2) int64 ndarray, bond type and direction indices
        (:data:`HU2020_BOND_VOCABULARY`); ``num_nodes`` : int.

    Raises
    ------
    GraphError
        If RDKit cannot parse ``smiles``, or it holds an atom, chirality, bond type or bond
        direction Hu et al.'s vocabulary has no index for (their code raises there too): a
        dummy atom ``*``, a dative bond, a wedge direction; the message quotes the SMILES.
    TypeError
        If ``smiles`` is not a string.
    """
    mol = _parse(smiles)
    node = np.empty((mol.GetNumAtoms(), 2), dtype=np.int64)
    for i, atom in enumerate(mol.GetAtoms()):
        z, chi = atom.GetAtomicNum(), _HU_CHIRALITY.get(atom.GetChiralTag())
        if not 1 <= z <= 118 or chi is None:
            raise GraphError(f"cannot featurise SMILES {smiles!r} as Hu et al.: atom {i} has atomic number {z}, "
                             f"chirality {atom.GetChiralTag()}")
        node[i] = (z - 1, chi)
    n_bonds = mol.GetNumBonds()
    edge_index = np.empty((2, 2 * n_bonds), dtype=np.int64)
    edge_feat = np.empty((2 * n_bonds, 2), dtype=np.int64)
    for k, bond in enumerate(mol.GetBonds()):
        bt, bd = _HU_BOND_TYPE.get(bond.GetBondType()), _HU_BOND_DIR.get(bond.GetBondDir())
        if bt is None or bd is None:
            raise GraphError(f"cannot featurise SMILES {smiles!r} as Hu et al.: bond {k} is {bond.GetBondType()}, "
                             f"direction {bond.GetBondDir()}")
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        edge_index[:, 2 * k], edge_index[:, 2 * k + 1] = (i, j), (j, i)
        edge_feat[2 * k] = edge_feat[2 * k + 1] = (bt, bd)
    return {"edge_index": edge_index, "edge_feat": edge_feat, "node_feat": node, "num_nodes": int(node.shape[0])}
