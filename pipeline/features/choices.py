"""The feature sets :func:`pipeline.features.measure.measure_objects` accepts, declared once.

A light module (no numpy): the CLI reads it at start-up for its option help, settings and docs
derive their checks from it.
"""

from __future__ import annotations

import typing
from typing import Literal

__all__ = ["FeatureSet", "FEATURE_SETS"]

#: A feature set (see :mod:`pipeline.features.measure`).
FeatureSet = Literal["default", "full"]
#: The feature sets, in the order the CLI lists them.
FEATURE_SETS: tuple[str, ...] = typing.get_args(FeatureSet)
