"""Structure-only self-supervised pre-training of the GIN (Hu et al.'s attribute masking), the
structure-only baseline of the transfer benchmark, and the molecules it learns from."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from cmcl_model.finetune.tensors import GraphTensors
from cmcl_model.nn.encoders import GINEncoder

__all__ = ["attribute_masking_pretrain", "store_train_graphs", "ssl_encoder"]


def attribute_masking_pretrain(
    encoder: GINEncoder,
    graphs: Sequence,
    *,
    epochs: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    mask_rate: float = 0.15,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Structure-only self-supervised pre-training (Hu et al.'s attribute masking), in place.

    Each step masks ``mask_rate`` of the atoms (every feature replaced by its mask token) and
    trains the encoder + a linear head to predict the masked atoms' element (cross-entropy
    over the 119 atomic-number classes) from the node representations.

    Returns ``{"epochs", "steps", "final_loss", "wall_s"}``.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    torch.manual_seed(seed)
    gt = GraphTensors(graphs, device)
    encoder.to(device)
    head = nn.Linear(encoder.out_dim, int(encoder.atom_encoder.dims[0])).to(device)
    opt = torch.optim.Adam(list(encoder.parameters()) + list(head.parameters()), lr=lr)
    mask_index = encoder.atom_encoder.mask_index.to(device)
    gen = torch.Generator().manual_seed(seed)
    steps, loss = 0, torch.tensor(float("nan"))
    for _ in range(epochs):
        encoder.train()
        perm = torch.randperm(len(gt), generator=gen)
        for a in range(0, perm.numel(), batch_size):
            ids = perm[a : a + batch_size]
            if ids.numel() < 2:
                continue
            x, ei, ea, b, g = gt.batch(ids)
            masked = torch.rand(x.size(0), device=device) < mask_rate
            if not masked.any():
                masked[0] = True
            xm = torch.where(masked[:, None], mask_index[None, :], x)
            node = encoder.node_forward(xm, ei, ea)
            loss = nn.functional.cross_entropy(head(node[masked]), x[masked, 0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return {"epochs": int(epochs), "steps": steps, "final_loss": float(loss.detach()), "wall_s": time.perf_counter() - t0}


def store_train_graphs(store_root) -> list:
    """OGB graphs of the store's training-split compounds (what an image run learns from)."""
    from pipeline.chem.graphs import graphs_to_data
    from pipeline.store.paths import Store

    st = Store(store_root)
    graphs = st.read("graphs")
    split = st.read("split")
    train = set(split.loc[split["Split"].astype(str) == "train", "Metadata_InChIKey"].astype(str))
    keep = graphs["Metadata_InChIKey"].astype(str).isin(train).to_numpy()
    return graphs_to_data(graphs.loc[keep].reset_index(drop=True))


def ssl_encoder(
    graphs: Sequence, run_config, *, seed: int = 0, device: torch.device | str = "cpu"
) -> tuple[Callable[[int], GINEncoder], dict[str, Any]]:
    """Attribute-masking pre-training of the run's GIN architecture on ``graphs`` with the
    run's budget (epochs, batch size, learning rate); returns (seed -> a copy, its log)."""
    torch.manual_seed(seed)
    enc = GINEncoder(run_config.gin_layers, run_config.gin_hidden, dropout=run_config.gin_dropout,
                     jk=run_config.gin_jk, pooling=run_config.gin_pooling)
    info = attribute_masking_pretrain(enc, graphs, epochs=run_config.epochs, batch_size=run_config.batch_size,
                                      lr=run_config.lr, mask_rate=run_config.mask_rate, seed=seed, device=device)
    info["compounds"] = len(graphs)
    enc = enc.cpu()

    def make(s: int) -> GINEncoder:
        return copy.deepcopy(enc)

    return make, info
