"""Contrastive objectives: graph-image contrastive (GIC), masked graph modelling (MGM),
graph-image matching (GGIM).

GIC as in MIGA: ``w_nce * InfoNCE + w_margin * margin``, defaults 0.9 / 0.1, temperature 0.1,
margin 0.4, on L2-normalised embeddings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["info_nce", "margin_loss", "GICLoss", "mgm_loss", "ggim_loss", "hard_negatives"]


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"expected two (B, D) embeddings of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.size(0) < 2:
        raise ValueError(f"contrastive losses need a batch of at least 2 pairs, got {a.size(0)}")


def info_nce(g: Tensor, i: Tensor, *, temperature: float | Tensor = 0.1) -> Tensor:
    """Symmetric InfoNCE (CLIP) on normalised embeddings.

    .. math::
        \\mathcal{L} = \\tfrac12\\big[\\mathrm{CE}(S, I) + \\mathrm{CE}(S^\\top, I)\\big],
        \\quad S_{ab} = \\hat g_a^\\top \\hat i_b / \\tau

    Shapes: g, i (B, D) -> scalar. Pair ``a`` is (g[a], i[a]).
    """
    _check_pair(g, i)
    logits = F.normalize(g, dim=-1) @ F.normalize(i, dim=-1).T / temperature
    target = torch.arange(g.size(0), device=g.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def margin_loss(g: Tensor, i: Tensor, *, margin: float = 0.4) -> Tensor:
    """Pairwise-distance contrastive loss (Hadsell et al. 2006) on normalised embeddings.

    .. math::
        \\mathcal{L} = \\frac1B \\sum_a d_{aa}^2 + \\frac{1}{B(B-1)} \\sum_{a \\ne b}
        \\max(0, m - d_{ab})^2, \\quad d_{ab} = \\lVert \\hat g_a - \\hat i_b \\rVert_2

    Zero exactly when every pair coincides and every non-pair is at least ``margin`` apart.
    Shapes: g, i (B, D) -> scalar.
    """
    _check_pair(g, i)
    d = torch.cdist(F.normalize(g, dim=-1), F.normalize(i, dim=-1))
    b = g.size(0)
    eye = torch.eye(b, dtype=torch.bool, device=g.device)
    pos = d.diagonal().pow(2).mean()
    neg = F.relu(margin - d[~eye]).pow(2).mean()
    return pos + neg


class GICLoss(nn.Module):
    """Graph-image contrastive loss: weighted InfoNCE + margin term.

    Parameters
    ----------
    temperature : float
        InfoNCE temperature (initial value when learnable).
    learnable_temperature : bool
        Learn ``log(1/temperature)`` (clamped so that temperature >= 0.01).
    margin : float
        Margin of :func:`margin_loss`.
    infonce_weight, margin_weight : float
        Weights of the two terms (MIGA: 0.9 and 0.1).

    Shapes: forward(g (B, D), i (B, D)) -> (loss scalar, dict of detached float parts).
    """

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        learnable_temperature: bool = False,
        margin: float = 0.4,
        infonce_weight: float = 0.9,
        margin_weight: float = 0.1,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.init_temperature = temperature
        self.margin, self.infonce_weight, self.margin_weight = margin, infonce_weight, margin_weight
        self.log_scale = nn.Parameter(torch.tensor(0.0), requires_grad=learnable_temperature)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.log_scale.fill_(math.log(1.0 / self.init_temperature))

    @property
    def temperature(self) -> Tensor:
        return 1.0 / self.log_scale.clamp(max=math.log(100.0)).exp()

    def forward(self, g: Tensor, i: Tensor) -> tuple[Tensor, dict[str, float]]:
        nce = info_nce(g, i, temperature=self.temperature)
        mar = margin_loss(g, i, margin=self.margin)
        loss = self.infonce_weight * nce + self.margin_weight * mar
        return loss, {"infonce": float(nce.detach()), "margin": float(mar.detach())}


def mgm_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Masked graph modelling: cross-entropy of atom-type logits (M, 119) on masked atoms (M,)."""
    if logits.size(0) == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target.long())


def hard_negatives(sim: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """For each row ``a`` of a (B, B) similarity matrix, sample a negative column ``b != a``
    with probability ``softmax(sim[a])`` restricted to the off-diagonal (ALBEF-style hard
    negative mining). Returns (B,) long."""
    b = sim.size(0)
    if sim.shape != (b, b) or b < 2:
        raise ValueError(f"expected a (B, B) similarity with B >= 2, got {tuple(sim.shape)}")
    eye = torch.eye(b, dtype=torch.bool, device=sim.device)
    w = torch.softmax(sim.detach().float().masked_fill(eye, float("-inf")), dim=1)
    return torch.multinomial(w, 1, generator=generator).squeeze(1)


def ggim_loss(pos_logits: Tensor, neg_logits: Tensor) -> Tensor:
    """Graph-image matching: binary cross-entropy, positives label 1, negatives label 0.

    Shapes: pos_logits (P,), neg_logits (N,) -> scalar (mean over all P + N).
    """
    logits = torch.cat([pos_logits, neg_logits])
    labels = torch.cat([torch.ones_like(pos_logits), torch.zeros_like(neg_logits)])
    return F.binary_cross_entropy_with_logits(logits, labels)
