import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from cmcl_model.nn.encoders import ATOM_FEATURE_DIMS, AtomEncoder, BondEncoder, GINEncoder, ImageEncoder
from pipeline.chem.graphs import smiles_to_graph


def _batch(smiles=("CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1")):
    data = []
    for s in smiles:
        g = smiles_to_graph(s)
        data.append(Data(x=torch.from_numpy(g["node_feat"]), edge_index=torch.from_numpy(g["edge_index"]),
                         edge_attr=torch.from_numpy(g["edge_feat"])))
    return Batch.from_data_list(data)


def test_feature_encoders_shapes_and_mask_token():
    x = torch.zeros(7, 9, dtype=torch.long)
    assert AtomEncoder(16)(x).shape == (7, 16)
    assert BondEncoder(8)(torch.zeros(4, 3, dtype=torch.long)).shape == (4, 8)
    enc = AtomEncoder(16)
    assert enc(enc.mask_index[None]).shape == (1, 16)  # mask tokens are valid indices
    assert enc.mask_index.tolist() == list(ATOM_FEATURE_DIMS)
    with pytest.raises(ValueError, match="shape"):
        enc(torch.zeros(3, 4, dtype=torch.long))


@pytest.mark.parametrize("jk", ["last", "sum", "concat"])
@pytest.mark.parametrize("pooling", ["mean", "sum", "attention"])
def test_gin_shapes(jk, pooling):
    b = _batch()
    enc = GINEncoder(3, 32, jk=jk, pooling=pooling)
    node, graph = enc(b.x, b.edge_index, b.edge_attr, b.batch, b.num_graphs)
    d = 96 if jk == "concat" else 32
    assert enc.out_dim == d
    assert node.shape == (b.num_nodes, d) and graph.shape == (3, d)
    assert torch.isfinite(graph).all()


def test_gin_bad_option_lists_valid_ones():
    with pytest.raises(ValueError, match="'mean', 'sum', 'attention'"):
        GINEncoder(2, 8, pooling="max")


def test_reset_parameters_reinitialises():
    enc = GINEncoder(2, 16)
    w = enc.atom_encoder.embeddings[0].weight.detach().clone()
    enc.reset_parameters()
    assert not torch.equal(w, enc.atom_encoder.embeddings[0].weight)
    torch.manual_seed(0)
    img = ImageEncoder(5, (8, 16))
    before = [q.detach().clone() for q in img.parameters()]
    x = torch.randn(2, 5, 16, 16)
    img.eval()
    out = img(x).detach()
    img.reset_parameters()
    after = list(img.parameters())
    assert len(after) == len(before)
    weights = [(b, a) for b, a in zip(before, after) if b.dim() > 1]  # conv/linear weights are redrawn
    assert weights and all(not torch.equal(b, a) for b, a in weights)
    assert not torch.allclose(img(x), out)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_image_encoder_shapes(size):
    enc = ImageEncoder(5, (8, 16, 32))
    assert enc(torch.randn(4, 5, size, size)).shape == (4, 32)
    assert ImageEncoder(5, (8, 16), blocks=2, stem_stride=2)(torch.randn(2, 5, size, size)).shape == (2, 16)
    with pytest.raises(ValueError, match="crops of shape"):
        enc(torch.randn(4, 3, size, size))


def test_smiles_to_graph_matches_ogb():
    ogb = pytest.importorskip("ogb.utils")
    for s in ["CC(=O)Nc1ccc(O)cc1", "C[C@H](N)C(=O)O", "O=[N+]([O-])c1ccccc1Cl", "C/C=C/C"]:
        mine, ref = smiles_to_graph(s), ogb.smiles2graph(s)
        np.testing.assert_array_equal(mine["node_feat"], ref["node_feat"])
        np.testing.assert_array_equal(mine["edge_index"], ref["edge_index"])
        np.testing.assert_array_equal(mine["edge_feat"], ref["edge_feat"])
