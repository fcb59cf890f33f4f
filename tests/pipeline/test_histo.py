import numpy as np
import pytest

from pipeline.histo import int_percentiles


def test_grouped_histogram_percentiles_equal_numpy():
    rng = np.random.default_rng(5)
    values = rng.poisson(300, 5000).astype(np.uint16)
    groups = rng.integers(0, 7, values.size)
    got = int_percentiles(values, [0, 5, 25, 50, 99.9, 100], groups=groups, n_groups=8)
    for g in range(7):
        np.testing.assert_allclose(got[g], np.percentile(values[groups == g], [0, 5, 25, 50, 99.9, 100]), rtol=0, atol=1e-9)
    assert np.isnan(got[7]).all()  # an empty group
    np.testing.assert_allclose(int_percentiles(values, 37.5)[0], np.percentile(values, 37.5), atol=1e-9)
    with pytest.raises(ValueError, match="non-negative"):
        int_percentiles(np.array([-1, 2]), 50)


def test_wide_value_ranges_give_the_same_result():
    """uint16 values over the whole range (byte histograms) and wider integers (partition)."""
    rng = np.random.default_rng(6)
    values = rng.integers(0, 65535, 3000).astype(np.uint16)  # 16 groups x 65536 bins >> 3000 values
    groups = rng.integers(0, 16, values.size)
    got = int_percentiles(values, [5, 25], groups=groups, n_groups=17)
    for g in range(16):
        np.testing.assert_allclose(got[g], np.percentile(values[groups == g], [5, 25]), atol=1e-9)
    assert np.isnan(got[16]).all()
    wide = rng.integers(0, 3_000_000, 2000)
    np.testing.assert_allclose(int_percentiles(wide, [1, 50, 99.5])[0], np.percentile(wide, [1, 50, 99.5]), atol=1e-6)
    # ties and a group holding one value; ranks inside one high-byte bucket and across buckets
    few = np.array([7, 7, 7, 300, 300, 65535, 0, 256, 255], np.uint16)
    grp = np.array([0, 0, 0, 0, 0, 0, 1, 2, 2])
    got = int_percentiles(few, [0, 10, 50, 90, 100], groups=grp, n_groups=3)
    for g in range(3):
        np.testing.assert_allclose(got[g], np.percentile(few[grp == g], [0, 10, 50, 90, 100]), atol=1e-9)
