"""Compound standardization: input records -> standardized parent structures.

The reference behaviour is the ChEMBL structure pipeline (``standardize_mol`` followed by
``get_parent_mol``), re-implemented on :mod:`rdkit.Chem.MolStandardize` with its own salt and
solvent dictionary. :func:`standardize_mol` runs, in order:

1. parse without sanitization (so fixable inputs such as pentavalent nitro groups survive);
2. the rules of :mod:`pipeline.chem.rules` (:data:`~pipeline.chem.rules.RULES`: drop substance
   groups, kekulize, remove explicit hydrogens, break alkali-metal--O/N bonds into ion pairs,
   the functional-group normalizations of RDKit's MolVS set, neutralize charges where a neutral
   form exists); a new rule goes there;
3. the parent (:func:`pipeline.chem.salts.strip_salts`): isotopes cleared, solvent fragments
   removed (all of them solvents: keep the input), then counter-ion fragments removed (all of
   them counter-ions: keep them all, the ChEMBL edge case); identical remaining fragments are
   collapsed; the parent is neutralized again; a new counter-ion or solvent goes there;
4. sanitize; optionally canonicalize the tautomer (off by default, as in ChEMBL);
5. canonical isomeric SMILES, standard InChI and InChIKey (:func:`standardize_smiles`).

Stereochemistry is kept. Per-molecule functions raise
:class:`~pipeline.chem.rules.StandardizationError`; the table-level functions
(:func:`standardize_table`, :func:`standardize_stream`, worker processes from
:mod:`pipeline.chem.batch`) turn it into ``Status``/``Error`` columns and never drop a row.
Parents are merged by :func:`pipeline.chem.parents.merge_parents`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
import pandas as pd
from rdkit import Chem
from rdkit.Chem.MolStandardize import rdMolStandardize

from pipeline.chem.batch import check_n_jobs, chem_pool, split_evenly
from pipeline.chem.choices import FRAGMENT_MODES, FragmentMode
from pipeline.chem.rdkit_log import last_message, quiet_rdkit
from pipeline.chem.rules import StandardizationError, normalize
from pipeline.chem.salts import strip_salts

__all__ = [
    "StandardizedCompound",
    "RECORD_COLUMNS",
    "standardize_mol",
    "standardize_smiles",
    "standardize_table",
    "standardize_stream",
]

#: Columns every input-record frame must have (``Error`` is optional: a reader's failure).
RECORD_COLUMNS: tuple[str, ...] = ("Metadata_Source", "Metadata_CompoundID", "Input_SMILES")


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


@cache
def _tautomer_enumerator() -> rdMolStandardize.TautomerEnumerator:
    return rdMolStandardize.TautomerEnumerator()


# ---------------------------------------------------------------------------------------------
# Per molecule
# ---------------------------------------------------------------------------------------------


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
    if fragments not in FRAGMENT_MODES:
        raise ValueError(f"fragments={fragments!r}; valid modes: {', '.join(FRAGMENT_MODES)}")
    if mol is None or mol.GetNumAtoms() == 0:
        raise StandardizationError("empty molecule")
    with quiet_rdkit() as capture:
        try:
            parent = strip_salts(normalize(mol), fragments=fragments)
            Chem.SanitizeMol(parent)
            if canonicalize_tautomer:
                parent = _tautomer_enumerator().Canonicalize(parent)
        except Chem.MolSanitizeException as exc:
            raise StandardizationError(str(exc).strip()) from None
        except RuntimeError as exc:  # RDKit invariant violations surface as RuntimeError
            reason = last_message(capture) or str(exc).strip()
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
            detail = last_message(capture)
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
            detail = last_message(capture)
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
    check_n_jobs(n_jobs)
    records = records.reset_index(drop=True)
    todo = _pending(records)
    smiles = _smiles_list(records, todo)
    if n_jobs == 1 or len(smiles) < 2:
        results = _standardize_batch(smiles, canonicalize_tautomer, fragments)
    else:
        with chem_pool(n_jobs) as pool:
            futures = [
                pool.submit(_standardize_batch, part, canonicalize_tautomer, fragments)
                for part in split_evenly(smiles, n_jobs * 4)
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
    check_n_jobs(n_jobs)
    if n_jobs == 1:
        for chunk in chunks:
            yield standardize_table(
                chunk, canonicalize_tautomer=canonicalize_tautomer, fragments=fragments
            )
        return
    with chem_pool(n_jobs) as pool:
        queue: deque[tuple[pd.DataFrame, np.ndarray, list[Future]]] = deque()
        for chunk in chunks:
            _validate_records(chunk)
            chunk = chunk.reset_index(drop=True)
            todo = _pending(chunk)
            futures = [
                pool.submit(_standardize_batch, part, canonicalize_tautomer, fragments)
                for part in split_evenly(_smiles_list(chunk, todo), n_jobs * 2)
            ]
            queue.append((chunk, todo, futures))
            if len(queue) > 1:
                yield _collect(*queue.popleft())
        while queue:
            yield _collect(*queue.popleft())


def _collect(chunk: pd.DataFrame, todo: np.ndarray, futures: list[Future]) -> pd.DataFrame:
    return _assemble(chunk, [r for f in futures for r in f.result()], todo)
