"""The choice lists of the training data, declared once (torch-free, so settings can import them).

Each choice is a ``Literal`` and the tuple derived from it; :class:`~cmcl_model.train.config.TrainConfig`,
the datasets and the CLI's help all use these.
"""

from __future__ import annotations

import typing
from typing import Literal

__all__ = ["CropSource", "CROP_SOURCES", "ImageSource", "IMAGE_SOURCES", "ProfileSource", "PROFILE_SOURCES",
           "Negatives", "NEGATIVES", "SplitName", "SPLIT_NAMES"]

#: what a crop-mode pair's images are: single-cell crops or field tiles
CropSource = Literal["crops", "tiles"]
CROP_SOURCES: tuple[str, ...] = typing.get_args(CropSource)
#: what the image side of a training pair is: crops, field tiles or CellProfiler well profiles
ImageSource = Literal["crops", "tiles", "profiles"]
IMAGE_SOURCES: tuple[str, ...] = typing.get_args(ImageSource)
#: profile mode: which well profiles to pair ('cmcl' = `cmcl profile`'s own)
ProfileSource = Literal["all", "cmcl", "imported"]
PROFILE_SOURCES: tuple[str, ...] = typing.get_args(ProfileSource)
#: profile mode: 'within_source' draws each batch (its negatives) from one source/lab
Negatives = Literal["any", "within_source"]
NEGATIVES: tuple[str, ...] = typing.get_args(Negatives)
#: the scaffold split's parts
SplitName = Literal["train", "val", "test"]
SPLIT_NAMES: tuple[str, ...] = typing.get_args(SplitName)
