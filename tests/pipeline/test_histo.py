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
