"""Bemis-Murcko scaffolds: the one function every scaffold in cmcl comes from.

A scaffold is the ring systems of a molecule and the linkers between them, side chains removed
(Bemis & Murcko 1996, RDKit's ``MurckoScaffold.GetScaffoldForMol``); acyclic molecules have the
empty scaffold ``''``. Callers differ in one choice only, ``chirality``: whether the scaffold
SMILES keeps stereo (isomeric SMILES: tetrahedral centres and double-bond geometry), so that
stereoisomers whose stereo sits in the ring system get different scaffolds. Each caller says
why at its call:

* :func:`pipeline.chem.parents.merge_parents` (``Metadata_Scaffold`` of the ``compounds`` table,
  from which :func:`cmcl_model.data.pairs.scaffold_split` draws the train/val/test split) and
  :func:`cmcl_model.finetune.labelled.scaffold_of` (the MoleculeNet split): ``chirality=True``,
  Hu et al. (2020)'s ``generate_scaffold`` (``includeChirality=True``), which the field's
  scaffold splits follow;
* :func:`cmcl_model.evaluation.probing.scaffold_folds`: ``chirality=False``, so that
  stereoisomers always share a cross-validation fold (a probe is never scored on the mirror
  image of a molecule it was fitted on).
"""

from __future__ import annotations

from rdkit import Chem, rdBase
from rdkit.Chem.Scaffolds import MurckoScaffold

__all__ = ["ScaffoldError", "scaffold"]


class ScaffoldError(ValueError):
    """A SMILES has no scaffold because RDKit cannot parse it (or it has no atoms); the message quotes it."""


def scaffold(smiles: str, *, chirality: bool) -> str:
    """Bemis-Murcko scaffold SMILES of ``smiles``.

    Parameters
    ----------
    smiles : str
        A SMILES, parsed with RDKit's default sanitization.
    chirality : bool
        Keep stereo in the scaffold (isomeric SMILES; RDKit's ``includeChirality``). Required:
        the caller states its choice (see the module docstring).

    Returns
    -------
    str
        Canonical SMILES of the scaffold; ``''`` for an acyclic molecule. Equals RDKit's
        ``MurckoScaffold.MurckoScaffoldSmiles(smiles, includeChirality=chirality)``.

    Raises
    ------
    ScaffoldError
        If RDKit cannot parse ``smiles`` or it has no atoms.
    TypeError
        If ``smiles`` is not a string.
    """
    if not isinstance(smiles, str):
        raise TypeError(f"smiles must be a str, got {type(smiles).__name__}: {smiles!r}")
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        raise ScaffoldError(f"no scaffold for SMILES {smiles!r}: RDKit cannot parse it")
    if mol.GetRingInfo().NumRings() == 0:
        return ""
    return Chem.MolToSmiles(MurckoScaffold.GetScaffoldForMol(mol), isomericSmiles=chirality)
