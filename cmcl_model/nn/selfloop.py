"""Hu et al. (2020)'s GIN layer: self-loops with their own bond type, plain sum, then an MLP.

pretrain-gnns ``chem/model.py`` ``GINConv``: every atom gets a self-loop edge whose bond features
are a reserved bond type (4) and direction 0; a message is the neighbour's representation plus
the edge's embedding, *without* a ReLU; messages are summed (the self-loop brings the atom's own
representation, so there is no ``(1 + eps) x`` term) and passed through
``Linear(h, 2h) - ReLU - Linear(2h, h)`` (no batch norm inside). cmcl's
:class:`~cmcl_model.nn.encoders.GINEConv` is OGB's variant: ReLU on messages, a learnable
``eps`` and batch norm inside the MLP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["SelfLoopGINConv"]


class SelfLoopGINConv(nn.Module):
    """GIN layer with self-loop edges and additive bond embeddings (Hu et al. 2020).

    .. math::
        x_i' = \\mathrm{MLP}\\Big(\\sum_{j \\in N(i) \\cup \\{i\\}} x_j + B(e_{ji})\\Big),
        \\qquad e_{ii} = \\text{self\\_loop\\_attr}

    Parameters
    ----------
    hidden : int
        Width h of atom representations.
    bond_encoder : nn.Module
        Bond features (E, F) long -> (E, h) (e.g. :class:`~cmcl_model.nn.encoders.BondEncoder`
        over Hu et al.'s features).
    self_loop_attr : sequence of int
        (F,) bond features of a self-loop edge (Hu et al.: bond type 4, direction 0).

    Shapes
    ------
    forward(x (N, h), edge_index (2, E) long (source row 0, target row 1), edge_attr (E, F) long)
    -> (N, h).
    """

    def __init__(self, hidden: int, bond_encoder: nn.Module, self_loop_attr: Sequence[int]) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden))
        self.bond_encoder = bond_encoder
        self.register_buffer("self_loop_attr", torch.tensor(list(self_loop_attr), dtype=torch.long), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.mlp:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        self.bond_encoder.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        n = x.size(0)
        loops = torch.arange(n, device=x.device)
        src = torch.cat([edge_index[0], loops])
        dst = torch.cat([edge_index[1], loops])
        attr = torch.cat([edge_attr.long(), self.self_loop_attr.expand(n, -1)])
        msg = x.index_select(0, src) + self.bond_encoder(attr)
        agg = msg.new_zeros((n, msg.size(1))).index_add_(0, dst, msg)
        return self.mlp(agg)
