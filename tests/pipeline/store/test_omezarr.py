import numpy as np
import pytest

from pipeline.store.omezarr import _percentile


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_display_window_percentile_equals_numpy(dtype):
    """The omero display window uses a histogram percentile for 8/16-bit images; it must give
    numpy's value (linear interpolation) exactly, at every size and quantile."""
    rng = np.random.default_rng(3)
    top = 255 if dtype == np.uint8 else 60000
    for n in (1, 2, 7, 1000, 65537):
        a = rng.integers(0, top, n).astype(dtype)
        for q in (0, 5, 25, 50, 99.9, 100):
            assert _percentile(a, q) == pytest.approx(np.percentile(a, q), abs=1e-9), (n, q)
