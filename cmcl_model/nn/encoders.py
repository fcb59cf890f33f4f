"""Graph and image encoders for the molecule <-> cell-image contrastive model.

The graph side follows Hu et al. (2020) / OGB: categorical atom and bond features are embedded
with one table per feature and summed, then a GIN with edge embeddings (GINE) updates the atoms.
The image side is a small ResNet-style CNN written in plain torch (torchvision does not import
here) for 5-channel single-cell crops of 16-128 px, or, in profile mode, an MLP over a well's
CellProfiler profile (:class:`ProfileEncoder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch_geometric.nn import global_add_pool, global_mean_pool
from torch_geometric.nn.aggr import AttentionalAggregation

from pipeline.chem import graphs as _graphs
__all__ = [
    "ATOM_FEATURE_DIMS",
    "BOND_FEATURE_DIMS",
    "AtomEncoder",
    "BondEncoder",
    "GINEConv",
    "GINEncoder",
    "BasicBlock",
    "ImageEncoder",
    "ProfileEncoder",
]

#: Vocabulary sizes of the 9 OGB atom and 3 bond features, as defined by the featurizer
#: (:mod:`pipeline.chem.graphs`) that writes the graphs table.
ATOM_FEATURE_DIMS: tuple[int, ...] = tuple(_graphs.ATOM_FEATURE_DIMS)
BOND_FEATURE_DIMS: tuple[int, ...] = tuple(_graphs.BOND_FEATURE_DIMS)

JK = Literal["last", "sum", "concat"]
Pooling = Literal["mean", "sum", "attention"]
_JK = ("last", "sum", "concat")
_POOLING = ("mean", "sum", "attention")
Conv = Literal["gine", "selfloop"]
_CONV = ("gine", "selfloop")


def _check_choice(value: str, valid: Sequence[str], what: str) -> None:
    if value not in valid:
        raise ValueError(f"{what}={value!r} is not one of {', '.join(map(repr, valid))}")


class _FeatureEmbedding(nn.Module):
    """Sum of one embedding table per categorical feature column.

    Each table has one extra row, index ``dims[k]``, used as a *mask token* (masked graph
    modelling replaces every feature of a masked atom by its mask index).

    .. math:: h = \\sum_k E_k[x_{:, k}]

    Shapes: ``x`` (N, F) integer -> (N, hidden) float.
    """

    def __init__(self, hidden: int, dims: Sequence[int]) -> None:
        super().__init__()
        self.dims = tuple(int(d) for d in dims)
        self.embeddings = nn.ModuleList(nn.Embedding(d + 1, hidden) for d in self.dims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for emb in self.embeddings:
            nn.init.xavier_uniform_(emb.weight)

    @property
    def mask_index(self) -> Tensor:
        """(F,) long tensor of each feature's mask-token index."""
        return torch.tensor(self.dims, dtype=torch.long)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.size(1) != len(self.dims):
            raise ValueError(f"expected features of shape (N, {len(self.dims)}), got {tuple(x.shape)}")
        x = x.long()
        out = self.embeddings[0](x[:, 0])
        for k in range(1, len(self.dims)):
            out = out + self.embeddings[k](x[:, k])
        return out


class AtomEncoder(_FeatureEmbedding):
    """Atom features (N, len(dims)) -> (N, hidden), sum of per-feature embeddings; ``dims``
    default to the 9 OGB features."""

    def __init__(self, hidden: int, dims: Sequence[int] = ATOM_FEATURE_DIMS) -> None:
        super().__init__(hidden, dims)


class BondEncoder(_FeatureEmbedding):
    """Bond features (E, len(dims)) -> (E, hidden), sum of per-feature embeddings; ``dims``
    default to the 3 OGB features."""

    def __init__(self, hidden: int, dims: Sequence[int] = BOND_FEATURE_DIMS) -> None:
        super().__init__(hidden, dims)


class GINEConv(nn.Module):
    """GIN layer with bond embeddings (Hu et al. 2020).

    .. math::
        x_i' = \\mathrm{MLP}\\Big((1 + \\epsilon) x_i + \\sum_{j \\in N(i)}
               \\mathrm{ReLU}(x_j + \\mathrm{BondEncoder}(e_{ji}))\\Big)

    with MLP = Linear(h, 2h) - BatchNorm - ReLU - Linear(2h, h) and a learnable ``eps``.

    ``bond_dims``: vocabulary sizes of the bond features (default: the 3 OGB features).

    Shapes: x (N, h), edge_index (2, E) long (source row 0, target row 1), edge_attr
    (E, len(bond_dims)) -> (N, h).
    """

    def __init__(self, hidden: int, bond_dims: Sequence[int] = BOND_FEATURE_DIMS) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.BatchNorm1d(2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden)
        )
        self.eps = nn.Parameter(torch.zeros(1))
        self.bond_encoder = BondEncoder(hidden, bond_dims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.mlp:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        nn.init.zeros_(self.eps)
        self.bond_encoder.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        src, dst = edge_index[0], edge_index[1]
        msg = torch.relu(x.index_select(0, src) + self.bond_encoder(edge_attr))
        agg = msg.new_zeros(x.shape).index_add_(0, dst, msg)  # msg's dtype: float32 sums under bf16 autocast
        return self.mlp((1 + self.eps) * x + agg)


def _make_conv(conv: str, hidden: int, bond_dims: tuple[int, ...]) -> nn.Module:
    if conv == "gine":
        return GINEConv(hidden, bond_dims)
    from cmcl_model.nn.selfloop import SelfLoopGINConv

    return SelfLoopGINConv(hidden, BondEncoder(hidden, bond_dims), (bond_dims[0] - 1,) + (0,) * (len(bond_dims) - 1))


class GINEncoder(nn.Module):
    """GIN molecule encoder (OGB / Hu et al. 2020 "GNN_node" + pooling).

    Parameters
    ----------
    num_layers : int
        Message-passing layers (paper: 5).
    hidden : int
        Width of atom embeddings (paper: 300).
    dropout : float
        Dropout after every layer.
    jk : {'last', 'sum', 'concat'}
        Jumping knowledge: node representation = last layer, sum of all layers' outputs
        (including the input embedding), or their concatenation (layers only).
    pooling : {'mean', 'sum', 'attention'}
        Readout from atoms to the molecule.
    atom_dims, bond_dims : sequence of int
        Vocabulary sizes of the atom and bond features (default: OGB's 9 and 3, the graphs
        table's; :data:`pipeline.chem.graphs.HU2020_ATOM_FEATURE_DIMS` and
        ``HU2020_BOND_FEATURE_DIMS`` for Hu et al.'s featurizer).
    conv : {'gine', 'selfloop'}
        Message-passing layer: :class:`GINEConv` (OGB's: ReLU messages, learnable eps, batch
        norm in the MLP) or :class:`~cmcl_model.nn.selfloop.SelfLoopGINConv` (Hu et al.'s:
        self-loop edges of bond type ``bond_dims[0] - 1``, the category Hu et al.'s featurizer
        reserves for them, plain sums, no batch norm in the MLP).

    Attributes
    ----------
    out_dim : int
        Size of node and graph representations (``hidden``, or ``num_layers * hidden`` for
        ``jk='concat'``).

    Shapes
    ------
    forward(x (N, len(atom_dims)) long, edge_index (2, E) long, edge_attr (E, len(bond_dims)) long,
    batch (N,) long)
    -> (node_repr (N, out_dim), graph_repr (G, out_dim)).
    """

    def __init__(
        self,
        num_layers: int = 5,
        hidden: int = 300,
        *,
        dropout: float = 0.1,
        jk: JK = "last",
        pooling: Pooling = "mean",
        atom_dims: Sequence[int] = ATOM_FEATURE_DIMS,
        bond_dims: Sequence[int] = BOND_FEATURE_DIMS,
        conv: Conv = "gine",
    ) -> None:
        super().__init__()
        _check_choice(jk, _JK, "jk")
        _check_choice(pooling, _POOLING, "pooling")
        _check_choice(conv, _CONV, "conv")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.num_layers, self.hidden, self.dropout, self.jk, self.pooling = num_layers, hidden, dropout, jk, pooling
        self.out_dim = hidden * num_layers if jk == "concat" else hidden
        self.atom_dims, self.bond_dims, self.conv = tuple(atom_dims), tuple(bond_dims), conv
        self.atom_encoder = AtomEncoder(hidden, atom_dims)
        self.convs = nn.ModuleList(_make_conv(conv, hidden, self.bond_dims) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(num_layers))
        self.attention: nn.Module = (
            AttentionalAggregation(gate_nn=nn.Linear(self.out_dim, 1)) if pooling == "attention" else nn.Identity()
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.atom_encoder.reset_parameters()
        for conv, norm in zip(self.convs, self.norms):
            conv.reset_parameters()
            norm.reset_parameters()
        if hasattr(self.attention, "reset_parameters"):
            self.attention.reset_parameters()

    def node_forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """Atom representations (N, out_dim) only."""
        h = self.atom_encoder(x)
        hs = [h]
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = norm(conv(h, edge_index, edge_attr))
            if i < self.num_layers - 1:
                h = torch.relu(h)
            h = nn.functional.dropout(h, self.dropout, training=self.training)
            hs.append(h)
        if self.jk == "last":
            return h
        if self.jk == "sum":
            return torch.stack(hs, 0).sum(0)
        return torch.cat(hs[1:], dim=-1)

    def pool(self, node_repr: Tensor, batch: Tensor, num_graphs: int | None = None) -> Tensor:
        """Readout (N, out_dim) -> (G, out_dim)."""
        if self.pooling == "mean":
            return global_mean_pool(node_repr, batch, num_graphs)
        if self.pooling == "sum":
            return global_add_pool(node_repr, batch, num_graphs)
        return self.attention(node_repr, batch, dim_size=num_graphs)

    def forward(
        self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor, num_graphs: int | None = None
    ) -> tuple[Tensor, Tensor]:
        node = self.node_forward(x, edge_index, edge_attr)
        return node, self.pool(node, batch, num_graphs)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with batch norm and an identity or 1x1 shortcut.

    Shapes: (B, c_in, H, W) -> (B, c_out, ceil(H/stride), ceil(W/stride)).
    """

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
        nn.init.zeros_(self.bn2.weight)  # each residual branch starts as identity

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ImageEncoder(nn.Module):
    """Small ResNet for single-cell Cell Painting crops.

    Stem conv 3x3 (stride ``stem_stride``) -> one stage of ``blocks`` BasicBlocks per entry of
    ``widths`` (first stage stride 1, the others stride 2) -> global average pool.

    Parameters
    ----------
    in_channels : int
        Image channels (5 for Cell Painting).
    widths : sequence of int
        Channels of each stage, e.g. ``(16, 32, 64, 128)``.
    blocks : int
        BasicBlocks per stage.
    stem_stride : int
        Stride of the stem (2 halves compute for 96-128 px crops).

    Attributes
    ----------
    out_dim : int
        ``widths[-1]``.

    Shapes
    ------
    forward: (B, in_channels, S, S) float -> (B, out_dim).
    """

    def __init__(
        self, in_channels: int = 5, widths: Sequence[int] = (16, 32, 64, 128), *, blocks: int = 1, stem_stride: int = 1
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or blocks < 1:
            raise ValueError(f"need at least one stage and one block, got widths={widths}, blocks={blocks}")
        self.in_channels, self.out_dim = in_channels, widths[-1]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        c = widths[0]
        for i, w in enumerate(widths):
            for b in range(blocks):
                layers.append(BasicBlock(c, w, stride=2 if (i > 0 and b == 0) else 1))
                c = w
        self.stages = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.stem[0].weight, mode="fan_out", nonlinearity="relu")
        self.stem[1].reset_parameters()
        for block in self.stages:
            block.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.size(1) != self.in_channels:
            raise ValueError(f"expected crops of shape (B, {self.in_channels}, S, S), got {tuple(x.shape)}")
        return self.stages(self.stem(x)).mean(dim=(2, 3))


class ProfileEncoder(nn.Module):
    """MLP over standardized CellProfiler profiles (profile-mode pre-training).

    ``Linear -> BatchNorm -> ReLU -> Dropout`` per hidden width; the last hidden layer's output
    is the feature that :class:`~cmcl_model.nn.model.CMCLModel` averages over a sample's profiles
    and projects, exactly as it does with a CNN's crop features.

    Parameters
    ----------
    in_features : int
        Features per profile (the union of the training tables' feature columns).
    widths : sequence of int
        Hidden widths, e.g. ``(512, 256)``; ``out_dim = widths[-1]``.
    dropout : float
        Dropout after each hidden layer (training only).

    Shapes
    ------
    forward: (B, in_features) float -> (B, out_dim).
    """

    def __init__(self, in_features: int, widths: Sequence[int] = (512, 256), *, dropout: float = 0.1) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if in_features < 1 or not widths or min(widths) < 1:
            raise ValueError(f"ProfileEncoder needs in_features >= 1 and positive widths, got {in_features}, {widths}")
        self.in_features, self.out_dim = int(in_features), widths[-1]
        layers: list[nn.Module] = []
        d = self.in_features
        for w in widths:
            layers += [nn.Linear(d, w), nn.BatchNorm1d(w), nn.ReLU(), nn.Dropout(dropout)]
            d = w
        self.net = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.net:
            if isinstance(m, (nn.Linear, nn.BatchNorm1d)):
                m.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.size(1) != self.in_features:
            raise ValueError(f"expected profiles of shape (B, {self.in_features}), got {tuple(x.shape)}")
        return self.net(x)
