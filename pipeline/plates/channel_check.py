"""Check a plate's channel map against its pixels before any field is written.

:func:`check_channels` reads a few fields of a listed plate (:class:`pipeline.plates.discovery.PlateListing`),
scores every channel as a nuclear stain (:mod:`pipeline.images.stain_detect`) and then:

* a plate without a channel map (no instrument metadata, no ``--channels``): DNA is the
  channel the pixels pick when the pick is clear; the other channels stay unassigned, kept raw
  as ``ch<N>`` (never given a stain name the data did not give). When the pick is not clear the
  plate is refused before anything is written, with one line listing the channels, their
  scores and the ``--channels`` flag;
* a map from the instrument's metadata that names as DNA a channel the pixels clearly rank
  below another (another channel is the clear pick and the named one scores at most
  :data:`FAR_BELOW`) is refused the same way (one line: both channels, the scores, ``--channels``);
* a map given with ``--channels`` that does so is kept, with a one-line warning in the
  listing's notes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from pipeline.plates.channel_maps import plate_channels, raw_channel
from pipeline.plates.discovery import PlateListing, raw_images
from pipeline.images.stain_detect import NuclearPick, channel_scores, describe_scores, pick_nuclear

__all__ = ["ChannelMapError", "SAMPLE_FIELDS", "FAR_BELOW", "sample_fields", "check_channels"]

#: A map's DNA channel is questioned when the pixels clearly pick another one and it scores at
#: most this (of 1: first on every criterion).
FAR_BELOW = 0.5
#: Fields read to find DNA (no map), and to check a given map.
SAMPLE_FIELDS = {"unresolved": 3, "metadata": 1, "user": 1}


class ChannelMapError(ValueError):
    """A plate's nuclear stain cannot be told, or its map contradicts the pixels (one line)."""


def _label(listing: PlateListing, vendor_id: str) -> str:
    return f"Orig{vendor_id}" if listing.layout == "loaddata" else raw_channel(vendor_id)


def sample_fields(images: pd.DataFrame, root: Path, channels: list[str], n: int) -> list[dict[str, Path]]:
    """Up to ``n`` complete fields of ``images`` (one existing file under ``root`` per channel of
    ``channels``), evenly spread over the plate's fields in (well, site) order; each
    ``{channel: path}``."""
    complete = []
    for _, rows in images.groupby(["Metadata_Well", "Metadata_Site"], sort=True):
        files = rows.groupby("Metadata_Channel")["File"].first().to_dict()
        paths = {c: root / files[c] for c in channels if c in files}
        if len(paths) == len(channels) and all(p.is_file() for p in paths.values()):
            complete.append(paths)
    if len(complete) <= n:
        return complete
    return [complete[int(i)] for i in np.linspace(0, len(complete) - 1, n).round().astype(int)]


def _score_plate(listing: PlateListing, n: int) -> NuclearPick | None:
    """The pixels' nuclear pick over up to ``n`` sampled fields (None: no readable field).

    Every channel of the folder is scored (an ImageXpress or Phenix channel the map ignores
    too), each labelled as :func:`_label` says."""
    if listing.layout == "loaddata":
        images, labels = listing.images, {c: _label(listing, c) for c in listing.channels}
    else:
        images = raw_images(listing)
        labels = {c: c for c in images["Metadata_Channel"].unique()}
    channels = sorted(labels, key=lambda c: (len(c), c))
    scored = []
    for paths in sample_fields(images, listing.root, channels, n):
        try:
            planes = [tifffile.imread(paths[c]) for c in channels]
        except Exception:  # noqa: BLE001 - a broken file is quarantined later; another field is sampled
            continue
        if len({p.shape for p in planes}) != 1 or planes[0].ndim != 2:
            continue
        scored.append(channel_scores(np.stack(planes), [labels[c] for c in channels]))
    return pick_nuclear(scored) if scored else None


def _with_dna(listing: PlateListing, vendor_id: str, note: str) -> PlateListing:
    """The listing with ``vendor_id`` as DNA and every other channel unassigned (``ch<N>``)."""
    raw_dna = raw_channel(vendor_id)
    cmap = {vid: ("DNA" if vid == vendor_id else name) for vid, name in listing.channel_map.items()}
    images = listing.images.copy()
    images["Metadata_Channel"] = images["Metadata_Channel"].replace({raw_dna: "DNA"})
    images = images.sort_values(["Metadata_Well", "Metadata_Site", "Metadata_Channel", "File"], ignore_index=True)
    return replace(listing, images=images, channel_map=cmap, channels=plate_channels(cmap.values()),
                   channel_source="pixels", notes=[*listing.notes, note])


def check_channels(listing: PlateListing) -> PlateListing:
    """Find DNA from the pixels (a plate without a map) or check the map's DNA against them.

    Reads :data:`SAMPLE_FIELDS` fields (by :attr:`PlateListing.channel_source`) of the listing,
    scores their channels (:func:`pipeline.images.stain_detect.pick_nuclear`, whose docstring states the
    rule) and returns the listing to ingest: unchanged, with DNA assigned (source ``'pixels'``),
    or with a one-line warning in its notes (a ``--channels`` map that the pixels contradict).
    A plate without a readable complete field is returned unchanged when it has a map.

    Raises
    ------
    ChannelMapError
        One line naming the plate folder: no map and no clear pick (or no readable field), or a
        metadata map whose DNA channel the pixels clearly rank below another; it lists the
        channels' scores and the ``--channels`` flag to give.
    """
    source = listing.channel_source
    pick = _score_plate(listing, SAMPLE_FIELDS.get(source, 2))
    vendor = {_label(listing, vid): vid for vid in listing.channel_map}
    if source == "unresolved":
        channels = ", ".join(_label(listing, v) for v in sorted(listing.channel_map, key=lambda v: (len(v), v)))
        if pick is None:
            raise ChannelMapError(f"{listing.root}: no channel map (no instrument metadata, no --channels) and no "
                                  f"complete readable field to find the nuclear stain in; channels {channels}; give "
                                  f"--channels DNA=N[,ER=N,RNA=N,AGP=N,Mito=N]")
        if pick.channel is None:
            raise ChannelMapError(f"{listing.root}: no channel map (no instrument metadata, no --channels) and the "
                                  f"pixels do not tell the nuclear stain ({pick.reason}); nuclear-stain scores: "
                                  f"{describe_scores(pick)}; give --channels DNA=N[,ER=N,RNA=N,AGP=N,Mito=N]")
        others = [_label(listing, v) for v in sorted(listing.channel_map, key=lambda v: (len(v), v))
                  if _label(listing, v) != pick.channel]
        note = (f"DNA is {pick.channel}, found from the pixels (nuclear-stain scores: {describe_scores(pick)}); "
                f"no metadata names the other stains: {', '.join(others) or 'none'} kept unassigned; give --channels "
                f"to name them")
        return _with_dna(listing, vendor[pick.channel], note)
    dna = next((vid for vid, name in listing.channel_map.items() if name == "DNA"), None)
    if (pick is None or pick.channel is None or dna is None or pick.channel == _label(listing, dna)
            or pick.score_of(_label(listing, dna)) > FAR_BELOW):
        return listing
    named = _label(listing, dna)
    who = "--channels" if source == "user" else "the instrument's metadata"
    line = (f"{listing.root}: {who} names {named} as DNA, but the pixels pick {pick.channel} as the nuclear stain "
            f"(scores: {describe_scores(pick)})")
    if source == "user":
        return replace(listing, notes=[*listing.notes, f"warning: {line}; going on with --channels as given"])
    raise ChannelMapError(f"{line}; give --channels DNA=N,... to confirm or correct the map")
