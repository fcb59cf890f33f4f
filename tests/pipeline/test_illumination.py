import numpy as np
import pytest

from pipeline import illumination as il


def _vignette(size=200):
    yy, xx = np.mgrid[:size, :size] / size
    return (1.0 - 0.5 * ((yy - 0.5) ** 2 + (xx - 0.4) ** 2)) * (1 + 0.2 * xx)


def test_estimate_recovers_a_known_field_from_sparse_bright_objects():
    rng = np.random.default_rng(0)
    true = _vignette()
    fields = []
    for _ in range(24):
        scene = 5000 + np.zeros_like(true)
        for _ in range(15):  # bright blobs at random places
            y, x = rng.integers(0, 200, 2)
            scene[max(0, y - 6):y + 6, max(0, x - 6):x + 6] += 20000
        fields.append(rng.poisson(scene * true).astype(np.float32))
    func = il.estimate(np.stack(fields), method="median")
    assert func.dtype == np.float32 and func.shape == true.shape and func.min() >= 1.0
    ratio = (func / func.mean()) / (true / true.mean())
    assert np.abs(ratio - 1).mean() < 0.03  # within a few percent of the truth
    corrected = il.apply(fields[0], func)
    bg = corrected < np.percentile(corrected, 60)
    before = fields[0][bg].std() / fields[0][bg].mean()
    after = corrected[bg].std() / corrected[bg].mean()
    assert after < before / 5  # background flattened at least 5x


def test_flat_field_is_left_unchanged():
    func = il.estimate(np.full((3, 50, 60), 500.0))
    np.testing.assert_allclose(func, 1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="n_fields"):
        il.estimate(np.zeros((5, 5)))
    with pytest.raises(ValueError, match="method"):
        il.estimate(np.ones((2, 5, 5)), method="mode")
    with pytest.raises(ValueError, match="does not match"):
        il.apply(np.ones((4, 4)), np.ones((5, 5)))


def test_mean_accumulator_streams():
    acc = il.MeanAccumulator()
    for k in range(4):
        acc.add(np.full((2, 3, 3), k))
    assert acc.count == 4 and np.allclose(acc.mean(), 1.5)
    with pytest.raises(ValueError, match="differs"):
        acc.add(np.ones((2, 4, 4)))
