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

Crop level (:func:`crop_level`)
    Every crop is its own image. ``image_to_graph``: each crop queries the compounds (its
    compound is the positive). ``graph_to_image``: one query per crop ``a``: the graph of
    ``a``'s compound ranks crop ``a`` against crops of *other* compounds (its own other crops are
    neither positives nor negatives). ``hit101`` samples 100 negatives per query.

Similarity is the cosine of the embeddings (ranking by L2 distance on normalised embeddings is
identical). **Ties are counted pessimistically**: rank = 1 + number of negatives whose
similarity is >= the positive's, so a constant embedding gets the worst rank, never the best.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = [
    "retrieval_report",
    "chance_report",
    "per_query_metrics",
    "bootstrap_ci",
    "DIRECTIONS",
    "PROTOCOLS",
    "ranks_fullpool",
    "ranks_sampled",
    "hit101",
    "fullpool",
    "chance",
    "mean_chance",
    "summarize_ranks",
    "crop_level",
]

Direction = Literal["graph_to_image", "image_to_graph"]
#: The two retrieval directions, in report order.
DIRECTIONS: tuple[str, ...] = typing.get_args(Direction)
Protocol = Literal["hit101", "fullpool"]
#: The two protocols: MIGA's 1 positive + 100 negatives, and the whole pool (CLOOME).
PROTOCOLS: tuple[str, ...] = typing.get_args(Protocol)


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
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} is not one of {', '.join(map(repr, PROTOCOLS))}")
    out = {f"{prefix}@{k}": min(k, n) / n for k in ks}
    out["mrr"] = float(np.sum(1.0 / np.arange(1, n + 1)) / n)
    out["mean_rank"] = (n + 1) / 2
    return out


def mean_chance(n_candidates: np.ndarray, *, protocol: Protocol = "hit101") -> dict[str, float]:
    """Expected metrics of a random ranking averaged over queries with ``n_candidates[q]``
    candidates each (:func:`chance` of each count, weighted by how often it occurs)."""
    counts, freq = np.unique(np.asarray(n_candidates, dtype=np.int64), return_counts=True)
    if counts.size == 0:
        raise ValueError("mean_chance needs at least one query")
    per = [chance(int(c), protocol=protocol) for c in counts]
    w = freq / freq.sum()
    return {m: float(sum(wi * p[m] for wi, p in zip(w, per))) for m in per[0]}


def _normalize(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def crop_level(
    graph: np.ndarray,
    crops: np.ndarray,
    groups: np.ndarray,
    *,
    n_negatives: int = 100,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, dict[str, float]]], dict[str, int]]:
    """Crop-level retrieval, both protocols and directions (see module docstring).

    Parameters
    ----------
    graph : (M, D) array
        One embedding per compound.
    crops : (N, D) array
        One embedding per crop.
    groups : (N,) int array
        Compound (row of ``graph``) of each crop; every compound needs at least one crop.

    Returns
    -------
    (R, chance R, sizes)
        ``R[protocol][direction][metric]``; the chance values are averaged over queries
        (:func:`mean_chance`); sizes ``{"crops": N, "compounds": M}``.

    Raises
    ------
    ValueError
        On mismatched shapes, groups outside ``range(M)``, a compound without crops or M < 2.
    """
    g = _normalize(graph, "graph")
    c = _normalize(crops, "crops")
    grp = np.asarray(groups, dtype=np.int64)
    m, n = g.shape[0], c.shape[0]
    if c.shape[1] != g.shape[1] or grp.shape != (n,):
        raise ValueError(f"expected graph (M, D), crops (N, D), groups (N,); got {g.shape}, {c.shape}, {grp.shape}")
    if m < 2:
        raise ValueError(f"crop-level retrieval needs at least 2 compounds, got {m}")
    if n and (grp.min() < 0 or grp.max() >= m):
        raise ValueError(f"groups must lie in [0, {m}), got {grp.min()}..{grp.max()}")
    sizes = np.bincount(grp, minlength=m)
    if (sizes == 0).any():
        raise ValueError(f"compounds without crops: rows {np.flatnonzero(sizes == 0)[:5].tolist()}")
    order = np.argsort(grp, kind="stable")
    grp, c = grp[order], c[order]
    start = np.r_[0, np.cumsum(sizes)][:-1]  # first crop of each compound after sorting
    sim = c @ g.T  # (N, M): crop a vs compound j
    pos = sim[np.arange(n), grp]

    # image -> graph: each crop ranks its compound among the others
    i2g_full = (sim >= pos[:, None]).sum(axis=1)
    # graph -> image: compound grp[a] ranks crop a against crops of other compounds
    g2i_full = np.empty(n, dtype=np.int64)
    for j in range(m):
        own = slice(start[j], start[j] + sizes[j])
        col = sim[:, j]
        neg = np.sort(np.r_[col[: start[j]], col[start[j] + sizes[j] :]])
        g2i_full[own] = 1 + (neg.size - np.searchsorted(neg, col[own], side="left"))
    full = {
        "graph_to_image": summarize_ranks(g2i_full, (1, 5, 10), "recall"),
        "image_to_graph": summarize_ranks(i2g_full, (1, 5, 10), "recall"),
    }
    n_g2i_full = 1 + n - sizes[grp]

    k_i2g = min(n_negatives, m - 1)
    k_g2i = np.minimum(n_negatives, n - sizes[grp])  # per query: other compounds' crops
    per_seed: dict[str, list[dict[str, float]]] = {d: [] for d in DIRECTIONS}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        r_i2g = np.empty(n, dtype=np.int64)
        r_g2i = np.empty(n, dtype=np.int64)
        for a in range(n):
            j = grp[a]
            idx = rng.choice(m - 1, size=k_i2g, replace=False)
            idx = idx + (idx >= j)
            r_i2g[a] = 1 + int((sim[a, idx] >= pos[a]).sum())
            other = n - sizes[j]
            idx = rng.choice(other, size=int(k_g2i[a]), replace=False)
            idx = idx + (idx >= start[j]) * sizes[j]
            r_g2i[a] = 1 + int((sim[idx, j] >= pos[a]).sum())
        per_seed["graph_to_image"].append(summarize_ranks(r_g2i, (1, 3, 5, 10), "hit"))
        per_seed["image_to_graph"].append(summarize_ranks(r_i2g, (1, 3, 5, 10), "hit"))
    h101 = {d: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for d, rs in per_seed.items()}
    result = {"hit101": h101, "fullpool": full}
    ch = {
        "hit101": {
            "graph_to_image": mean_chance(1 + k_g2i, protocol="hit101"),
            "image_to_graph": mean_chance(np.full(n, 1 + k_i2g), protocol="hit101"),
        },
        "fullpool": {
            "graph_to_image": mean_chance(n_g2i_full, protocol="fullpool"),
            "image_to_graph": mean_chance(np.full(n, m), protocol="fullpool"),
        },
    }
    return result, ch, {"crops": int(n), "compounds": int(m)}


def per_query_metrics(graph: np.ndarray, image: np.ndarray, *, seeds: Sequence[int] = (0, 1, 2, 3, 4),
                      n_negatives: int = 100) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Per-query values of every retrieval metric: ``[protocol][direction][metric]`` -> (N,).

    Their means equal :func:`cmcl_model.evaluation.metrics.hit101` / :func:`~cmcl_model.evaluation.metrics.fullpool`
    (same negatives: ``numpy.random.default_rng(seed)``, ``min(n_negatives, N - 1)`` per query).
    """
    g, i = _validate(graph, image)
    sim = g @ i.T
    n = sim.shape[0]
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {"hit101": {}, "fullpool": {}}
    for d, s in zip(DIRECTIONS, (sim, sim.T)):
        r = ranks_fullpool(s).astype(np.float64)
        out["fullpool"][d] = {**{f"recall@{k}": (r <= k).astype(float) for k in (1, 5, 10)}, "mrr": 1 / r, "mean_rank": r}
        per_seed = []
        for seed in seeds:
            neg = _sample_negatives(n, min(n_negatives, n - 1), np.random.default_rng(seed))
            per_seed.append(ranks_sampled(s, neg).astype(np.float64))
        rs = np.stack(per_seed)
        out["hit101"][d] = {**{f"hit@{k}": (rs <= k).mean(0) for k in (1, 3, 5, 10)}, "mrr": (1 / rs).mean(0),
                            "mean_rank": rs.mean(0)}
    return out


def bootstrap_ci(graph: np.ndarray, image: np.ndarray, *, seeds: Sequence[int] = (0, 1, 2, 3, 4), n_boot: int = 1000,
                 level: float = 0.95, seed: int = 0) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Percentile bootstrap interval of each metric's mean over queries: ``[protocol][direction][metric]``
    -> ``[low, high]``. The queries (test compounds) are resampled; each keeps its rank in the full pool."""
    per = per_query_metrics(graph, image, seeds=seeds)
    n = graph.shape[0]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    a = (1 - level) / 2
    return {p: {d: {m: [float(np.quantile(v[idx].mean(1), a)), float(np.quantile(v[idx].mean(1), 1 - a))]
                    for m, v in ms.items()} for d, ms in dd.items()} for p, dd in per.items()}


def retrieval_report(graph: np.ndarray, image: np.ndarray, *, seeds: Sequence[int] = (0, 1, 2, 3, 4)) -> tuple[dict, dict]:
    """Both protocols at once: (``R[protocol][direction][metric]``, ``{protocol: n_candidates}``)
    for (N, d) ``graph`` and ``image`` embeddings of the same N compounds (:func:`hit101`,
    :func:`fullpool`)."""
    h, n_h = hit101(graph, image, seeds=seeds)
    f, n_f = fullpool(graph, image)
    return {"hit101": h, "fullpool": f}, {"hit101": n_h, "fullpool": n_f}


def chance_report(n_candidates: dict[str, int]) -> dict[str, dict[str, dict[str, float]]]:
    """Exact chance of each protocol and direction, ``[protocol][direction][metric]``, for
    ``{protocol: n_candidates}`` as :func:`retrieval_report` returns it (:func:`chance`)."""
    return {p: {d: chance(n, protocol=p) for d in DIRECTIONS} for p, n in n_candidates.items()}
