import numpy as np
import pytest

from cmcl_model.metrics import chance, fullpool, hit101, ranks_fullpool


def test_chance_exact():
    c = chance(101)
    assert c["hit@10"] == pytest.approx(10 / 101)
    assert c["hit@1"] == pytest.approx(1 / 101)
    assert c["mean_rank"] == 51
    assert c["mrr"] == pytest.approx(sum(1 / r for r in range(1, 102)) / 101)
    assert chance(5)["hit@10"] == 1.0
    assert chance(20, protocol="fullpool")["recall@5"] == 0.25
    with pytest.raises(ValueError):
        chance(10, protocol="nope")


def test_perfect_embeddings():
    e = np.eye(30)
    h, n = hit101(e, e, seeds=(0, 1))
    assert n == 30
    for d in h.values():
        assert d["hit@1"] == 1 and d["mrr"] == 1 and d["mean_rank"] == 1
    f, _ = fullpool(e, e)
    assert f["graph_to_image"]["recall@1"] == 1


def test_reversed_embeddings_rank_last():
    e = np.eye(20)
    h, n = hit101(e, -e)  # the positive is the least similar candidate of every query
    assert n == 20
    for d in h.values():
        assert d["mean_rank"] == 20 and d["hit@10"] == 0 and d["mrr"] == pytest.approx(1 / 20)
    f, _ = fullpool(e, -e)
    assert f["image_to_graph"]["mean_rank"] == 20


def test_ties_are_pessimistic():
    const = np.ones((12, 4))
    h, _ = hit101(const, const)
    assert h["graph_to_image"]["mean_rank"] == 12 and h["graph_to_image"]["hit@1"] == 0


def test_hand_computed_ranks():
    # sim rows: query 0 positive 0.9 vs 0.95, 0.1 -> rank 2; query 1: 0.5 vs 0.2, 0.5 (tie) -> rank 2;
    # query 2: 0.3 vs 0.1, 0.2 -> rank 1
    sim = np.array([[0.9, 0.95, 0.1], [0.2, 0.5, 0.5], [0.1, 0.2, 0.3]])
    assert ranks_fullpool(sim).tolist() == [2, 2, 1]


def test_hit101_uses_101_candidates_and_random_is_near_chance():
    rng = np.random.default_rng(0)
    g, i = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    h, n = hit101(g, i, seeds=(0, 1, 2))
    assert n == 101
    c = chance(101)
    for d in h.values():
        assert abs(d["hit@10"] - c["hit@10"]) < 0.04
        assert abs(d["mean_rank"] - c["mean_rank"]) < 5


def test_directions_differ_when_asymmetric():
    g = np.array([[1.0, 0], [0, 1], [1, 1]])
    i = np.array([[1.0, 0.1], [0.1, 1], [-1, 1]])
    f, _ = fullpool(g, i)
    # graph 2 ([1,1]) vs images: cos with i2 is 0 < others -> rank 3; image 2 vs graphs: g1 beats g2
    assert f["graph_to_image"]["mean_rank"] == pytest.approx((1 + 1 + 3) / 3)
    assert f["image_to_graph"]["mean_rank"] == pytest.approx((1 + 1 + 2) / 3)


def test_shape_errors():
    with pytest.raises(ValueError, match="equal shape"):
        hit101(np.zeros((3, 2)), np.zeros((4, 2)))
