"""Training objectives as a list: the contrastive base (GIC) plus registered auxiliary objectives.

GIC (:class:`~cmcl_model.nn.losses.GICLoss`: InfoNCE + margin) is always on. Every other
objective is an :class:`Objective` in :data:`OBJECTIVES`, registered once with :func:`register`;
the loop adds ``weight * term`` of each one whose weight in the config is > 0 (training only),
:func:`~cmcl_model.train.build.build_model` builds the heads they declare, and the ablation
(:mod:`cmcl_model.train.ablation`) makes a ``gic+<name>`` variant of each. Adding a loss is the
loss and one :func:`register` line::

    def _uniformity(x: ObjectiveInputs) -> tuple[Tensor, float]:
        term = torch.pdist(F.normalize(x.all_graph_emb, dim=-1)).pow(2).mul(-2).exp().mean().log()
        return term, float(term.detach())

    register(Objective("uniformity", _uniformity))   # --set objective_weights='{"uniformity": 0.1}'

An objective without a ``weight_field`` of its own takes its weight from
``TrainConfig.objective_weights[name]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cmcl_model.data.pairs import PairBatch
from cmcl_model.nn.losses import GICLoss, ggim_loss, hard_negatives
from cmcl_model.nn.model import CMCLModel, HeadBuilder, ggim_head, mgm_head
from cmcl_model.train.config import TrainConfig
from cmcl_model.train.distributed import DistContext, all_reduce_sum, gather_counts, gather_rows

__all__ = ["Objective", "ObjectiveInputs", "OBJECTIVES", "register", "unregister", "enabled_objectives",
           "build_loss", "compute_losses", "step_generator", "mask_atoms"]


@dataclass(frozen=True)
class ObjectiveInputs:
    """What an objective's ``compute`` sees of one training step.

    ``graph_emb``/``image_emb`` are this process's (B_local, D) float32 embeddings,
    ``all_graph_emb``/``all_image_emb`` the global batch's (B, D) (gathered with gradients in a
    data-parallel run; the same tensors in one process). ``nodes`` are the (N, d) node
    encodings of the masked graphs when an objective's ``prepare`` asked for ``masked_x``;
    ``state`` is what this objective's ``prepare`` returned.
    """

    model: CMCLModel
    batch: PairBatch
    config: TrainConfig
    step: int
    ctx: DistContext | None
    graph_emb: Tensor
    image_emb: Tensor
    all_graph_emb: Tensor
    all_image_emb: Tensor
    nodes: Tensor | None
    state: dict[str, Any] = field(default_factory=dict)


#: ``prepare(model, batch, config, step, ctx) -> (forward kwargs, state)``: runs before the forward
Prepare = Callable[[CMCLModel, PairBatch, TrainConfig, int, "DistContext | None"], tuple[dict[str, Any], dict[str, Any]]]


@dataclass(frozen=True)
class Objective:
    """One auxiliary training objective.

    Parameters
    ----------
    name : str
        Its name: the ``train_<name>`` metric, the ``gic+<name>`` ablation variant, the head's
        attribute ``<name>_head``.
    compute : callable
        ``compute(ObjectiveInputs) -> (term scalar Tensor, logged float)``; the loss adds
        ``weight * term``.
    weight_field : str, optional
        The :class:`TrainConfig` field holding its weight; default ``objective_weights[name]``.
    head : HeadBuilder, optional
        ``builder(graph_dim, proj_dim) -> nn.Module``, built when the objective is on.
    prepare : callable, optional
        ``prepare(model, batch, config, step, ctx) -> (forward kwargs, state)`` before the forward
        (MGM masks atoms and asks for the masked graphs' node encodings).
    default_weight : float
        The ablation's weight when the base config has it at 0.
    """

    name: str
    compute: Callable[[ObjectiveInputs], tuple[Tensor, float]]
    weight_field: str | None = None
    head: HeadBuilder | None = None
    prepare: Prepare | None = None
    default_weight: float = 0.5

    def weight(self, config: TrainConfig) -> float:
        """This objective's weight in ``config`` (0: off)."""
        if self.weight_field is not None:
            return float(getattr(config, self.weight_field))
        return float(config.objective_weights.get(self.name, 0.0))

    def with_weight(self, config: TrainConfig, weight: float) -> TrainConfig:
        """``config`` with this objective's weight set to ``weight``."""
        import dataclasses

        if self.weight_field is not None:
            return dataclasses.replace(config, **{self.weight_field: weight})
        return dataclasses.replace(config, objective_weights={**config.objective_weights, self.name: weight})


#: the registered auxiliary objectives, in the order their terms are added
OBJECTIVES: dict[str, Objective] = {}


def register(objective: Objective) -> Objective:
    """Add ``objective`` to :data:`OBJECTIVES` (after those there).

    Raises
    ------
    ValueError
        If the name is taken, is ``'gic'``/``'all'`` (the ablation's names) or is not an identifier.
    """
    if objective.name in OBJECTIVES or objective.name in ("gic", "all") or not objective.name.isidentifier():
        raise ValueError(f"cannot register objective {objective.name!r}: taken, reserved or not an identifier "
                         f"(registered: {', '.join(OBJECTIVES)})")
    OBJECTIVES[objective.name] = objective
    return objective


def unregister(name: str) -> None:
    """Remove objective ``name`` (tests register toy objectives and remove them)."""
    OBJECTIVES.pop(name, None)


def enabled_objectives(config: TrainConfig) -> list[Objective]:
    """The registered objectives with a weight > 0 in ``config``.

    Raises
    ------
    ValueError
        If ``config.objective_weights`` names an objective that is not registered.
    """
    unknown = sorted(set(config.objective_weights) - set(OBJECTIVES))
    if unknown:
        raise ValueError(f"TrainConfig.objective_weights names unregistered objectives {unknown}; "
                         f"registered: {', '.join(OBJECTIVES)}")
    return [o for o in OBJECTIVES.values() if o.weight(config) > 0]


def build_loss(config: TrainConfig) -> GICLoss:
    """The contrastive base loss (GIC) of ``config``."""
    return GICLoss(
        temperature=config.temperature,
        learnable_temperature=config.learnable_temperature,
        margin=config.margin,
        infonce_weight=config.infonce_weight,
        margin_weight=config.margin_weight,
    )


def step_generator(seed: int, step: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded by (run seed, optimizer step, stream): the loss's random choices are a
    pure function of the step, the same in every process of a data-parallel run."""
    state = int(np.random.SeedSequence((seed, step, stream)).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(state)


def mask_atoms(
    x: Tensor, rate: float, mask_index: Tensor, *, generator: torch.Generator, ctx: DistContext | None = None
) -> tuple[Tensor, Tensor]:
    """Replace a random ``rate`` of atoms (at least one) by mask tokens -> (masked x, mask bool).

    Shapes: x (N, 9) long -> ((N, 9), (N,) bool). The draw covers the atoms of the global batch
    (every rank's, in rank order) and each rank keeps its own rows, so N processes mask exactly
    the atoms one process would.
    """
    counts = gather_counts(x.size(0), ctx, device=x.device)
    total, offset = sum(counts), sum(counts[: 0 if ctx is None else ctx.rank])
    mask = torch.rand(total, generator=generator) < rate
    if not mask.any():
        mask[torch.randint(total, (1,), generator=generator)] = True
    mask = mask[offset:offset + x.size(0)].to(x.device)
    xm = x.clone()
    xm[mask] = mask_index.to(x.device)
    return xm, mask


# -- masked graph modelling ----------------------------------------------------------------
def _mgm_prepare(model: CMCLModel, batch: PairBatch, config: TrainConfig, step: int,
                 ctx: DistContext | None) -> tuple[dict[str, Any], dict[str, Any]]:
    gen = step_generator(config.seed, step, 0)
    xm, mask = mask_atoms(batch.graphs.x, config.mask_rate, model.graph_encoder.atom_encoder.mask_index,
                          generator=gen, ctx=ctx)
    return {"masked_x": xm}, {"mask": mask}


def _mgm_compute(x: ObjectiveInputs) -> tuple[Tensor, float]:
    """Atom-type cross-entropy on the masked atoms of the global batch.

    The term is a sum over ranks, so its gradient here is scaled by the number of ranks (DDP
    averages); its value is the global mean on every rank.
    """
    gr, mask, ctx = x.batch.graphs, x.state["mask"], x.ctx
    logits = x.model.mgm_logits(x.nodes.float()[mask], gr.batch[mask], x.image_emb)
    n_masked = float(sum(gather_counts(int(mask.sum()), ctx, device=mask.device)))
    local = F.cross_entropy(logits, gr.x[mask, 0].long(), reduction="sum") / n_masked
    value = all_reduce_sum(local.detach(), ctx)
    scale = 1 if ctx is None else ctx.world_size
    return value + scale * (local - local.detach()), float(value)  # value: the global mean; gradient: scale x this rank's


# -- graph-image matching ------------------------------------------------------------------
def _ggim_compute(x: ObjectiveInputs) -> tuple[Tensor, float]:
    """Matching loss on the global batch's pairs and one hard negative per graph and per image."""
    gg, ii = x.all_graph_emb, x.all_image_emb
    gen = step_generator(x.config.seed, x.step, 1, gg.device)
    sim = F.normalize(gg, dim=-1) @ F.normalize(ii, dim=-1).T
    neg_img = hard_negatives(sim, generator=gen)  # for each graph a, a hard image
    neg_gra = hard_negatives(sim.T, generator=gen)  # for each image b, a hard graph
    pos = x.model.ggim_logits(gg, ii)
    neg = x.model.ggim_logits(torch.cat([gg, gg[neg_gra]]), torch.cat([ii[neg_img], ii]))
    lg = ggim_loss(pos, neg)
    return lg, float(lg.detach())


register(Objective("mgm", _mgm_compute, weight_field="mgm_weight", head=mgm_head, prepare=_mgm_prepare))
register(Objective("ggim", _ggim_compute, weight_field="ggim_weight", head=ggim_head))


def compute_losses(
    model: torch.nn.Module,
    loss_fn: GICLoss,
    batch: PairBatch,
    config: TrainConfig,
    *,
    step: int = 0,
    ctx: DistContext | None = None,
    amp: torch.dtype | None = None,
) -> tuple[Tensor, dict[str, float], Tensor, Tensor]:
    """Total loss of a batch, its parts, and this process's (graph, image) embeddings.

    ``model`` is a :class:`CMCLModel` or its DDP wrapper. The loss is GIC on the global batch's
    embeddings plus ``weight * term`` of every enabled objective (:func:`enabled_objectives`,
    training mode only). With ``ctx`` (a data-parallel run) embeddings are gathered
    (:func:`~cmcl_model.train.distributed.gather_rows`); the returned loss's *value* is the
    global batch's loss on every rank. ``step`` seeds the objectives' random draws; ``amp`` is
    the autocast dtype of the encoders' forward (losses run in float32).

    Returns
    -------
    (loss scalar, {part name: float}, graph embeddings (B_local, D), image embeddings (B_local, D))
    """
    core = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    objectives = enabled_objectives(config) if core.training else []
    gr = batch.graphs
    forward_kw: dict[str, Any] = {}
    states: dict[str, dict[str, Any]] = {}
    for o in objectives:
        if o.prepare is not None:
            kw, states[o.name] = o.prepare(core, batch, config, step, ctx)
            forward_kw.update(kw)
    with torch.autocast(gr.x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        g, i, nodes = model(gr, batch.crops, **forward_kw)
    g, i = g.float(), i.float()
    gg, ii = gather_rows(g, ctx), gather_rows(i, ctx)
    loss, parts = loss_fn(gg, ii)
    for o in objectives:
        term, value = o.compute(ObjectiveInputs(core, batch, config, step, ctx, g, i, gg, ii, nodes,
                                                states.get(o.name, {})))
        loss = loss + o.weight(config) * term
        parts[o.name] = value
    return loss, parts, g, i
