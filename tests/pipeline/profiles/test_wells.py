"""Tests of pipeline.profiles.wells's aggregation choices (pipeline.profiles.choices)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.profiles.choices import AGGREGATE_OPERATIONS
from pipeline.profiles.wells import aggregate_wells, select_features


def _cells() -> pd.DataFrame:
    return pd.DataFrame({"Metadata_Plate": ["P"] * 5, "Metadata_Well": ["A01"] * 3 + ["A02"] * 2,
                         "Cells_AreaShape_Area": [1.0, 2.0, 9.0, 4.0, 6.0]})


@pytest.mark.parametrize(("operation", "a01"), [("median", 2.0), ("mean", 4.0)])
def test_aggregate_wells_operations(operation: str, a01: float) -> None:
    assert operation in AGGREGATE_OPERATIONS
    wells = aggregate_wells(_cells(), operation=operation)
    np.testing.assert_allclose(wells["Cells_AreaShape_Area"], [a01, 5.0])
    assert wells["Metadata_Count_Cells"].tolist() == [3, 2]


def test_an_unknown_operation_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="'max'; valid: median, mean"):
        aggregate_wells(_cells(), operation="max")  # type: ignore[arg-type]


def test_select_features_skips_when_no_feature_varies():
    """One well per plate, each normalized against itself, is all zeros: nothing to select from.
    The wells come back unchanged with the reason, not pycytominer's bare variance error."""
    wells = pd.DataFrame({"Metadata_Plate": ["P1", "P2"], "Metadata_Well": ["A01", "A01"],
                          "Cells_AreaShape_Area": [0.0, 0.0], "Nuclei_Intensity_MeanIntensity_DNA": [0.0, 0.0]})
    out = select_features(wells)
    pd.testing.assert_frame_equal(out.reset_index(drop=True), wells[out.columns].reset_index(drop=True))
    assert list(out.columns[-2:]) == ["Cells_AreaShape_Area", "Nuclei_Intensity_MeanIntensity_DNA"]
    assert "no feature varies over the 2 well(s) of plate(s) P1, P2" in out.attrs["selection_skipped"]
    varied = wells.assign(Cells_AreaShape_Area=[1.0, 3.0])
    assert "selection_skipped" not in select_features(varied).attrs
