"""What decides what ingestion writes: :class:`IngestSettings`, each field checked once.

Every choice is declared once here or in the module that owns it (a ``Literal`` and the tuple
derived from it): the CLI's choices and the docs read the same tuples.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Union

import numpy as np

from pipeline.features.choices import FEATURE_SETS, FeatureSet
from pipeline.images.choices import CROP_BORDERS as BORDERS
from pipeline.images.choices import ILLUMINATION_METHODS, SEGMENTERS, IlluminationMethod, Segmenter
from pipeline.images.choices import CropBorder as Border
from pipeline.images.qc import CYTO_CHANNELS, CytoChannel
from pipeline.store.crops import CROPS_CHUNK, CROPS_SHARD
from pipeline.plates.discovery import LAYOUTS, Layout, parse_channel_map

__all__ = ["IngestSettings", "LAYOUT_CHOICES", "BORDERS", "FEATURE_CHOICES", "ILLUMINATION_METHODS", "CYTO_CHANNELS",
           "SEGMENTERS"]

#: ``IngestSettings.layout``: a vendor layout, or ``'auto'`` to detect it.
LayoutChoice = Union[Literal["auto"], Layout]
LAYOUT_CHOICES: tuple[str, ...] = ("auto", *LAYOUTS)
#: ``IngestSettings.features``: a CellProfiler feature set (pipeline.features.choices), or none.
Features = Union[FeatureSet, Literal["none"]]
FEATURE_CHOICES: tuple[str, ...] = (*FEATURE_SETS, "none")


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(map(repr, choices))}")


def _number(name: str, value: object, *, integer: bool = False, low: float | None = None,
            high: float | None = None, low_open: bool = False, optional: bool = False) -> None:
    if value is None and optional:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or (not integer and not np.isfinite(value)):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a finite number'}"
                         f"{' or None' if optional else ''}; got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}; got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}; got {value!r}")


@dataclass(frozen=True)
class IngestSettings:
    """Everything that decides what ingestion writes (part of each plate's fingerprint).

    Every field is validated at construction.

    Raises
    ------
    ValueError
        Naming the field, the value and, for a choice, the valid values (a channel map that does
        not parse, a crop size below 8, an unknown illumination method ...).
    FileNotFoundError
        If a cellpose weights file does not exist.
    """

    layout: LayoutChoice = "auto"
    channel_map: str | None = None
    allow_outside: bool = False
    illumination_method: IlluminationMethod = "background"
    illumination_filter_fraction: float = 1 / 8
    illumination_dark: float | None = None  # None: estimated per channel from the fields
    illumination_max_fields: int = 64
    cyto_channel: CytoChannel = "AGP"
    crop_size: int = 64
    #: a crop whose box crosses the field's edge: zero-padded and flagged (``'pad'``) or left
    #: out (``'skip'``); nuclei touching the edge never get a row (pipeline.images.borders)
    border: Border = "pad"
    crops_chunk: int = CROPS_CHUNK
    crops_shard: int = CROPS_SHARD
    segmenter: Segmenter = "classical"
    cellpose_model: str | None = None
    cellpose_cell_model: str | None = None
    cellpose_diameter: float | None = None
    field_tile_size: int | None = None
    focus_outlier_fraction: float = 0.6
    platemap: str | None = None
    #: CellProfiler features per cell (pipeline.features.measure); the CLI's default is 'default', the
    #: library's 'none' (ingestion exactly as without the features stage)
    features: Features = "none"

    def __post_init__(self) -> None:
        _choice("layout", self.layout, LAYOUT_CHOICES)
        if self.channel_map is not None:
            if not isinstance(self.channel_map, str):
                raise ValueError(f"channel_map must be a string or None; got {self.channel_map!r}")
            parse_channel_map(self.channel_map)  # a bad map fails here, naming its file or entry
        if not isinstance(self.allow_outside, bool):
            raise ValueError(f"allow_outside must be True or False; got {self.allow_outside!r}")
        _choice("illumination_method", self.illumination_method, ILLUMINATION_METHODS)
        _number("illumination_filter_fraction", self.illumination_filter_fraction, low=0, high=1, low_open=True)
        _number("illumination_dark", self.illumination_dark, low=0, optional=True)
        _number("illumination_max_fields", self.illumination_max_fields, integer=True, low=1)
        _choice("cyto_channel", self.cyto_channel, CYTO_CHANNELS)
        _number("crop_size", self.crop_size, integer=True, low=8)
        _choice("border", self.border, BORDERS)
        _number("crops_chunk", self.crops_chunk, integer=True, low=1)
        _number("crops_shard", self.crops_shard, integer=True, low=1)
        if self.crops_shard % self.crops_chunk or self.crops_shard < self.crops_chunk:
            raise ValueError(f"crops_shard ({self.crops_shard}) must be a positive multiple of crops_chunk ({self.crops_chunk})")
        _choice("segmenter", self.segmenter, SEGMENTERS)
        _number("cellpose_diameter", self.cellpose_diameter, low=0, low_open=True, optional=True)
        if self.segmenter == "cellpose":
            if not self.cellpose_model:
                raise ValueError("segmenter 'cellpose' needs cellpose_model, the path of a local weights file")
            for p in (self.cellpose_model, self.cellpose_cell_model):
                if p is not None and not Path(p).expanduser().is_file():
                    raise FileNotFoundError(f"cellpose weights file {p!r} does not exist (model names such as "
                                            f"'cyto3' are not accepted; pass the path of a local weights file)")
        _number("field_tile_size", self.field_tile_size, integer=True, low=8, optional=True)
        _number("focus_outlier_fraction", self.focus_outlier_fraction, low=0, high=1)
        _choice("features", self.features, FEATURE_CHOICES)

    def key(self) -> str:
        """The settings as canonical JSON (sorted keys): part of each plate's fingerprint."""
        return json.dumps(asdict(self), sort_keys=True)

