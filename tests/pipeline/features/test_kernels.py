"""pipeline.features kernels (sizeshape, intensity, correlation, texture, ordering, groups): cp_measure's values, all objects at once (real field and hard shapes)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cp_measure.bulk import get_core_measurements, get_correlation_measurements
from cp_measure.core.numba.measureobjectintensity import get_intensity
from cp_measure.core.numba.measuretexture import get_texture

from pipeline.features.correlation import pearson
from pipeline.features.groups import bounding_boxes, present_labels, segments
from pipeline.features.intensity import intensity
from pipeline.features.ordering import sort_keys, sorted_values, union_parts
from pipeline.features.sizeshape import sizeshape
from pipeline.features.texture import gray_levels, texture
from pipeline.features.measure import _sequential, labels_from_outlines

REAL = Path(__file__).resolve().parents[2] / "data" / "phenix_BR00143976_C03"
CORE = get_core_measurements(sanitize=False)
PEARSON = get_correlation_measurements(sanitize=False)["pearson"]


def _same(expected: dict, got: dict, keys=None, rtol=1e-9):
    for k in keys if keys is not None else expected:
        a, b = np.asarray(expected[k], np.float64), np.asarray(got[k], np.float64)
        assert a.shape == b.shape, k
        bad = ~np.isclose(a, b, rtol=rtol, atol=1e-12, equal_nan=True)
        assert not bad.any(), f"{k}: {bad.sum()} of {a.size} differ, e.g. {a[bad][:3]} vs {b[bad][:3]}"


def _check_all(labels: np.ndarray, image: np.ndarray, other: np.ndarray) -> None:
    """Every fast function against cp_measure on one label image; ``image`` in ADU (float32)."""
    labels = _sequential(labels, present_labels(labels))
    pixels = np.clip(image.astype(np.float64) / 65535, 0, 1)
    second = np.clip(other.astype(np.float64) / 65535, 0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cp_measure's divisions on one-pixel objects
        shape = CORE["sizeshape"](labels, pixels, calculate_advanced=False, new_features=False)
        inten = get_intensity(labels, pixels, edge_measurements=False)
        corr = PEARSON(pixels, second, labels)
        tex = get_texture(labels, pixels, scale=3)
        got_shape = sizeshape(labels)
    assert set(got_shape) == set(shape)
    _same(shape, got_shape)
    got = intensity(labels, image, scale=65535.0)
    assert set(got) == {k for k in inten if k.startswith("Intensity_")}
    _same(inten, got, keys=got)
    _same(corr, pearson(pixels, second, labels))
    _same(corr, pearson(image, other, labels, scale=65535.0))  # from ADU, no converted copy
    got_tex = texture(labels, pixels, scale=3)
    assert list(got_tex) == list(tex)
    _same(tex, got_tex)
    levels = gray_levels(image, scale=65535.0, groups=segments(labels))  # from ADU, object pixels only
    _same(tex, texture(labels, None, scale=3, levels=levels))


@pytest.fixture(scope="module")
def real_field():
    """The real JUMP field with CellProfiler's own nuclei and cells (rebuilt from its outlines)."""
    ch = {c: tifffile.imread(REAL / "Images" / f"r03c03f03p01-ch{c}sk1fk1fl1.tiff").astype(np.float32) for c in (2, 3, 5)}
    nuclei = labels_from_outlines(tifffile.imread(REAL / "cellprofiler" / "NucleiOutlines_BR00143976_C03_3.tiff"))
    cells = labels_from_outlines(tifffile.imread(REAL / "cellprofiler" / "CellsOutlines_BR00143976_C03_3.tiff"))
    return ch, nuclei, cells


@pytest.mark.parametrize("compartment", ["nuclei", "cells", "cytoplasm"])
def test_equals_cp_measure_on_the_real_field(real_field, compartment):
    ch, nuclei, cells = real_field
    labels = {"nuclei": nuclei, "cells": cells, "cytoplasm": np.where(nuclei > 0, 0, cells)}[compartment]
    assert labels.max() >= 20  # CellProfiler found ~40 objects here
    _check_all(labels, ch[5], ch[3])  # DNA, AGP (real, saturated in places)


def test_equals_cp_measure_on_hard_shapes():
    """Holes, one-pixel objects and lines, diagonal-only contacts, split objects, the image border,
    non-convex blobs, constant and negative pixels, values above full scale."""
    rng = np.random.default_rng(3)
    labels = np.zeros((120, 140), np.int32)
    yy, xx = np.mgrid[:120, :140]
    ring = ((yy - 25) ** 2 + (xx - 25) ** 2 <= 15**2) & ((yy - 25) ** 2 + (xx - 25) ** 2 > 6**2)
    labels[ring] = 1  # a hole: Euler number 0
    labels[5, 60] = 2  # one pixel
    labels[10, 70:90] = 3  # a one-pixel line
    labels[[20, 21, 22, 23], [60, 61, 62, 63]] = 4  # a diagonal, 8-connected only
    labels[0:8, 130:140] = 5  # on the border
    labels[40:50, 60:64] = 6  # two parts of one label
    labels[40:50, 70:74] = 6
    c_shape = ((yy - 80) ** 2 + (xx - 40) ** 2 <= 20**2) & ~((yy - 80) ** 2 + (xx - 52) ** 2 <= 12**2)
    labels[c_shape] = 7  # non-convex
    blob = ndi_blob(rng, (120, 140), 0.35) & (yy > 60) & (xx > 80)
    labels[blob & (labels == 0)] = 8
    labels[112:120, 0:3] = 9  # constant intensity below
    labels[30:33, 100:103] = 10
    labels[30:33, 103:106] = 11  # touching 10
    image = rng.normal(3000, 1500, labels.shape).astype(np.float32)
    image[112:120, 0:3] = 1234.0
    image[rng.random(labels.shape) < 0.02] = 70000.0  # above uint16 full scale: clips to 1
    image[rng.random(labels.shape) < 0.02] = -5.0  # below zero: clips to 0
    image[55:60, :] = -0.0
    other = rng.normal(2000, 300, labels.shape).astype(np.float32)
    _check_all(labels, image, other)


def ndi_blob(rng, shape, threshold):
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(rng.random(shape), 3) > np.quantile(ndi.gaussian_filter(rng.random(shape), 3), 1 - threshold)


def test_generated_field_through_measure_objects_matches_plain_cp_measure():
    """The default set through pipeline.features.measure equals cp_measure called per function (the
    features as the code before the compiled kernels computed them), on a generated dense field."""
    from pipeline.features.measure import measure_objects
    from pipeline.images.segmentation.classical import segment_cells, segment_nuclei
    from pipeline.synthetic import DMSO, render_field

    image, _, _ = render_field(DMSO, size=384, nucleus_radius=8.0, rng=np.random.default_rng(1), cell_density=1.5)
    image = image.astype(np.float32)
    nuclei = segment_nuclei(image[0])
    cells = segment_cells(nuclei, image[3])
    names = ("DNA", "ER", "RNA", "AGP", "Mito")
    f = measure_objects(image, nuclei, cells, channel_names=names)
    assert len(f) == nuclei.max() > 10
    pixels = np.clip(image.astype(np.float64) / 65535, 0, 1)
    cyto = np.where(nuclei > 0, 0, cells)
    for comp, lab in (("Cells", cells), ("Cytoplasm", cyto)):
        clean = _sequential(lab, present_labels(lab))
        present = present_labels(lab)
        rows = np.searchsorted(f["Metadata_CellID"].to_numpy(), present)
        inten = get_intensity(clean, pixels[4], edge_measurements=False)
        for key in ("MeanIntensity", "MedianIntensity", "MADIntensity", "UpperQuartileIntensity", "MassDisplacement"):
            np.testing.assert_allclose(f[f"{comp}_Intensity_{key}_Mito"].to_numpy()[rows], inten[f"Intensity_{key}"], rtol=1e-6)
    shape = CORE["sizeshape"](_sequential(cells, present_labels(cells)), pixels[0], calculate_advanced=False, new_features=False)
    for key in ("Solidity", "Perimeter", "EulerNumber", "MedianRadius", "Eccentricity"):
        np.testing.assert_allclose(f[f"Cells_AreaShape_{key}"], shape[key], rtol=1e-6)
    tex = get_texture(_sequential(cells, present_labels(cells)), pixels[2], scale=3)
    np.testing.assert_allclose(f["Cells_Texture_Entropy_RNA_3_02_256"], tex["Entropy_3_02_256"], rtol=1e-6)
    corr = PEARSON(pixels[1], pixels[4], _sequential(cells, present_labels(cells)))
    np.testing.assert_allclose(f["Cells_Correlation_Correlation_ER_Mito"], corr["Correlation_Pearson"], rtol=1e-6)


def test_segments_and_boxes():
    labels = np.array([[0, 2, 2], [1, 0, 2], [1, 1, 0]], np.int32)
    idx, off, width = segments(labels)
    assert width == 3 and off.tolist() == [0, 3, 6]
    assert idx[:3].tolist() == [3, 6, 7] and idx[3:].tolist() == [1, 2, 5]
    assert bounding_boxes(labels).tolist() == [[1, 0, 3, 2], [0, 1, 2, 3]]


def test_gray_levels_are_img_as_ubyte_of_cellprofiler_pixels():
    from skimage.util import img_as_ubyte

    rng = np.random.default_rng(0)
    image = np.concatenate([np.arange(-3, 70_001), rng.uniform(-100, 70_000, 200_000)]).astype(np.float32)[None]
    expected = img_as_ubyte(np.clip(image.astype(np.float64) / 65535, 0, 1))  # rounds half to even
    np.testing.assert_array_equal(gray_levels(image, scale=65535.0), expected)
    labels = (rng.random(image.shape) < 0.3).astype(np.int64)
    got = gray_levels(image, scale=65535.0, groups=segments(labels))
    np.testing.assert_array_equal(got, np.where(labels > 0, expected, 0))


def _odd_compartments():
    """Nuclei and cells that do not pair up one to one: a nucleus reaching out of its cell, two
    nuclei in one cell, a nucleus without a cell, cells without a nucleus, a cell that is only its
    nucleus, one-pixel objects, and labels numbered differently in the two images."""
    yy, xx = np.mgrid[:80, :90]
    cells = np.zeros((80, 90), np.int64)
    nuclei = np.zeros((80, 90), np.int64)
    disc = lambda y, x, r: (yy - y) ** 2 + (xx - x) ** 2 <= r * r  # noqa: E731
    cells[disc(15, 15, 12)] = 1
    nuclei[disc(15, 15, 5)] = 5  # inside cell 1, another number
    cells[disc(15, 45, 12)] = 2
    nuclei[disc(15, 55, 6)] = 2  # reaches out of cell 2
    cells[disc(50, 20, 14)] = 3
    nuclei[disc(46, 14, 4)] = 3  # two nuclei in cell 3
    nuclei[disc(54, 26, 4)] = 8
    cells[disc(50, 55, 10)] = 4  # no nucleus
    nuclei[disc(72, 80, 5)] = 9  # no cell
    cells[5:8, 80:84] = 6  # a cell that is only its nucleus
    nuclei[5:8, 80:84] = 6
    cells[40, 85] = 7  # one pixel, with a one-pixel nucleus
    nuclei[40, 85] = 7
    cells[75, 5] = 10  # one pixel, no nucleus
    return nuclei, cells


def test_merged_sorted_values_equal_sorted_ones():
    nuclei, cells = _odd_compartments()
    cyto = np.where(nuclei > 0, 0, cells)
    clean = {k: _sequential(v, present_labels(v)) for k, v in (("n", nuclei), ("c", cells), ("y", cyto))}
    parts = union_parts(clean["c"], clean["n"], clean["y"])
    # cells 1, 4, 6, 7 and 10 are unions of (at most) one nucleus and their cytoplasm; 2 and 3 are not
    merged = [k for k in range(len(parts)) if parts[k, 0] >= 0]
    assert present_labels(cells)[merged].tolist() == [1, 4, 6, 7, 10]
    assert parts[present_labels(cells).tolist().index(6)].tolist() == [present_labels(nuclei).tolist().index(6) + 1, 0]
    assert parts[present_labels(cells).tolist().index(4), 0] == 0
    rng = np.random.default_rng(2)
    image = rng.normal(3000, 1000, cells.shape).astype(np.float32)
    image[rng.random(cells.shape) < 0.2] = 1500.0  # ties
    image[rng.random(cells.shape) < 0.05] = -3.0
    image[rng.random(cells.shape) < 0.05] = -0.0
    keys = sort_keys(image)
    bits = image.ravel().view(np.uint32)
    groups = {k: segments(v) for k, v in clean.items()}
    runs = {k: sorted_values(bits, groups[k]) for k in ("n", "y")}
    got = sorted_values(keys, groups["c"], parts=parts, first=(runs["n"], groups["n"]),
                           second=(runs["y"], groups["y"]))
    np.testing.assert_array_equal(got, sorted_values(keys, groups["c"]))
    idx, off, _ = groups["c"]
    for k in range(len(off) - 1):
        np.testing.assert_array_equal(got[off[k]:off[k + 1]], np.sort(keys[idx[off[k]:off[k + 1]]]))
    for key, values in intensity(clean["c"], image, scale=65535.0, groups=groups["c"], ordered=got).items():
        np.testing.assert_array_equal(values, intensity(clean["c"], image, scale=65535.0)[key])
    # cells made of a nucleus and a cytoplasm measured from their sums: equal to rounding
    part_sums = {k: intensity(clean[k], image, scale=65535.0, sums=True)["sums"] for k in ("n", "y")}
    from_parts = intensity(clean["c"], image, scale=65535.0, ordered=got, parts=parts, first=part_sums["n"],
                              second=part_sums["y"])
    for key, values in intensity(clean["c"], image, scale=65535.0).items():
        np.testing.assert_allclose(from_parts[key], values, rtol=1e-12, atol=1e-15, err_msg=key)


def test_measure_objects_on_odd_compartments_equals_cp_measure():
    """Every default feature of every compartment, through measure_objects (merged sorted values
    for Cells, grey levels and Pearson from ADU), against cp_measure at rtol 1e-9."""
    from pipeline.features.measure import measure_objects

    nuclei, cells = _odd_compartments()
    rng = np.random.default_rng(4)
    image = rng.normal(3000, 1500, (5,) + cells.shape).astype(np.float32)
    image[:, rng.random(cells.shape) < 0.02] = 70_000.0
    names = ("DNA", "ER", "RNA", "AGP", "Mito")
    f = measure_objects(image, nuclei, cells, channel_names=names, ids=np.union1d(present_labels(cells), present_labels(nuclei)))
    pixels = np.clip(image.astype(np.float64) / 65535, 0, 1)
    cyto = np.where(nuclei > 0, 0, cells)
    for comp, lab in (("Nuclei", nuclei), ("Cells", cells), ("Cytoplasm", cyto)):
        present = present_labels(lab)
        rows = np.searchsorted(f["Metadata_CellID"].to_numpy(), present)
        clean = _sequential(lab, present)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for c, ch in enumerate(names):
                inten = get_intensity(clean, pixels[c], edge_measurements=False)
                for key in (k for k in inten if k.startswith("Intensity_")):
                    got = f[f"{comp}_{key}_{ch}"].to_numpy()[rows]
                    np.testing.assert_allclose(got, inten[key].astype(np.float32), rtol=1e-9, err_msg=key)
                if comp == "Cells":
                    tex = get_texture(clean, pixels[c], scale=3)
                    for key, v in tex.items():
                        got = f[f"Cells_Texture_{key.split('_3_')[0]}_{ch}_3_{key.split('_3_')[1]}"].to_numpy()[rows]
                        np.testing.assert_allclose(got, np.asarray(v, np.float64).astype(np.float32), rtol=1e-9,
                                                   err_msg=key)
            if comp == "Cells":
                corr = PEARSON(pixels[1], pixels[4], clean)
                got = f["Cells_Correlation_Correlation_ER_Mito"].to_numpy()[rows]
                expected = np.asarray(corr["Correlation_Pearson"], np.float64).astype(np.float32)
                np.testing.assert_allclose(got, expected, rtol=1e-9)
