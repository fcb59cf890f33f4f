"""Molecular-graph featurizers for fine-tuning, and what each protocol uses.

``'ogb'``: :func:`pipeline.chem.graphs.smiles_to_graph`, 9 atom and 3 bond features (atomic
number, chirality, degree, formal charge, hydrogens, radical electrons, hybridization,
aromaticity, ring; bond type, stereo, conjugation): what cmcl's graphs table and every
pre-trained cmcl encoder use.

``'hu2020'``: :func:`pipeline.chem.graphs.smiles_to_graph_hu2020`, Hu et al. (2020)'s
``mol_to_graph_data_obj_simple``: atom type and chirality, bond type and direction. It cannot
see formal charges or hydrogens, so a DrugBank-style protonated amine (``C[NH+](C)C``) and
its free base are the same graph, which the OGB features tell apart.

Protocols (:data:`PROTOCOL_MODEL`): ``'cmcl'`` featurises standardized parents with ``'ogb'``
and cmcl's GINE layer; ``'hu2020'`` featurises the SMILES as given with ``'hu2020'`` and Hu et
al.'s self-loop GIN layer (:class:`cmcl_model.nn.selfloop.SelfLoopGINConv`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch_geometric.data import Data

__all__ = ["Featurizer", "FEATURIZERS", "PROTOCOL_MODEL", "feature_dims", "featurize"]

Featurizer = Literal["ogb", "hu2020"]
FEATURIZERS: tuple[str, ...] = ("ogb", "hu2020")

#: protocol -> (featurizer, GIN layer of a random init).
PROTOCOL_MODEL: dict[str, tuple[str, str]] = {"cmcl": ("ogb", "gine"), "hu2020": ("hu2020", "selfloop")}


def _check(featurizer: str) -> None:
    if featurizer not in FEATURIZERS:
        raise ValueError(f"featurizer={featurizer!r} is not one of {', '.join(FEATURIZERS)}")


def feature_dims(featurizer: Featurizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(atom feature sizes, bond feature sizes) of ``featurizer``, for
    :class:`~cmcl_model.nn.encoders.GINEncoder`'s ``atom_dims`` / ``bond_dims``.

    Raises
    ------
    ValueError
        On an unknown featurizer (the message lists the valid ones).
    """
    from pipeline.chem import graphs

    _check(featurizer)
    if featurizer == "ogb":
        return tuple(graphs.ATOM_FEATURE_DIMS), tuple(graphs.BOND_FEATURE_DIMS)
    return tuple(graphs.HU2020_ATOM_FEATURE_DIMS), tuple(graphs.HU2020_BOND_FEATURE_DIMS)


def featurize(smiles: str, *, featurizer: Featurizer = "ogb") -> Data:
    """The graph of ``smiles`` as a PyG ``Data``: ``x`` (n, F_atom) long, ``edge_index``
    (2, E) long, ``edge_attr`` (E, F_bond) long (F = 9, 3 for ``'ogb'``; 2, 2 for ``'hu2020'``).

    Raises
    ------
    pipeline.chem.graphs.GraphError
        If the SMILES cannot be featurised (the message quotes it).
    ValueError
        On an unknown featurizer.
    """
    from pipeline.chem.graphs import smiles_to_graph, smiles_to_graph_hu2020

    _check(featurizer)
    g = smiles_to_graph(smiles) if featurizer == "ogb" else smiles_to_graph_hu2020(smiles)
    return Data(
        x=torch.as_tensor(g["node_feat"], dtype=torch.long),
        edge_index=torch.as_tensor(g["edge_index"], dtype=torch.long),
        edge_attr=torch.as_tensor(g["edge_feat"], dtype=torch.long),
        num_nodes=int(g["num_nodes"]),
    )
