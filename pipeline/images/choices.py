"""The choice lists of the image stages, declared once: illumination and segmentation methods, crop borders.

Each is a ``Literal`` (for type checkers and signatures) and the tuple derived from it (for
checks, error messages, CLI help and docs). A light module (no numpy): the CLI reads it at
start-up.
"""

from __future__ import annotations

import typing
from typing import Literal

__all__ = ["IlluminationMethod", "ILLUMINATION_METHODS", "Segmenter", "SEGMENTERS", "CropBorder", "CROP_BORDERS"]

#: How an illumination function is estimated (:func:`pipeline.images.illumination.estimate`).
IlluminationMethod = Literal["mean", "median", "background"]
#: The illumination methods, in the order the CLI lists them.
ILLUMINATION_METHODS: tuple[str, ...] = typing.get_args(IlluminationMethod)

#: A segmentation method (:func:`pipeline.images.segmentation.dispatch.segment_field`).
Segmenter = Literal["classical", "cellpose"]
#: The segmentation methods, in the order the CLI lists them.
SEGMENTERS: tuple[str, ...] = typing.get_args(Segmenter)

#: What a crop whose box crosses the field's edge becomes (:func:`pipeline.images.crops.crop_cells`).
CropBorder = Literal["skip", "pad"]
#: The crop border choices.
CROP_BORDERS: tuple[str, ...] = typing.get_args(CropBorder)
