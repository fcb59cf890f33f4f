"""Choice lists declared once (pipeline.images.choices, pipeline.features.choices), used by the
stages, the CLI's help and the error messages; the packages' public faces resolve."""

import importlib
import typing

import numpy as np
import pytest

from pipeline.features.choices import FEATURE_SETS, FeatureSet
from pipeline.images.choices import (CROP_BORDERS, ILLUMINATION_METHODS, SEGMENTERS, CropBorder, IlluminationMethod,
                                     Segmenter)


def test_tuples_are_the_literals_and_the_cli_help_lists_them():
    cli = importlib.import_module("flows.cli.app")  # the shared options (the package exports the Typer app as `app`)

    for literal, names, option in ((IlluminationMethod, ILLUMINATION_METHODS, cli.IllumOpt),
                                   (Segmenter, SEGMENTERS, cli.SegmenterOpt), (FeatureSet, FEATURE_SETS, cli.FeaturesOpt)):
        assert names == typing.get_args(literal) and len(names) >= 2
        assert " | ".join(names) in option.help
    assert CROP_BORDERS == typing.get_args(CropBorder) == ("skip", "pad")


def test_stages_reject_a_name_outside_the_declaration_listing_it():
    from pipeline.images.crops import crop_cells
    from pipeline.images.illumination import estimate

    with pytest.raises(ValueError, match=", ".join(map(repr, ILLUMINATION_METHODS))):
        estimate(np.ones((2, 8, 8), np.float32), method="max")
    labels = np.zeros((16, 16), np.int32)
    with pytest.raises(ValueError, match=", ".join(map(repr, CROP_BORDERS))):
        crop_cells(np.zeros((1, 16, 16), np.float32), labels, labels, channel_names=("DNA",), border="wrap")


@pytest.mark.parametrize("package", ["pipeline.images", "pipeline.images.segmentation", "pipeline.features"])
def test_public_faces_resolve(package):
    import importlib

    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
