"""pipeline.fastmeasure: cp_measure's values, all objects at once (real field and hard shapes)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cp_measure.bulk import get_core_measurements, get_correlation_measurements
from cp_measure.core.numba.measureobjectintensity import get_intensity
from cp_measure.core.numba.measuretexture import get_texture

from pipeline import fastmeasure as fm
from pipeline.features import _present, _sequential, labels_from_outlines

REAL = Path(__file__).resolve().parents[1] / "data" / "phenix_BR00143976_C03"
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
    labels = _sequential(labels, _present(labels))
    pixels = np.clip(image.astype(np.float64) / 65535, 0, 1)
    second = np.clip(other.astype(np.float64) / 65535, 0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cp_measure's divisions on one-pixel objects
        shape = CORE["sizeshape"](labels, pixels, calculate_advanced=False, new_features=False)
        inten = get_intensity(labels, pixels, edge_measurements=False)
        corr = PEARSON(pixels, second, labels)
        tex = get_texture(labels, pixels, scale=3)
        got_shape = fm.sizeshape(labels)
    assert set(got_shape) == set(shape)
    _same(shape, got_shape)
    got = fm.intensity(labels, image, scale=65535.0)
    assert set(got) == {k for k in inten if k.startswith("Intensity_")}
    _same(inten, got, keys=got)
    _same(corr, fm.pearson(pixels, second, labels))
    got_tex = fm.texture(labels, pixels, scale=3)
    assert list(got_tex) == list(tex)
    _same(tex, got_tex)


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
    """The default set through pipeline.features equals cp_measure called per function (the
    features as the code before fastmeasure computed them), on a generated dense field."""
    from pipeline.features import measure_objects
    from pipeline.segmentation import segment_cells, segment_nuclei
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
        clean = _sequential(lab, _present(lab))
        present = _present(lab)
        rows = np.searchsorted(f["Metadata_CellID"].to_numpy(), present)
        inten = get_intensity(clean, pixels[4], edge_measurements=False)
        for key in ("MeanIntensity", "MedianIntensity", "MADIntensity", "UpperQuartileIntensity", "MassDisplacement"):
            np.testing.assert_allclose(f[f"{comp}_Intensity_{key}_Mito"].to_numpy()[rows], inten[f"Intensity_{key}"], rtol=1e-6)
    shape = CORE["sizeshape"](_sequential(cells, _present(cells)), pixels[0], calculate_advanced=False, new_features=False)
    for key in ("Solidity", "Perimeter", "EulerNumber", "MedianRadius", "Eccentricity"):
        np.testing.assert_allclose(f[f"Cells_AreaShape_{key}"], shape[key], rtol=1e-6)
    tex = get_texture(_sequential(cells, _present(cells)), pixels[2], scale=3)
    np.testing.assert_allclose(f["Cells_Texture_Entropy_RNA_3_02_256"], tex["Entropy_3_02_256"], rtol=1e-6)
    pearson = PEARSON(pixels[1], pixels[4], _sequential(cells, _present(cells)))
    np.testing.assert_allclose(f["Cells_Correlation_Correlation_ER_Mito"], pearson["Correlation_Pearson"], rtol=1e-6)


def test_segments_and_boxes():
    labels = np.array([[0, 2, 2], [1, 0, 2], [1, 1, 0]], np.int32)
    idx, off, width = fm.segments(labels)
    assert width == 3 and off.tolist() == [0, 3, 6]
    assert idx[:3].tolist() == [3, 6, 7] and idx[3:].tolist() == [1, 2, 5]
    assert fm.bounding_boxes(labels).tolist() == [[1, 0, 3, 2], [0, 1, 2, 3]]
