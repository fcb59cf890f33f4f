import numpy as np
import pytest

from cmcl_model.evaluation.metrics import chance, fullpool, hit101, ranks_fullpool


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


# -- crop level -------------------------------------------------------------------------------
from cmcl_model.evaluation.metrics import crop_level, mean_chance  # noqa: E402


def test_crop_level_hand_computed():
    # 2-D embeddings; compounds 0 -> [1, 0], 1 -> [0, 1], 2 -> [-1, 0]
    graph = np.array([[1.0, 0], [0, 1], [-1, 0]])
    # crops: compound 0 has [1, 0.1] (good) and [0, 1] (looks like compound 1); compound 1 one
    # crop [0.1, 1]; compound 2 one crop [-1, 0]
    crops = np.array([[1.0, 0.1], [0, 1], [0.1, 1], [-1, 0]])
    groups = np.array([0, 0, 1, 2])
    r, ch, n = crop_level(graph, crops, groups, seeds=(0,))
    assert n == {"crops": 4, "compounds": 3}
    # image -> graph ranks: crop0 -> 1; crop1 [0,1]: positive g0 cos 0, g1 cos 1, g2 cos 0 (a tie,
    # counted against it) -> rank 3; crop2 -> 1; crop3 -> 1
    assert r["fullpool"]["image_to_graph"]["mean_rank"] == pytest.approx(6 / 4)
    assert r["fullpool"]["image_to_graph"]["recall@1"] == pytest.approx(3 / 4)
    # graph -> image: g0 ranks crop0 (cos .995) vs other compounds' crops [.1,1]->.0995, [-1,0]->-1: rank 1;
    # g0 ranks crop1 (cos 0) vs .0995 and -1 -> rank 2; g1 ranks crop2 (.995) vs crops of 0 and 2
    # (.0995, 1, 0) -> rank 2; g2 ranks crop3 (1) vs the rest -> rank 1
    assert r["fullpool"]["graph_to_image"]["mean_rank"] == pytest.approx((1 + 2 + 2 + 1) / 4)
    # with < 100 candidates hit101 uses all of them, so it equals the full pool
    assert r["hit101"]["graph_to_image"]["mean_rank"] == pytest.approx(1.5)
    assert r["hit101"]["image_to_graph"]["hit@1"] == pytest.approx(0.75)
    # chance: image->graph 3 candidates; graph->image 1 + crops of other compounds (3, 3, 4, 4)
    assert ch["fullpool"]["image_to_graph"]["mean_rank"] == 2
    assert ch["fullpool"]["graph_to_image"]["mean_rank"] == pytest.approx((2 + 2 + 2.5 + 2.5) / 4)


def test_crop_level_perfect_reversed_ties_random():
    rng = np.random.default_rng(1)
    graph = np.eye(8)
    groups = np.repeat(np.arange(8), 3)
    perfect, _, _ = crop_level(graph, graph[groups] + 0.01 * rng.random((24, 8)), groups, seeds=(0,))
    for p in perfect.values():
        for d in p.values():
            assert d["mean_rank"] == 1 and d["mrr"] == 1
    rev, _, _ = crop_level(graph, -graph[groups], groups, seeds=(0,))
    assert rev["fullpool"]["image_to_graph"]["mean_rank"] == 8  # last of 8 compounds
    assert rev["fullpool"]["graph_to_image"]["mean_rank"] == 22  # last of 1 + 21 crops
    tie, _, _ = crop_level(np.ones((8, 4)), np.ones((24, 4)), groups, seeds=(0,))
    assert tie["fullpool"]["image_to_graph"]["recall@1"] == 0
    g, c = rng.normal(size=(300, 16)), rng.normal(size=(900, 16))
    r, ch, _ = crop_level(g, c, np.repeat(np.arange(300), 3), seeds=(0, 1))
    for d in ("graph_to_image", "image_to_graph"):
        assert abs(r["hit101"][d]["hit@10"] - ch["hit101"][d]["hit@10"]) < 0.04
        assert abs(r["fullpool"][d]["mean_rank"] / ch["fullpool"][d]["mean_rank"] - 1) < 0.1


def test_crop_level_errors():
    with pytest.raises(ValueError, match="without crops"):
        crop_level(np.eye(3), np.eye(3)[:2], np.array([0, 1]))
    with pytest.raises(ValueError, match="groups must lie"):
        crop_level(np.eye(3), np.eye(3), np.array([0, 1, 5]))


def test_mean_chance_weights_queries():
    c = mean_chance(np.array([2, 2, 4]), protocol="fullpool")
    assert c["mean_rank"] == pytest.approx((1.5 + 1.5 + 2.5) / 3)
    assert c["recall@1"] == pytest.approx((0.5 + 0.5 + 0.25) / 3)


def test_random_fullpool_near_chance_and_mrr_hand_computed():
    sim = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1], [0.5, 0.4, 0.6]])
    # ranks: row0 3, row1 2, row2 1 -> mrr (1/3 + 1/2 + 1) / 3
    from cmcl_model.evaluation.metrics import summarize_ranks

    s = summarize_ranks(ranks_fullpool(sim), (1, 5, 10), "recall")
    assert s["mrr"] == pytest.approx((1 / 3 + 1 / 2 + 1) / 3) and s["recall@1"] == pytest.approx(1 / 3)
    rng = np.random.default_rng(3)
    f, n = fullpool(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)))
    assert abs(f["graph_to_image"]["mean_rank"] - chance(n, protocol="fullpool")["mean_rank"]) < 15
