"""The cross-modal model: graph encoder + image encoder + projection heads (+ MGM / GGIM heads)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from cmcl_model.nn.encoders import ATOM_FEATURE_DIMS

__all__ = ["ProjectionHead", "CMCLModel", "frozen_running_stats", "HeadBuilder", "mgm_head", "ggim_head"]

#: ``builder(graph_dim, proj_dim) -> nn.Module``: an objective's head, built by :class:`CMCLModel`
HeadBuilder = Callable[[int, int], nn.Module]


def mgm_head(graph_dim: int, proj_dim: int) -> nn.Module:
    """Masked-graph-modelling head: (N, graph_dim + proj_dim) node encoding fused with its
    graph's image embedding -> (N, 119) atom-type logits."""
    return nn.Sequential(nn.Linear(graph_dim + proj_dim, graph_dim), nn.ReLU(), nn.Linear(graph_dim, ATOM_FEATURE_DIMS[0]))


def ggim_head(graph_dim: int, proj_dim: int) -> nn.Module:
    """Graph-image matching head: (P, 2 proj_dim) fused pair -> (P, 1) logit."""
    return nn.Sequential(nn.Linear(2 * proj_dim, proj_dim), nn.ReLU(), nn.Linear(proj_dim, 1))


@contextlib.contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Batch norm inside uses batch statistics but leaves its running statistics untouched.

    The masked-graph (MGM) pass must not move them: evaluation sees unmasked graphs, and
    running statistics that mix in mask tokens made validation loss climb above chance while
    the training loss fell (demo store, seed 1: test Hit@10 0.22 -> 0.52 with this guard).
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class ProjectionHead(nn.Module):
    """Linear - ReLU - Linear projection into the shared space. (B, d_in) -> (B, d_out)."""

    def __init__(self, d_in: int, d_out: int, *, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(d_in, d_out)
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.net:
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CMCLModel(nn.Module):
    """Molecule <-> cell-image model (MIGA).

    Parameters
    ----------
    graph_encoder : GINEncoder
        Returns (node_repr, graph_repr); must expose ``out_dim``.
    image_encoder : ImageEncoder or ProfileEncoder
        (N, C, S, S) crops or (N, F) profiles -> (N, out_dim).
    proj_dim : int
        Size of the shared embedding space.
    heads : {name: HeadBuilder}
        The heads of the training objectives that need one (:mod:`cmcl_model.train.objectives`
        declares them), built in this order as attribute ``<name>_head``, e.g.
        ``{"mgm": mgm_head, "ggim": ggim_head}``. ``mgm_head`` and ``ggim_head`` are
        ``nn.Identity`` when not built.

    Shapes
    ------
    embed_graphs(Batch of B) -> (B, proj_dim); embed_images((B, K, C, S, S)) -> (B, proj_dim),
    the mean of the K crops' encoder features, projected. Embeddings are not normalised;
    losses and metrics normalise.
    """

    def __init__(
        self, graph_encoder: nn.Module, image_encoder: nn.Module, *, proj_dim: int = 128,
        heads: Mapping[str, HeadBuilder] | None = None,
    ) -> None:
        super().__init__()
        self.graph_encoder, self.image_encoder, self.proj_dim = graph_encoder, image_encoder, proj_dim
        gd, idim = graph_encoder.out_dim, image_encoder.out_dim
        self.graph_proj = ProjectionHead(gd, proj_dim)
        self.image_proj = ProjectionHead(idim, proj_dim)
        heads = dict(heads or {})
        self.mgm_head: nn.Module = nn.Identity()
        self.ggim_head: nn.Module = nn.Identity()
        for name, build in heads.items():
            self.add_module(f"{name}_head", build(gd, proj_dim))
        #: names of the built heads, in build (and reset) order
        self.head_names: tuple[str, ...] = tuple(heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.graph_encoder.reset_parameters()
        self.image_encoder.reset_parameters()
        self.graph_proj.reset_parameters()
        self.image_proj.reset_parameters()
        for name in self.head_names:
            for m in self.head(name).modules():
                if isinstance(m, nn.Linear):
                    m.reset_parameters()

    def forward(self, graphs: Batch, crops: Tensor, *, masked_x: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """One training forward: (graph embeddings (B, proj_dim), image embeddings (B, proj_dim),
        node encodings (N, d) of the graphs with atom features ``masked_x`` (N, 9), or None).

        The masked pass (MGM) runs with :func:`frozen_running_stats`. Going through ``forward``
        lets :class:`~torch.nn.parallel.DistributedDataParallel` see every parameter in use.
        """
        g = self.embed_graphs(graphs)
        i = self.embed_images(crops)
        nodes = None
        if masked_x is not None:
            with frozen_running_stats(self.graph_encoder):
                nodes = self.graph_encoder.node_forward(masked_x, graphs.edge_index, graphs.edge_attr)
        return g, i, nodes

    # -- graphs ---------------------------------------------------------------------------
    def encode_graphs(self, graphs: Batch) -> tuple[Tensor, Tensor]:
        """(node_repr (N, d), graph_repr (B, d)) from the graph encoder."""
        return self.graph_encoder(graphs.x, graphs.edge_index, graphs.edge_attr, graphs.batch, graphs.num_graphs)

    def embed_graphs(self, graphs: Batch) -> Tensor:
        return self.graph_proj(self.encode_graphs(graphs)[1])

    # -- images ---------------------------------------------------------------------------
    def encode_crops(self, crops: Tensor) -> Tensor:
        """(N, C, S, S) -> (N, d_image) encoder features."""
        return self.image_encoder(crops)

    def project_images(self, features: Tensor) -> Tensor:
        """(B, d_image) pooled encoder features -> (B, proj_dim)."""
        return self.image_proj(features)

    def embed_images(self, crops: Tensor) -> Tensor:
        """(B, K, C, S, S) crops, or (B, K, F) profiles with a profile encoder -> (B, proj_dim)."""
        if crops.dim() not in (3, 5):
            raise ValueError(f"expected crops (B, K, C, S, S) or profiles (B, K, F), got {tuple(crops.shape)}")
        b, k = crops.shape[:2]
        feats = self.encode_crops(crops.flatten(0, 1)).view(b, k, -1).mean(1)
        return self.project_images(feats)

    # -- auxiliary heads ------------------------------------------------------------------
    def head(self, name: str) -> nn.Module:
        """The head built for objective ``name``.

        Raises
        ------
        RuntimeError
            If the model was built without it.
        """
        if name not in self.head_names:
            raise RuntimeError(f"model was built without the {name!r} head (built: {', '.join(self.head_names) or 'none'})")
        return getattr(self, f"{name}_head")

    def mgm_logits(self, node_repr: Tensor, node_batch: Tensor, image_emb: Tensor) -> Tensor:
        """Atom-type logits (N, 119) from node encodings fused with the paired image embedding."""
        return self.head("mgm")(torch.cat([node_repr, image_emb[node_batch]], dim=-1))

    def ggim_logits(self, graph_emb: Tensor, image_emb: Tensor) -> Tensor:
        """Matching logits (P,) of pairs (graph_emb[p], image_emb[p])."""
        g = nn.functional.normalize(graph_emb, dim=-1)
        i = nn.functional.normalize(image_emb, dim=-1)
        return self.head("ggim")(torch.cat([g * i, (g - i).abs()], dim=-1)).squeeze(-1)
