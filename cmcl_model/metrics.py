"""Cross-modal retrieval metrics.

Two protocols, both directions (``graph_to_image``: a molecule queries the images;
``image_to_graph``: an image queries the molecules). Pair ``a`` is (graph[a], image[a]).

``hit101`` (MIGA)
    Each query ranks its one positive among ``n_negatives`` (100) negatives drawn at random
    from the other pairs, i.e. 101 candidates; with fewer pairs all of them are used and the
    actual candidate count is reported. Averaged over fixed seeds. Metrics hit@1/3/5/10, mrr,
    mean_rank.
``fullpool`` (CLOOME)
    Each query ranks its positive against the whole pool. Metrics recall@1/5/10, mrr,
    mean_rank.

Similarity is the cosine of the embeddings (ranking by L2 distance on normalised embeddings is
identical). **Ties are counted pessimistically**: rank = 1 + number of negatives whose
similarity is >= the positive's, so a constant embedding gets the worst rank, never the best.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["DIRECTIONS", "ranks_fullpool", "ranks_sampled", "hit101", "fullpool", "chance", "summarize_ranks"]

DIRECTIONS: tuple[str, str] = ("graph_to_image", "image_to_graph")
Protocol = Literal["hit101", "fullpool"]


def _validate(graph: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(graph, dtype=np.float64)
    i = np.asarray(image, dtype=np.float64)
    if g.ndim != 2 or g.shape != i.shape:
        raise ValueError(f"expected graph and image embeddings of equal shape (N, D), got {g.shape} and {i.shape}")
    if g.shape[0] < 2:
        raise ValueError(f"retrieval needs at least 2 pairs, got {g.shape[0]}")
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    i = i / np.maximum(np.linalg.norm(i, axis=1, keepdims=True), 1e-12)
    return g, i


def ranks_fullpool(sim: np.ndarray) -> np.ndarray:
    """1-based pessimistic rank of ``sim[a, a]`` within row ``a`` of an (N, N) similarity."""
    pos = np.diag(sim)[:, None]
    ge = sim >= pos
    return ge.sum(axis=1)  # counts the positive itself once: 1 + #negatives >= positive


def ranks_sampled(sim: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Pessimistic rank of the positive among sampled negatives.

    sim (N, N); negatives (N, k) column indices (never the row's own index) -> (N,) ranks.
    """
    n = sim.shape[0]
    pos = np.diag(sim)[:, None]
    neg = sim[np.arange(n)[:, None], negatives]
    return 1 + (neg >= pos).sum(axis=1)


def summarize_ranks(ranks: np.ndarray, ks: Sequence[int], prefix: str) -> dict[str, float]:
    r = np.asarray(ranks, dtype=np.float64)
    out = {f"{prefix}@{k}": float((r <= k).mean()) for k in ks}
    out["mrr"] = float((1.0 / r).mean())
    out["mean_rank"] = float(r.mean())
    return out


def _sample_negatives(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """(n, k) indices: for row a, k distinct indices from range(n) without a."""
    out = np.empty((n, k), dtype=np.int64)
    for a in range(n):
        idx = rng.choice(n - 1, size=k, replace=False)
        out[a] = idx + (idx >= a)
    return out


def hit101(
    graph: np.ndarray,
    image: np.ndarray,
    *,
    n_negatives: int = 100,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    ks: Sequence[int] = (1, 3, 5, 10),
) -> tuple[dict[str, dict[str, float]], int]:
    """MIGA protocol. Returns ({direction: {metric: value}}, n_candidates).

    graph, image : (N, D) arrays, row a of each forms pair a. Values are fractions (mean_rank a
    number), averaged over ``seeds``; the same sampled negatives serve both directions.

    Raises
    ------
    ValueError
        If the shapes differ or N < 2.
    """
    g, i = _validate(graph, image)
    n = g.shape[0]
    k = min(n_negatives, n - 1)
    sim = g @ i.T  # sim[a, b]: graph a vs image b
    per_seed: dict[str, list[dict[str, float]]] = {d: [] for d in DIRECTIONS}
    for seed in seeds:
        neg = _sample_negatives(n, k, np.random.default_rng(seed))
        per_seed["graph_to_image"].append(summarize_ranks(ranks_sampled(sim, neg), ks, "hit"))
        per_seed["image_to_graph"].append(summarize_ranks(ranks_sampled(sim.T, neg), ks, "hit"))
    result = {d: {m: float(np.mean([r[m] for r in rs])) for m in rs[0]} for d, rs in per_seed.items()}
    return result, k + 1


def fullpool(
    graph: np.ndarray, image: np.ndarray, *, ks: Sequence[int] = (1, 5, 10)
) -> tuple[dict[str, dict[str, float]], int]:
    """CLOOME protocol: rank against the whole pool. Returns ({direction: {metric: value}}, N)."""
    g, i = _validate(graph, image)
    sim = g @ i.T
    return (
        {
            "graph_to_image": summarize_ranks(ranks_fullpool(sim), ks, "recall"),
            "image_to_graph": summarize_ranks(ranks_fullpool(sim.T), ks, "recall"),
        },
        g.shape[0],
    )


def chance(n_candidates: int, *, protocol: Protocol = "hit101") -> dict[str, float]:
    """Exact expected metrics of a random ranking among ``n_candidates`` (1 positive).

    hit@k = min(k, n)/n; mrr = H_n / n; mean_rank = (n + 1) / 2. E.g. hit@10 with 101
    candidates = 10/101 = 0.099.
    """
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
    n = int(n_candidates)
    prefix, ks = ("hit", (1, 3, 5, 10)) if protocol == "hit101" else ("recall", (1, 5, 10))
    if protocol not in ("hit101", "fullpool"):
        raise ValueError(f"protocol={protocol!r} is not one of 'hit101', 'fullpool'")
    out = {f"{prefix}@{k}": min(k, n) / n for k in ks}
    out["mrr"] = float(np.sum(1.0 / np.arange(1, n + 1)) / n)
    out["mean_rank"] = (n + 1) / 2
    return out
