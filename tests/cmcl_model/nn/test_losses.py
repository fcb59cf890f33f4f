import math

import pytest
import torch

from cmcl_model.nn.losses import GICLoss, ggim_loss, hard_negatives, info_nce, margin_loss, mgm_loss
from cmcl_model.nn.encoders import GINEncoder, ImageEncoder
from cmcl_model.nn.model import CMCLModel
from tests.cmcl_model.nn.test_encoders import _batch


def test_perfect_alignment_is_the_minimum():
    e = torch.eye(8)
    loss = GICLoss()
    perfect, _ = loss(e, e)
    assert margin_loss(e, e).item() == pytest.approx(0.0, abs=1e-6)  # float32; pairs coincide, non-pairs sqrt(2) > 0.4 apart
    # the InfoNCE floor for orthogonal unit vectors at T=0.1: log(1 + 7 e^-10) ~ 3.2e-4.
    # It is a difference of logits of size 1/T = 10, so float32 carries it only to ~1e-6
    # absolute (one ulp at 10 is 9.5e-7); float64 carries it to ~1e-15.
    floor = math.log(1 + 7 * math.exp(-10))
    assert info_nce(e, e).item() == pytest.approx(floor, abs=5e-6)
    e64 = e.double()
    assert info_nce(e64, e64).item() == pytest.approx(floor, rel=1e-9)
    torch.manual_seed(0)
    for _ in range(5):
        assert loss(e, e + 0.3 * torch.randn(8, 8))[0] > perfect
    swapped = e[[1, 0, *range(2, 8)]]
    assert loss(e, swapped)[0] > perfect + 0.5


def test_swapping_pairs_raises_both_terms():
    torch.manual_seed(1)
    g = torch.randn(16, 32)
    i = g + 0.05 * torch.randn(16, 32)
    perm = torch.randperm(16)
    assert info_nce(g, i[perm]) > info_nce(g, i)
    assert margin_loss(g, i[perm]) > margin_loss(g, i)


def test_weights_and_shape_errors():
    g, i = torch.randn(4, 8), torch.randn(4, 8)
    only_nce, parts = GICLoss(infonce_weight=1.0, margin_weight=0.0)(g, i)
    assert only_nce.item() == pytest.approx(parts["infonce"], rel=1e-5)
    with pytest.raises(ValueError, match="equal shape"):
        info_nce(g, torch.randn(5, 8))
    with pytest.raises(ValueError, match="at least 2"):
        margin_loss(g[:1], i[:1])


def test_gradients_reach_both_encoders_and_temperature():
    torch.manual_seed(0)
    model = CMCLModel(GINEncoder(2, 16), ImageEncoder(5, (8, 16)), proj_dim=8)
    loss_fn = GICLoss(learnable_temperature=True)
    b = _batch()
    loss, _ = loss_fn(model.embed_graphs(b), model.embed_images(torch.randn(3, 2, 5, 16, 16)))
    loss.backward()
    for enc in (model.graph_encoder, model.image_encoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    assert loss_fn.log_scale.grad is not None


def test_fixed_temperature_is_not_trained():
    assert not GICLoss().log_scale.requires_grad
    assert GICLoss(temperature=0.5).temperature.item() == pytest.approx(0.5)


def test_mgm_and_ggim_hand_cases():
    # confident correct predictions -> ~0; uniform -> log(119)
    logits = torch.full((3, 119), -20.0)
    target = torch.tensor([5, 6, 7])
    logits[torch.arange(3), target] = 20.0
    assert mgm_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert mgm_loss(torch.zeros(3, 119), target).item() == pytest.approx(math.log(119), rel=1e-5)
    assert mgm_loss(torch.zeros(0, 119), target[:0]).item() == 0.0
    assert ggim_loss(torch.full((4,), 20.0), torch.full((4,), -20.0)).item() == pytest.approx(0.0, abs=1e-6)
    assert ggim_loss(torch.zeros(2), torch.zeros(2)).item() == pytest.approx(math.log(2), rel=1e-6)  # float32


def test_hard_negatives_never_pick_the_positive_and_prefer_similar():
    sim = torch.zeros(4, 4)
    sim[0, 2] = sim[1, 3] = sim[2, 0] = sim[3, 1] = 50.0  # a single very similar non-pair per row
    sim.fill_diagonal_(100.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        neg = hard_negatives(sim, generator=g)
        assert neg.tolist() == [2, 3, 0, 1]
    neg = hard_negatives(torch.zeros(5, 5), generator=g)
    assert (neg != torch.arange(5)).all()
