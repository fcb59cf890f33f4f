from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from pipeline.images.filters import gaussian_filter, sobel

REAL = Path(__file__).resolve().parents[2] / "data" / "phenix_BR00143976_C03" / "Images"


def _images():
    rng = np.random.default_rng(3)
    real = tifffile.imread(next(REAL.glob("*ch5*"))).astype(np.float32)
    return [real, np.log1p(real)[::3, ::2].copy(), rng.normal(0, 1e3, (37, 53)).astype(np.float32),
            rng.random((5, 9)).astype(np.float32), np.float32([[1e30, -3], [7, 0.5]])]


@pytest.mark.parametrize("mode", ["nearest", "reflect"])
@pytest.mark.parametrize("sigma,truncate", [(1.0, 4.0), (1.5, 4.0), (1.86, 3.0), (4.0, 4.0), (0.3, 4.0), (0.0, 4.0)])
def test_gaussian_equals_scipy_bit_for_bit(sigma, truncate, mode):
    """Same float32 values as scipy.ndimage, including kernels wider than the image (5 x 9
    with radius 16) and extreme values."""
    for image in _images():
        got = gaussian_filter(image, sigma, mode=mode, truncate=truncate)
        want = ndi.gaussian_filter(image, sigma, mode=mode, truncate=truncate)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["nearest", "reflect"])
def test_sobel_equals_scipy_bit_for_bit(mode):
    for image in _images():
        for axis in (0, 1):
            np.testing.assert_array_equal(sobel(image, axis, mode=mode), ndi.sobel(image, axis=axis, mode=mode))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="float32"):
        gaussian_filter(np.zeros((4, 4)), 1.0)
    with pytest.raises(ValueError, match="mode"):
        gaussian_filter(np.zeros((4, 4), np.float32), 1.0, mode="wrap")
    with pytest.raises(ValueError, match="axis"):
        sobel(np.zeros((4, 4), np.float32), 2)
