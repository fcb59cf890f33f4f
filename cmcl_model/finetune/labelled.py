"""Labelled molecule sets for downstream fine-tuning: loading, standardization and splits.

A *labelled set* is a table of SMILES with one or more task columns (0/1 for classification,
real values for regression; empty cells are missing labels). :func:`prepare_labelled` turns
such a table into molecules the GIN can read:

1. every SMILES goes through cmcl's own standardization
   (:func:`pipeline.chem.standardize.standardize_smiles`: ChEMBL-style parent, salts and solvents
   stripped, charges neutralised), so a hydrochloride and its free base are one molecule;
2. the parent is featurised with the OGB featurizer (:func:`pipeline.chem.graphs.smiles_to_graph`,
   through :func:`cmcl_model.finetune.featurizers.featurize`);
3. rows whose SMILES cannot be standardized or featurised are *reported* (row, SMILES,
   reason) and left out, never fatal.

``protocol='hu2020'`` follows Hu et al.'s ``loader.py``: step 1 is skipped (the SMILES as
given, counter-ions and charges kept), the molecule as parsed is featurised with Hu et al.'s
featurizer (atom type + chirality, bond type + direction:
:func:`pipeline.chem.graphs.smiles_to_graph_hu2020`, blind to charges and hydrogens) and the
split is computed on RDKit's canonical SMILES of it. ``featurizer`` overrides the protocol's
featurizer (:mod:`cmcl_model.finetune.featurizers`).

Splits (:func:`split_molecules`) are the field's: the deterministic scaffold split of Hu et
al. (2020) (Bemis-Murcko scaffolds with chirality, scaffold sets sorted largest first and
poured into train, then validation, then test), chemprop's scaffold-balanced split and a
seeded random split.

The MoleculeNet sets shipped in ``cmcl_model/datasets/`` are listed in :data:`DATASETS`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

__all__ = [
    "Kind",
    "Protocol",
    "PROTOCOLS",
    "SplitMode",
    "SPLIT_MODES",
    "DatasetSpec",
    "DATASETS",
    "LabelledInputError",
    "LabelledSet",
    "read_labelled_csv",
    "check_labelled_csv",
    "load_shipped",
    "prepare_labelled",
    "scaffold_of",
    "split_molecules",
    "split_table",
]

Kind = Literal["classification", "regression"]
Protocol = Literal["cmcl", "hu2020"]
PROTOCOLS: tuple[str, ...] = ("cmcl", "hu2020")
SplitMode = Literal["scaffold", "random", "scaffold_balanced"]
SPLIT_MODES: tuple[str, ...] = ("scaffold", "random", "scaffold_balanced")


@dataclass(frozen=True)
class DatasetSpec:
    """A shipped labelled set: ``file`` in ``cmcl_model/datasets/``, its SMILES column, task
    columns (None: every column but the SMILES) and kind."""

    file: str
    smiles_col: str
    tasks: tuple[str, ...] | None
    kind: Kind


#: MoleculeNet sets shipped with cmcl (chemprop's copies, see ``cmcl_model/datasets/README.md``).
DATASETS: dict[str, DatasetSpec] = {
    "bbbp": DatasetSpec("bbbp.csv.gz", "smiles", ("p_np",), "classification"),
    "clintox": DatasetSpec("clintox.csv.gz", "smiles", ("FDA_APPROVED", "CT_TOX"), "classification"),
    "bace": DatasetSpec("bace.csv.gz", "mol", ("Class",), "classification"),
    "sider": DatasetSpec("sider.csv.gz", "smiles", None, "classification"),
    "tox21": DatasetSpec("tox21.csv.gz", "smiles", None, "classification"),
    "esol": DatasetSpec("esol.csv.gz", "smiles", ("logp",), "regression"),  # column holds log-solubility
    "freesolv": DatasetSpec("freesolv.csv.gz", "smiles", ("freesolv",), "regression"),
    "lipophilicity": DatasetSpec("lipo.csv.gz", "smiles", ("lipo",), "regression"),
}


class LabelledInputError(ValueError):
    """A labelled table cannot be used; the message is one line naming the file and problem."""


@dataclass
class LabelledSet:
    """Molecules ready for fine-tuning.

    Attributes
    ----------
    name : str
        Dataset name or file name.
    kind : {'classification', 'regression'}
    tasks : tuple of str
    smiles : list of str
        One per kept molecule (N): the standardized parent (protocol ``'cmcl'``) or RDKit's
        canonical SMILES of the molecule as given (``'hu2020'``); splits are computed on it.
    input_smiles : list of str
        The SMILES as given, same order.
    rows : (N,) int ndarray
        Row of each kept molecule in the input table (0-based, header excluded).
    labels : (N, T) float64 ndarray
        Labels, NaN where missing.
    graphs : list of torch_geometric.data.Data
        Graphs of the molecules (``featurizer``'s features).
    invalid : list of dict
        ``{"row", "smiles", "reason"}`` of each input row left out.
    n_input : int
        Rows in the input table.
    n_changed : int
        Kept molecules whose standardized SMILES differs from the input's canonical form
        (salts stripped, charges neutralised, ...); 0 under ``'hu2020'``.
    protocol : {'cmcl', 'hu2020'}
        How the SMILES were prepared (:func:`prepare_labelled`).
    featurizer : {'ogb', 'hu2020'}
        Which features ``graphs`` hold.
    """

    name: str
    kind: Kind
    tasks: tuple[str, ...]
    smiles: list[str]
    input_smiles: list[str]
    rows: np.ndarray
    labels: np.ndarray
    graphs: list = field(repr=False)
    invalid: list[dict]
    n_input: int
    n_changed: int
    protocol: str = "cmcl"
    featurizer: str = "ogb"

    def __len__(self) -> int:
        return len(self.smiles)

    def subset(self, index: np.ndarray) -> LabelledSet:
        """The molecules at ``index`` (same tasks; ``invalid`` and counts kept)."""
        idx = np.asarray(index, dtype=np.int64)
        return LabelledSet(
            self.name, self.kind, self.tasks, [self.smiles[i] for i in idx], [self.input_smiles[i] for i in idx],
            self.rows[idx], self.labels[idx], [self.graphs[i] for i in idx], self.invalid, self.n_input, self.n_changed,
            self.protocol, self.featurizer,
        )


def read_labelled_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a labelled CSV (``.csv`` or ``.csv.gz``; TSV when the name ends in ``.tsv``).

    Raises
    ------
    LabelledInputError
        If the file is missing, empty or not parseable; the message names it.
    """
    p = Path(path)
    if not p.is_file():
        raise LabelledInputError(f"{p}: no such file")
    sep = "\t" if p.name.endswith((".tsv", ".tsv.gz")) else ","
    try:
        return pd.read_csv(p, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise LabelledInputError(f"{p}: cannot read as {'TSV' if sep == chr(9) else 'CSV'}: {str(exc).splitlines()[0]}") from None


def load_shipped(name: str) -> tuple[pd.DataFrame, DatasetSpec]:
    """A shipped set's raw table and its spec.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`DATASETS` (the message lists them).
    """
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"dataset={name!r} is not one of {', '.join(sorted(DATASETS))}")
    spec = DATASETS[key]
    with files("cmcl_model.datasets").joinpath(spec.file).open("rb") as fh:
        frame = pd.read_csv(fh, compression="gzip" if spec.file.endswith(".gz") else None)
    return frame, spec


def _labels(frame: pd.DataFrame, tasks: Sequence[str], source: str) -> np.ndarray:
    out = np.empty((len(frame), len(tasks)), dtype=np.float64)
    for j, t in enumerate(tasks):
        col = frame[t]
        num = pd.to_numeric(col, errors="coerce")
        bad = num.isna() & col.notna() & (col.astype(str).str.strip() != "")
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            raise LabelledInputError(f"{source}: task {t!r} row {r}: label {col.iloc[r]!r} is not a number")
        out[:, j] = num.to_numpy(dtype=np.float64)
    return out


def _infer_kind(labels: np.ndarray) -> Kind:
    finite = labels[np.isfinite(labels)]
    return "classification" if finite.size and np.isin(finite, (0.0, 1.0)).all() else "regression"


def _validate(
    frame: pd.DataFrame, smiles_col: str, tasks: Sequence[str] | None, kind: str | None, name: str
) -> tuple[tuple[str, ...], np.ndarray]:
    """The module's input validator: columns present, labels numeric; returns (tasks, labels)."""
    if kind is not None and kind not in ("classification", "regression"):
        raise ValueError(f"kind={kind!r} is not one of 'classification', 'regression'")
    columns = [str(c) for c in frame.columns]
    if smiles_col not in columns:
        raise LabelledInputError(f"{name}: no SMILES column {smiles_col!r}; columns are {columns}")
    tasks = tuple(tasks) if tasks else tuple(c for c in columns if c != smiles_col)
    if not tasks:
        raise LabelledInputError(f"{name}: no task columns besides {smiles_col!r}")
    missing = [t for t in tasks if t not in columns]
    if missing:
        raise LabelledInputError(f"{name}: no task column(s) {missing}; columns are {columns}")
    return tasks, _labels(frame, tasks, name)


def _check_tasks(y: np.ndarray, tasks: Sequence[str], kind: str, name: str) -> None:
    for j, t in enumerate(tasks):
        col = y[:, j][np.isfinite(y[:, j])]
        if col.size == 0:
            raise LabelledInputError(f"{name}: task {t!r} has no labels on the valid molecules")
        if kind == "classification":
            if not np.isin(col, (0.0, 1.0)).all():
                bad = col[~np.isin(col, (0.0, 1.0))][0]
                raise LabelledInputError(f"{name}: classification task {t!r} has label {bad:g}; expected 0 or 1")
            if np.unique(col).size < 2:
                raise LabelledInputError(
                    f"{name}: task {t!r} has only one class ({col[0]:g}) among {col.size} labelled molecules; "
                    "ROC-AUC needs both 0 and 1"
                )


def check_labelled_csv(
    path: str | os.PathLike, *, smiles_col: str, tasks: Sequence[str] | None = None, kind: Kind | None = None
) -> None:
    """Fast pre-check of a user CSV before any model work: readable, columns present, labels
    numeric, at least one SMILES that RDKit parses, and (classification) both classes among
    the parseable rows. :func:`prepare_labelled` repeats the checks after standardization.

    Raises
    ------
    LabelledInputError
        One line naming the file and the problem.
    """
    from rdkit import Chem, rdBase

    frame = read_labelled_csv(path)
    name = str(path)
    tasks, labels = _validate(frame, smiles_col, tasks, kind, name)
    with rdBase.BlockLogs():
        ok = np.array([isinstance(s, str) and bool(s.strip()) and Chem.MolFromSmiles(s) is not None
                       for s in frame[smiles_col]], dtype=bool)
    if not ok.any():
        raise LabelledInputError(f"{name}: no valid SMILES in column {smiles_col!r} ({len(frame)} rows)")
    _check_tasks(labels[ok], tasks, kind or _infer_kind(labels), name)


def prepare_labelled(
    frame: pd.DataFrame,
    *,
    smiles_col: str,
    tasks: Sequence[str] | None = None,
    kind: Kind | None = None,
    name: str = "table",
    protocol: Protocol = "cmcl",
    featurizer: str | None = None,
) -> LabelledSet:
    """Standardize, featurise and check a labelled table.

    ``protocol='cmcl'`` standardizes every SMILES to its parent (salts stripped, charges
    neutralised) and featurises the parent; ``protocol='hu2020'`` follows Hu et al.'s
    ``loader.py``: the SMILES as given, parsed by RDKit (rows it cannot parse dropped), the
    whole molecule as parsed featurised with Hu et al.'s featurizer (counter-ions included;
    charges and hydrogens are not features) and ``smiles`` set to RDKit's canonical SMILES of
    it, on which the scaffold split is then computed.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per molecule.
    smiles_col : str
        Column holding SMILES.
    tasks : sequence of str, optional
        Label columns; default every column except ``smiles_col``.
    kind : {'classification', 'regression'}, optional
        Default: classification when every label is 0 or 1, else regression.
    name : str
        Used in messages (the file name) and as the set's name.
    protocol : {'cmcl', 'hu2020'}
    featurizer : {'ogb', 'hu2020'}, optional
        Default: the protocol's (:data:`cmcl_model.finetune.featurizers.PROTOCOL_MODEL`).

    Returns
    -------
    LabelledSet

    Raises
    ------
    LabelledInputError
        One line naming ``name`` and the problem: a missing column, a non-numeric label, no
        valid SMILES, a task without any label, a classification task with labels other than
        0/1 or with one class only.
    """
    from pipeline.chem.graphs import GraphError
    from rdkit import Chem, rdBase

    from cmcl_model.finetune.featurizers import FEATURIZERS, PROTOCOL_MODEL, featurize

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} is not one of {', '.join(PROTOCOLS)}")
    featurizer = featurizer or PROTOCOL_MODEL[protocol][0]
    if featurizer not in FEATURIZERS:
        raise ValueError(f"featurizer={featurizer!r} is not one of {', '.join(FEATURIZERS)}")
    as_given = protocol == "hu2020"
    tasks, labels = _validate(frame, smiles_col, tasks, kind, name)
    kind = kind or _infer_kind(labels)
    parse = _as_given if as_given else _standardized

    raw = frame[smiles_col]
    keep, parents, graphs, invalid, changed = [], [], [], [], 0
    cache: dict[str, tuple[str | None, str | None]] = {}
    for r, s in enumerate(raw):
        s = "" if pd.isna(s) else str(s)
        if s not in cache:
            cache[s] = parse(s)
        parent, err = cache[s]
        if parent is None:
            invalid.append({"row": r, "smiles": s, "reason": err or "standardization failed"})
            continue
        try:
            g = featurize(s if as_given else parent, featurizer=featurizer)  # type: ignore[arg-type]
        except GraphError as exc:
            invalid.append({"row": r, "smiles": s, "reason": str(exc)})
            continue
        with rdBase.BlockLogs():
            m = Chem.MolFromSmiles(s)
        changed += int(m is None or Chem.MolToSmiles(m) != parent)
        keep.append(r)
        parents.append(parent)
        graphs.append(g)
    if not keep:
        first = f"; first: row {invalid[0]['row']} {invalid[0]['smiles']!r}: {invalid[0]['reason']}" if invalid else ""
        raise LabelledInputError(f"{name}: no valid SMILES in column {smiles_col!r} ({len(frame)} rows{first})")
    y = labels[keep]
    _check_tasks(y, tasks, kind, name)
    return LabelledSet(
        name=name, kind=kind, tasks=tasks, smiles=parents, input_smiles=[str(raw.iloc[r]) for r in keep],
        rows=np.asarray(keep, dtype=np.int64), labels=y, graphs=graphs, invalid=invalid, n_input=len(frame),
        n_changed=changed, protocol=protocol, featurizer=featurizer,
    )


def _standardized(smiles: str) -> tuple[str | None, str | None]:
    """(cmcl's standardized parent SMILES, None) or (None, the reason)."""
    from pipeline.chem.standardize import standardize_smiles

    std = standardize_smiles(smiles)
    return std.smiles, std.error


def _as_given(smiles: str) -> tuple[str | None, str | None]:
    """(RDKit's canonical SMILES of the molecule as given, None) or (None, the reason):
    Hu et al.'s ``AllChem.MolToSmiles(AllChem.MolFromSmiles(s))``, no standardization."""
    from rdkit import Chem, rdBase

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles) if smiles.strip() else None
    if mol is None or mol.GetNumAtoms() == 0:
        return None, "RDKit cannot parse the SMILES"
    return Chem.MolToSmiles(mol), None


def scaffold_of(smiles: str) -> str:
    """Bemis-Murcko scaffold SMILES with chirality (Hu et al.'s ``generate_scaffold``); ''
    for acyclic molecules."""
    from pipeline.chem.scaffolds import scaffold

    return scaffold(smiles, chirality=True)  # with chirality, as Hu et al.'s split: theirs reproduced


def _scaffold_sets(smiles: Sequence[str]) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(smiles):
        groups.setdefault(scaffold_of(s), []).append(i)
    return list(groups.values())


def split_molecules(
    smiles: Sequence[str],
    *,
    mode: SplitMode = "scaffold",
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> np.ndarray:
    """Assign each molecule to 'train', 'val' or 'test'.

    Parameters
    ----------
    smiles : sequence of str
        N SMILES (standardized parents).
    mode : {'scaffold', 'random', 'scaffold_balanced'}
        ``'scaffold'``: deterministic, Hu et al. (2020) — scaffold sets sorted by size (ties:
        first index), largest first; each set goes to train while train stays within
        ``fractions[0] * N``, else to validation while train + validation stay within
        ``(fractions[0] + fractions[1]) * N``, else to test. ``'scaffold_balanced'``: chemprop's
        — sets larger than half the validation or test size first, the rest in a seeded random
        order; each set goes to the first of train/val/test it fits. ``'random'``: a seeded
        permutation cut at the fractions. ``seed`` is ignored by ``'scaffold'``.
    fractions : (3,) floats summing to 1
    seed : int

    Returns
    -------
    (N,) object ndarray of 'train' / 'val' / 'test'.

    Raises
    ------
    ValueError
        On an unknown mode or fractions that are negative or do not sum to 1.
    """
    if mode not in SPLIT_MODES:
        raise ValueError(f"split mode={mode!r} is not one of {', '.join(SPLIT_MODES)}")
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or abs(f.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    n = len(smiles)
    out = np.empty(n, dtype=object)
    if mode == "random":
        perm = np.random.default_rng(seed).permutation(n)
        a, b = int(round(f[0] * n)), int(round((f[0] + f[1]) * n))
        out[perm[:a]], out[perm[a:b]], out[perm[b:]] = "train", "val", "test"
        return out
    sets = _scaffold_sets(smiles)
    if mode == "scaffold":
        sets.sort(key=lambda s: (len(s), s[0]), reverse=True)
        train_cut, val_cut = f[0] * n, (f[0] + f[1]) * n
        n_train = n_val = 0
        for s in sets:
            if n_train + len(s) > train_cut:
                if n_train + n_val + len(s) > val_cut:
                    out[s] = "test"
                else:
                    out[s] = "val"
                    n_val += len(s)
            else:
                out[s] = "train"
                n_train += len(s)
        return out
    train_size, val_size = f[0] * n, f[1] * n
    test_size = n - train_size - val_size
    big = [s for s in sets if len(s) > val_size / 2 or len(s) > test_size / 2]
    small = [s for s in sets if not (len(s) > val_size / 2 or len(s) > test_size / 2)]
    rng = np.random.default_rng(seed)
    order = [big[i] for i in rng.permutation(len(big))] + [small[i] for i in rng.permutation(len(small))]
    n_train = n_val = 0
    for s in order:
        if n_train + len(s) <= train_size:
            out[s] = "train"
            n_train += len(s)
        elif n_val + len(s) <= val_size:
            out[s] = "val"
            n_val += len(s)
        else:
            out[s] = "test"
    return out


def split_table(data: LabelledSet, split: np.ndarray) -> pd.DataFrame:
    """The split as a table to write beside results: ``row`` (input row), ``input_smiles``,
    ``smiles`` (standardized), ``scaffold``, ``split``."""
    return pd.DataFrame(
        {
            "row": data.rows,
            "input_smiles": data.input_smiles,
            "smiles": data.smiles,
            "scaffold": [scaffold_of(s) for s in data.smiles],
            "split": np.asarray(split, dtype=str),
        }
    )
