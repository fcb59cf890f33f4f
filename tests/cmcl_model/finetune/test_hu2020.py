"""The hu2020 protocol: Hu et al.'s featurizer, their self-loop GIN layer and their scaffold split.

References are re-implemented here from Hu et al.'s published code (pretrain-gnns
``chem/loader.py``, ``chem/model.py``, ``chem/splitters.py``), written independently of cmcl's.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold
from torch_geometric.utils import add_self_loops

from cmcl_model.finetune.featurizers import feature_dims, featurize
from cmcl_model.finetune.labelled import load_shipped, prepare_labelled, split_molecules
from cmcl_model.finetune.run import FinetuneConfig, check_encoder_features, random_encoder
from cmcl_model.nn.encoders import BondEncoder, GINEncoder
from cmcl_model.nn.selfloop import SelfLoopGINConv
from pipeline.chem.graphs import GraphError, smiles_to_graph_hu2020


def test_hu2020_features_are_blind_to_charges_and_hydrogens():
    """A protonated amine (DrugBank style) and its free base: one graph for Hu et al., two for OGB."""
    hu = [smiles_to_graph_hu2020(s) for s in ("CC[NH3+]", "CCN")]
    np.testing.assert_array_equal(hu[0]["node_feat"], hu[1]["node_feat"])
    np.testing.assert_array_equal(hu[0]["edge_feat"], hu[1]["edge_feat"])
    assert hu[1]["node_feat"].tolist() == [[5, 0], [5, 0], [6, 0]]  # atomic number - 1, CHI_UNSPECIFIED
    ogb = [featurize(s, featurizer="ogb").x for s in ("CC[NH3+]", "CCN")]
    assert not torch.equal(ogb[0], ogb[1])


def test_hu2020_bond_type_direction_and_chirality():
    g = smiles_to_graph_hu2020("F/C=C/[C@H](Cl)c1ccccc1")
    # bond 0 F/C: single, ENDUPRIGHT; bond 1 C=C: double, NONE; aromatic ring bonds: 3
    assert g["edge_feat"][0].tolist() == [0, 1] and g["edge_feat"][2].tolist() == [1, 0]
    assert g["edge_feat"][-1].tolist() == [3, 0] and g["edge_index"].shape == (2, 2 * 11)
    assert g["node_feat"][3].tolist() in ([5, 1], [5, 2])  # the stereocentre: a tetrahedral tag
    assert feature_dims("hu2020") == ((119, 4), (5, 3)) and feature_dims("ogb")[0][0] == 119
    with pytest.raises(GraphError, match="as Hu et al.: atom 0 has atomic number 0"):
        smiles_to_graph_hu2020("*CC")
    with pytest.raises(ValueError, match="featurizer='x' is not one of ogb, hu2020"):
        feature_dims("x")


def _hu_gin_reference(conv: SelfLoopGINConv, x, edge_index, edge_attr):
    """Hu et al.'s GINConv.forward with conv's weights: add_self_loops, self-loop attr (4, 0),
    edge_embedding1(type) + edge_embedding2(direction), message x_j + e, sum, MLP."""
    n = x.size(0)
    ei, _ = add_self_loops(edge_index, num_nodes=n)
    loop = torch.zeros(n, 2, dtype=torch.long)
    loop[:, 0] = 4
    ea = torch.cat([edge_attr, loop])
    emb = conv.bond_encoder.embeddings[0](ea[:, 0]) + conv.bond_encoder.embeddings[1](ea[:, 1])
    out = torch.zeros_like(x).index_add_(0, ei[1], x[ei[0]] + emb)
    return conv.mlp(out)


def test_selfloop_conv_matches_hu_et_al_and_encoder_reads_their_dims():
    torch.manual_seed(0)
    enc = GINEncoder(2, 8, atom_dims=(119, 4), bond_dims=(5, 3), conv="selfloop")
    g = featurize("CC(=O)Oc1ccccc1C(=O)O.[Na+]", featurizer="hu2020")
    h = enc.atom_encoder(g.x)
    conv = enc.convs[0]
    torch.testing.assert_close(conv(h, g.edge_index, g.edge_attr), _hu_gin_reference(conv, h, g.edge_index, g.edge_attr))
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in conv.mlp)
    node, graph = enc(g.x, g.edge_index, g.edge_attr, torch.zeros(g.num_nodes, dtype=torch.long), 1)
    assert node.shape == (g.num_nodes, 8) and graph.shape == (1, 8)
    # the default encoder is unchanged: OGB dims, GINE layers
    torch.manual_seed(0)
    default = GINEncoder(2, 8)
    assert default.atom_encoder.dims == (119, 5, 12, 12, 10, 6, 6, 2, 2) and type(default.convs[0]).__name__ == "GINEConv"
    assert BondEncoder(8).dims == (5, 6, 2)


def test_pretrained_ogb_encoder_on_hu2020_graphs_fails_in_one_line():
    frame = pd.DataFrame({"smiles": ["CCO", "CCN", "c1ccccc1", "CC(=O)O"], "y": [0, 1, 0, 1]})
    data = prepare_labelled(frame, smiles_col="smiles", tasks=["y"], name="t", protocol="hu2020")
    check_encoder_features(random_encoder(FinetuneConfig(layers=1, hidden=8), featurizer="hu2020")(0), data)
    with pytest.raises(ValueError, match=r"reads 9 atom / 3 bond features but t's graphs \(hu2020 featurizer\) hold 2 / 2"
                                         r".*--protocol cmcl") as err:
        check_encoder_features(random_encoder(FinetuneConfig(layers=1, hidden=8))(0), data)
    assert "\n" not in str(err.value)


def _hu_scaffold_split(smiles_list, frac_train=0.8, frac_valid=0.1):
    """Hu et al.'s scaffold_split: Murcko scaffold with chirality of each SMILES; scaffold sets
    (indices sorted) ordered by (size, first index), largest first; train while it stays within
    frac_train * N, else valid while train + valid stay within (frac_train + frac_valid) * N,
    else test. Returns index lists."""
    sets = {}
    for i, s in enumerate(smiles_list):
        sets.setdefault(MurckoScaffold.MurckoScaffoldSmiles(smiles=s, includeChirality=True), []).append(i)
    ordered = sorted((sorted(v) for v in sets.values()), key=lambda v: (len(v), v[0]), reverse=True)
    train, valid, test = [], [], []
    for group in ordered:
        if len(train) + len(group) > frac_train * len(smiles_list):
            if len(train) + len(valid) + len(group) > (frac_train + frac_valid) * len(smiles_list):
                test += group
            else:
                valid += group
        else:
            train += group
    return train, valid, test


@pytest.mark.parametrize("name", ["bbbp", "clintox"])
def test_scaffold_split_is_hu_et_al_s(name):
    """cmcl's scaffold split under hu2020 puts every molecule where Hu et al.'s splitter does,
    applied as their loader prepares the SMILES (rows RDKit parses, RDKit's canonical SMILES)."""
    frame, spec = load_shipped(name)
    data = prepare_labelled(frame, smiles_col=spec.smiles_col, tasks=spec.tasks, kind=spec.kind, name=name,
                            protocol="hu2020")
    ours = split_molecules(data.smiles, mode="scaffold")
    canonical = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in data.input_smiles]
    train, valid, test = _hu_scaffold_split(canonical)
    ref = np.empty(len(data), dtype=object)
    ref[train], ref[valid], ref[test] = "train", "val", "test"
    assert (ours == ref).all()
    assert {k: int((ours == k).sum()) for k in ("train", "val", "test")} == {
        "bbbp": {"train": 1631, "val": 204, "test": 204}, "clintox": {"train": 1181, "val": 148, "test": 148}}[name]
