"""Molecular graphs held as concatenated tensors, batched by index without Python loops."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["GraphTensors"]


class GraphTensors:
    """A set of molecular graphs held as concatenated tensors, batched by index without Python loops.

    Parameters
    ----------
    graphs : sequence of torch_geometric.data.Data
        ``x`` (n, F_atom), ``edge_index`` (2, e), ``edge_attr`` (e, F_bond) (OGB: 9, 3; Hu et al.: 2, 2).
    device : torch.device

    ``batch(ids)`` returns ``(x (N, F_atom), edge_index (2, E), edge_attr (E, F_bond), batch (N,), G)``
    for the graphs ``ids`` (G,) in that order, same as ``Batch.from_data_list``.
    """

    def __init__(self, graphs: Sequence, device: torch.device | str = "cpu") -> None:
        nn_ = torch.tensor([int(g.num_nodes) for g in graphs], dtype=torch.long)
        ne = torch.tensor([int(g.edge_index.shape[1]) for g in graphs], dtype=torch.long)
        self.device = torch.device(device)
        self.x = torch.cat([g.x for g in graphs]).to(self.device)
        self.edge_index = torch.cat([g.edge_index for g in graphs], dim=1).to(self.device)  # local indices
        self.edge_attr = torch.cat([g.edge_attr for g in graphs]).to(self.device)
        self.n_nodes, self.n_edges = nn_.to(self.device), ne.to(self.device)
        self.node_ptr = (torch.cumsum(nn_, 0) - nn_).to(self.device)
        self.edge_ptr = (torch.cumsum(ne, 0) - ne).to(self.device)

    def __len__(self) -> int:
        return int(self.n_nodes.numel())

    @staticmethod
    def _ranges(starts: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
        offsets = torch.cumsum(counts, 0) - counts
        total = int(counts.sum())
        idx = torch.repeat_interleave(starts - offsets, counts, output_size=total)
        return idx + torch.arange(total, device=starts.device), offsets

    def batch(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        ids = ids.to(self.device)
        n, e = self.n_nodes[ids], self.n_edges[ids]
        node_idx, node_off = self._ranges(self.node_ptr[ids], n)
        edge_idx, _ = self._ranges(self.edge_ptr[ids], e)
        g = int(ids.numel())
        shift = torch.repeat_interleave(node_off, e, output_size=edge_idx.numel())
        batch = torch.repeat_interleave(torch.arange(g, device=self.device), n, output_size=node_idx.numel())
        return self.x[node_idx], self.edge_index[:, edge_idx] + shift, self.edge_attr[edge_idx], batch, g
