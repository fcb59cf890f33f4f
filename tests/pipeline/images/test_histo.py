import numpy as np
import pytest

from pipeline.images.histo import block_percentiles, int_percentiles


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


@pytest.mark.parametrize("shape,grid", [((540, 540), 8), ((37, 53), 4), ((16, 16), 1)])
def test_block_percentiles_equal_numpy_per_block(shape, grid):
    """Blocks read in place (the illumination thresholds' path) give np.percentile of each
    block, with values across the whole uint16 range, ties, and rows/columns left over."""
    rng = np.random.default_rng(7)
    image = np.where(rng.random(shape) < 0.1, rng.integers(0, 65536, shape),
                     rng.poisson(400, shape)).astype(np.uint16)
    image[: shape[0] // grid, : shape[1] // grid] = 9  # one constant block
    q = [0, 5, 25, 50, 99.9, 100]
    got = block_percentiles(image, q, grid=grid)
    by, bx = shape[0] // grid, shape[1] // grid
    assert got.shape == (grid, grid, len(q))
    for i in range(grid):
        for j in range(grid):
            block = image[i * by:(i + 1) * by, j * bx:(j + 1) * bx]
            np.testing.assert_allclose(got[i, j], np.percentile(block, q), rtol=0, atol=1e-9)
    strided = image[::2, ::2]  # a view, as the illumination statistics pass it
    np.testing.assert_allclose(block_percentiles(strided, q, grid=2)[1, 0],
                               np.percentile(strided[strided.shape[0] // 2:2 * (strided.shape[0] // 2),
                                                     :strided.shape[1] // 2], q), atol=1e-9)
    with pytest.raises(ValueError, match="2-D uint8/uint16"):
        block_percentiles(image.astype(np.float32), 50, grid=2)


def test_ungrouped_16_bit_percentiles_from_one_histogram_pass():
    """8/16-bit images without groups take the compiled single-histogram path: np.percentile's
    values on a real field, ties, one value and no value."""
    from pathlib import Path

    import tifffile

    real = tifffile.imread(next((Path(__file__).resolve().parents[2] / "data" / "phenix_BR00143976_C03"
                                 / "Images").glob("*ch2*")))
    q = [0, 0.5, 5, 25, 50, 99, 99.9, 100]
    for a in (real, real[::3, ::2], np.array([7, 7, 300, 65535], np.uint16), np.array([3], np.uint8)):
        np.testing.assert_allclose(int_percentiles(a, q)[0], np.percentile(a, q), rtol=0, atol=1e-9)
    assert np.isnan(int_percentiles(np.zeros(0, np.uint16), [5, 50])).all()
