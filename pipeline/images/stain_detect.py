"""Which channel holds the nuclear stain, from the pixels alone.

A Cell Painting field's nuclear stain (Hoechst, DAPI) shows bright, compact, sharp-edged
blobs on a dark background: of all the channels it has the least foreground (the nucleus lies
inside the cell that the other stains fill), the smallest objects, the sharpest object edges and
the most solid (convex) objects. Brightfield and other transmitted-light channels show no bright
objects on a dark background at all (their brightest pixels are a few percent above the median).

:func:`channel_scores` measures one field's channels on those four criteria;
:func:`pick_nuclear` ranks the channels of one or more fields and says whether one channel is
clearly the nuclear stain. Nothing here reads files.

Decision rule (:func:`pick_nuclear`)
------------------------------------
1. A channel whose 99.9th percentile is below :data:`MIN_DYNAMIC_RANGE` x its 1st percentile
   (no bright object on a dark background: brightfield, an empty channel) cannot be nuclear; its
   score is 0.
2. The other channels are ranked on each criterion (the criterion's median over the fields;
   tied channels share the average of their ranks): foreground fraction (lower is more
   nuclear), area-weighted median object area (smaller), edge contrast (higher) and median
   object solidity (higher). A channel's score is ``1 - (mean rank - 1) / (n - 1)`` over the four
   criteria (1: first on every criterion; 0: last on every one; a single candidate scores 1).
3. The pick is clear when the best channel shows at least :data:`MIN_OBJECTS` objects over the
   fields, is first, alone, on at least :data:`MIN_FIRST` of the four criteria and its score
   exceeds the runner-up's by at least :data:`MARGIN`. Otherwise no channel is picked (the
   caller stops and asks for ``--channels``).

Ranks, not thresholds on the raw measures, decide: the rule does not depend on the cell density,
the exposure or the pixel size. Measured (``tests/pipeline/test_stain_detect.py``): on the sparse
real Phenix field BR00121482 (3 nuclei) Hoechst (ch5) has 0.23 % foreground against 0.45-0.77 %
for the other stains and edge contrast 3.8 against 3.2-3.6, score 0.94 against at most 0.50;
on the dense field BR00143976 C03 (~40 cells) 4.1 % against 5.5-15 %, edge contrast 3.4 against
2.4-2.6 (its solidity, 0.94, is not the highest: one criterion may disagree), score 0.88 against
at most 0.56; brightfield's 99.9th / 1st percentile is 1.07 and 1.21 there. On generated fields
of 128 px and more the DNA channel is the pick; on 64 px fields (one or two cells) there is none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.measure import regionprops

__all__ = [
    "ChannelScore",
    "NuclearPick",
    "MIN_DYNAMIC_RANGE",
    "MARGIN",
    "MIN_FIRST",
    "MIN_OBJECTS",
    "channel_scores",
    "pick_nuclear",
    "describe_scores",
]

#: 99.9th / 1st percentile below which a channel shows no bright object on a dark background.
MIN_DYNAMIC_RANGE = 2.0
#: Score lead of the best channel over the runner-up for a clear pick.
MARGIN = 0.2
#: Criteria (of four) on which a clear pick must rank first.
MIN_FIRST = 3
#: Objects the pick must show over the fields sampled (a field of one or two cells tells nothing).
MIN_OBJECTS = 3
#: Objects kept for the solidity and area medians (the largest; convex hulls cost ~1 ms each).
_MAX_OBJECTS = 60


@dataclass(frozen=True)
class ChannelScore:
    """One channel's nuclear-stain measures on one field (or their median over fields).

    Attributes
    ----------
    channel : str
        The channel's label (e.g. ``'ch5'``), as given to :func:`channel_scores`.
    dynamic_range : float
        99.9th / 1st percentile of the field (brightfield ~1.1, fluorescent stains > 10).
    foreground : float
        Fraction of the field above its Otsu threshold.
    object_area : float
        Area-weighted median area of the foreground's objects (half the objects' pixels lie in
        objects at most this large; specks do not pull it down), as a fraction of the field.
    edge_contrast : float
        Mean intensity inside the objects over the mean in a 3-pixel ring around them (both
        above the 1st percentile).
    solidity : float
        Median solidity (area / convex area) of the objects.
    objects : int
        Objects measured (summed over fields in a merged score).
    score : float
        Rank score in [0, 1] (:func:`pick_nuclear`); 0 until ranked.
    """

    channel: str
    dynamic_range: float
    foreground: float
    object_area: float
    edge_contrast: float
    solidity: float
    objects: int = 0
    score: float = 0.0

    @property
    def fluorescent(self) -> bool:
        """Bright objects on a dark background (:data:`MIN_DYNAMIC_RANGE`)."""
        return bool(np.isfinite(self.dynamic_range) and self.dynamic_range >= MIN_DYNAMIC_RANGE
                    and self.foreground > 0)


@dataclass(frozen=True)
class NuclearPick:
    """The outcome of :func:`pick_nuclear`.

    Attributes
    ----------
    channel : str or None
        The channel the pixels pick as the nuclear stain, None when no pick is clear.
    scores : tuple of ChannelScore
        Every channel, best score first.
    reason : str
        Why the pick is clear or not (one clause).
    """

    channel: str | None
    scores: tuple[ChannelScore, ...]
    reason: str

    def score_of(self, channel: str) -> float:
        """The rank score of ``channel`` (0 for a channel not scored)."""
        return next((s.score for s in self.scores if s.channel == str(channel)), 0.0)


def _binned(image: np.ndarray) -> np.ndarray:
    """float32, 2 x 2-binned when both sides are at least 512 px, smoothed (sigma 1 px)."""
    x = np.asarray(image, dtype=np.float32)
    if min(x.shape) >= 512:
        h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
        x = x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    return ndi.gaussian_filter(x, 1.0)


def channel_scores(image: np.ndarray, channels: list[str] | tuple[str, ...]) -> list[ChannelScore]:
    """Measure each channel of one field as a nuclear stain.

    Parameters
    ----------
    image : (C, Y, X) ndarray
        One field, any numeric dtype (raw pixels; no illumination correction needed).
    channels : sequence of str
        The C channels' labels (``'ch5'``), in order; messages quote them.

    Returns
    -------
    list of ChannelScore
        One per channel, in order, unranked (``score`` 0).

    Raises
    ------
    ValueError
        If ``image`` is not (C, Y, X) with C == len(channels).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != len(channels):
        raise ValueError(f"image must be ({len(channels)}, y, x) for channels {list(channels)}; got {image.shape}")
    return [_one_channel(image[k], str(c)) for k, c in enumerate(channels)]


def _one_channel(plane: np.ndarray, channel: str) -> ChannelScore:
    x = _binned(plane)
    p1, p999 = (float(v) for v in np.percentile(x, [1.0, 99.9]))
    dynamic = p999 / max(p1, 1.0)
    if p999 <= p1:
        return ChannelScore(channel, dynamic, 0.0, 1.0, 0.0, 0.0)
    mask = x > threshold_otsu(x)
    foreground = float(mask.mean())
    objects = ndi.binary_opening(mask)
    labels, n = ndi.label(objects)
    min_area = max(8, int(1e-4 * x.size))
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    keep = np.flatnonzero(areas >= min_area) + 1
    if keep.size == 0:
        return ChannelScore(channel, dynamic, foreground, 1.0, 0.0, 0.0)
    keep = keep[np.argsort(areas[keep - 1])[::-1][:_MAX_OBJECTS]]  # largest first
    kept = np.isin(labels, keep)
    ring = ndi.binary_dilation(kept, iterations=3) & ~mask
    inside = float(x[kept].mean()) - p1
    around = float(x[ring].mean()) - p1 if ring.any() else 0.0
    edge = inside / max(around, 1e-3 * max(inside, 1.0))
    props = regionprops(np.where(kept, labels, 0))
    solidity = float(np.median([p.solidity for p in props]))
    sizes = np.sort(areas[keep - 1])
    area = float(sizes[np.searchsorted(np.cumsum(sizes), sizes.sum() / 2)]) / x.size
    return ChannelScore(channel, dynamic, foreground, area, edge, solidity, int(keep.size))


#: (attribute, True when larger is more nuclear)
_CRITERIA = (("foreground", False), ("object_area", False), ("edge_contrast", True), ("solidity", True))


def _median_scores(fields: list[list[ChannelScore]]) -> list[ChannelScore]:
    """Per channel, the median of each measure over the fields."""
    out = []
    for k, first in enumerate(fields[0]):
        values = {a: float(np.median([f[k].__getattribute__(a) for f in fields]))
                  for a in ("dynamic_range", "foreground", "object_area", "edge_contrast", "solidity")}
        out.append(ChannelScore(first.channel, **values, objects=int(sum(f[k].objects for f in fields))))
    return out


def _with_score(s: ChannelScore, score: float) -> ChannelScore:
    return ChannelScore(s.channel, s.dynamic_range, s.foreground, s.object_area, s.edge_contrast, s.solidity,
                        s.objects, score)


def pick_nuclear(fields: list[list[ChannelScore]]) -> NuclearPick:
    """Rank the channels of one or more fields and pick the nuclear stain when the pick is clear.

    The rule is the module's (:mod:`pipeline.images.stain_detect`): brightfield-like channels score 0;
    the others are ranked on foreground fraction, object area, edge contrast and solidity; the
    best channel is the pick when it is first on at least :data:`MIN_FIRST` criteria and leads
    the runner-up by at least :data:`MARGIN`.

    Parameters
    ----------
    fields : list of list of ChannelScore
        :func:`channel_scores` of each sampled field, the same channels in the same order.

    Returns
    -------
    NuclearPick

    Raises
    ------
    ValueError
        If ``fields`` is empty or its fields name different channels.
    """
    if not fields or not fields[0]:
        raise ValueError("pick_nuclear needs the scores of at least one field")
    names = [s.channel for s in fields[0]]
    if any([s.channel for s in f] != names for f in fields):
        raise ValueError(f"every field must score the same channels {names}")
    merged = _median_scores(fields)
    candidates = [s for s in merged if s.fluorescent]
    n = len(candidates)
    ranks = {s.channel: [] for s in candidates}
    firsts = {s.channel: 0 for s in candidates}
    for attr, larger in _CRITERIA:
        values = np.array([-getattr(s, attr) if larger else getattr(s, attr) for s in candidates], dtype=float)
        rank = _average_ranks(values) if n else values  # tied channels share their rank
        for s, r in zip(candidates, rank):
            ranks[s.channel].append(float(r))
            firsts[s.channel] += int(r == 1.0)  # first alone: a tie for first counts for no one
    scored = []
    for s in merged:
        score = 0.0
        if s.channel in ranks:
            score = 1.0 if n == 1 else 1.0 - (float(np.mean(ranks[s.channel])) - 1.0) / (n - 1)
        scored.append(_with_score(s, score))
    scored.sort(key=lambda s: -s.score)
    if n == 0:
        return NuclearPick(None, tuple(scored), "no channel shows bright objects on a dark background")
    best = scored[0]
    lead = best.score - (scored[1].score if len(scored) > 1 else 0.0)
    if best.objects < MIN_OBJECTS:
        return NuclearPick(None, tuple(scored), f"{best.channel} shows only {best.objects} object(s) in the fields "
                                                f"sampled (at least {MIN_OBJECTS} needed)")
    if firsts[best.channel] < MIN_FIRST:
        return NuclearPick(None, tuple(scored), f"{best.channel} is first on only {firsts[best.channel]} "
                                                f"of {len(_CRITERIA)} criteria")
    if lead < MARGIN:
        return NuclearPick(None, tuple(scored), f"{best.channel} leads {scored[1].channel} by only {lead:.2f}")
    return NuclearPick(best.channel, tuple(scored), f"{best.channel} is first on {firsts[best.channel]} "
                                                    f"of {len(_CRITERIA)} criteria and leads by {lead:.2f}")


def describe_scores(pick: NuclearPick) -> str:
    """``'ch5 0.94, ch4 0.50, ch2 0.31, ch1 0.00 (no bright objects)'``: every channel's score."""
    return ", ".join(f"{s.channel} {s.score:.2f}" + ("" if s.fluorescent else " (no bright objects)")
                     for s in pick.scores)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, tied values sharing the mean of their ranks (what
    ``scipy.stats.rankdata(method='average')`` gives, without importing ``scipy.stats``: ~0.5 s
    of every ingest command's start-up)."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]  # each run of ties starts here
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(first) - 1]
    return ranks
