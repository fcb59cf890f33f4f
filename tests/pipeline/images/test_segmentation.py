from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from pipeline.images.illumination import apply
from pipeline.images.segmentation.scoring import f1_at_iou, match_objects
from pipeline.images.segmentation.classical import segment_cells, segment_nuclei
from pipeline.synthetic import illumination_fields, phenotype_from_smiles, render_field


def _fields(n=6, size=256, seed=0):
    rng = np.random.default_rng(seed)
    illum = illumination_fields(size, seed)
    ph = phenotype_from_smiles("CC(=O)Oc1ccccc1C(=O)O")
    return [render_field(ph, size=size, rng=rng, illumination=illum) for _ in range(n)], illum


def test_nuclei_and_cells_match_ground_truth():
    fields, illum = _fields()
    tn = tc = np.zeros(3, int)
    for image, true_nuclei, true_cells in fields:
        corrected = apply(image, illum)
        nuclei = segment_nuclei(corrected[0])
        cells = segment_cells(nuclei, corrected[3])
        assert nuclei.dtype == np.uint32 and cells.dtype == np.uint32
        # one cell per nucleus, containing it
        assert set(np.unique(cells)) == set(np.unique(nuclei))
        assert np.all(cells[nuclei > 0] == nuclei[nuclei > 0])
        tn = tn + match_objects(true_nuclei, nuclei)
        tc = tc + match_objects(true_cells, cells)
    f1 = lambda t: 2 * t[0] / (2 * t[0] + t[1] + t[2])  # noqa: E731
    assert f1(tn) >= 0.95, tn
    assert f1(tc) >= 0.85, tc


def test_uncorrected_touching_nuclei_on_a_gradient_are_split():
    yy, xx = np.mgrid[:200, :200]
    truth = np.zeros((200, 200), np.uint32)
    centres = [(50, 50), (50, 66), (120, 130), (133, 140), (150, 40), (40, 150)]  # two touching pairs
    for k, (cy, cx) in enumerate(centres, 1):
        truth[((yy - cy) ** 2 + (xx - cx) ** 2) < 81] = k
    background = 300 + 3 * xx  # strong uncorrected gradient
    image = background + 1500 * ndi.gaussian_filter((truth > 0).astype(float), 1)
    image = np.random.default_rng(1).poisson(image).astype(np.uint16)
    labels = segment_nuclei(image)
    assert labels.max() == len(centres)
    assert f1_at_iou(truth, labels) == 1.0


def test_empty_and_bad_inputs():
    assert segment_nuclei(np.full((32, 32), 7, np.uint16)).max() == 0
    with pytest.raises(ValueError, match="2-D"):
        segment_nuclei(np.zeros((2, 8, 8)))
    with pytest.raises(TypeError, match="integer"):
        segment_cells(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="differs"):
        segment_cells(np.zeros((8, 8), np.uint32), np.zeros((9, 8)))


def test_scoring_hand_cases():
    a = np.zeros((10, 10), int)
    a[0:4, 0:4] = 1
    a[6:10, 6:10] = 2
    b = np.zeros_like(a)
    b[0:4, 0:3] = 5  # IoU 0.75 with object 1
    b[0:2, 6:8] = 1  # spurious
    assert match_objects(a, b) == (1, 1, 1)
    assert f1_at_iou(a, a) == 1.0 and f1_at_iou(np.zeros_like(a), np.zeros_like(a)) == 1.0


def _foreign_microscope_image(seed=3, shape=(400, 500)):
    """A non-generator image: elliptical nuclei of radius 5-14 px, 4x brightness range, touching
    pairs, a vignetted + tilted background, blur and Poisson noise (like a raw widefield DNA image)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    truth = np.zeros(shape, np.uint32)
    signal = np.zeros(shape)
    k = 0
    for cy in range(30, shape[0] - 30, 45):
        for cx in range(30, shape[1] - 30, 45):
            for dx in ((0,) if rng.random() < 0.8 else (0, 1)):  # some touching pairs
                a, b = rng.uniform(5, 14), rng.uniform(5, 14)
                th = rng.uniform(0, np.pi)
                ox = cx + dx * (a + b) * 0.95 + rng.uniform(-6, 6)
                oy = cy + rng.uniform(-6, 6)
                u = (xx - ox) * np.cos(th) + (yy - oy) * np.sin(th)
                v = (yy - oy) * np.cos(th) - (xx - ox) * np.sin(th)
                inside = ((u / a) ** 2 + (v / b) ** 2 < 1) & (truth == 0)
                k += 1
                truth[inside] = k
                signal[inside] = rng.uniform(500, 2000)
    background = 150 + 0.4 * xx + 250 * np.exp(-((yy - 200) ** 2 + (xx - 250) ** 2) / 2e5)
    image = rng.poisson(background + ndi.gaussian_filter(signal, 1.2)).astype(np.uint16)
    return image, truth


def test_raw_image_of_another_microscope():
    image, truth = _foreign_microscope_image()
    labels = segment_nuclei(image)
    assert f1_at_iou(truth, labels) >= 0.9, (truth.max(), labels.max(), match_objects(truth, labels))


def test_out_of_focus_nuclei_keep_their_size():
    rng = np.random.default_rng(5)
    ph = phenotype_from_smiles("CCO")
    tn = np.zeros(3, int)
    for _ in range(2):
        image, true_nuclei, _ = render_field(ph, size=256, rng=rng, out_of_focus=True)
        tn = tn + match_objects(true_nuclei, segment_nuclei(image[0]))
    assert 2 * tn[0] / (2 * tn[0] + tn[1] + tn[2]) >= 0.9, tn


def test_nuclei_on_real_fields_agree_with_cellprofiler_and_manual_masks():
    """Real images in tests/data: a JUMP Phenix field with CellProfiler's own outlines, and a
    Data Science Bowl 2018 image with manual masks (shipped in the stardist wheel)."""
    import tifffile
    from skimage.segmentation import clear_border

    from pipeline.images.segmentation.scoring import labels_from_outlines

    data = Path(__file__).resolve().parents[2] / "data"
    phenix = data / "phenix_BR00143976_C03"
    outlines = tifffile.imread(phenix / "cellprofiler" / "NucleiOutlines_BR00143976_C03_3.tiff")
    truth = labels_from_outlines(outlines)
    assert truth.max() == 37 and (truth[outlines.any(axis=-1) > 0] > 0).mean() > 0.95  # outlines are the objects
    dna = tifffile.imread(phenix / "Images" / "r03c03f03p01-ch5sk1fk1fl1.tiff")
    # CellProfiler discards nuclei touching the border: compare the rest
    assert f1_at_iou(clear_border(truth), clear_border(segment_nuclei(dna))) >= 0.9  # measured 0.960
    dsb = data / "dsb2018_nuclei_stardist"
    masks = tifffile.imread(dsb / "masks.tif")
    assert f1_at_iou(masks, segment_nuclei(tifffile.imread(dsb / "image.tif"))) >= 0.75  # measured 0.788


def test_component_watershed_and_edt_equal_the_whole_field_ones():
    """_watershed floods only components with two or more marker labels and _edt_by_component
    visits only boxes around objects; both must equal skimage's / scipy's whole-field results,
    on the real JUMP field (sparse, touching cells) and a dense generated field (clumps). The
    elevations are smoothed, as in segmentation: skimage pushes every marker pixel at the same
    age, so between marker pixels of exactly equal elevation its order follows its heap's layout,
    which no flooding by parts can reproduce."""
    import tifffile
    from skimage.segmentation import watershed

    from pipeline.images.segmentation.classical import _edt_by_component, _watershed

    real = Path(__file__).resolve().parents[2] / "data" / "phenix_BR00143976_C03" / "Images"
    dna = tifffile.imread(real / "r03c03f03p01-ch5sk1fk1fl1.tiff").astype(np.float32)
    agp = tifffile.imread(real / "r03c03f03p01-ch3sk1fk1fl1.tiff").astype(np.float32)
    (image, _, _), = _fields(n=1, size=384, seed=4)[0]
    for dna_img, cyto in ((dna, agp), (image[0].astype(np.float32), image[3].astype(np.float32))):
        mask = ndi.gaussian_filter(dna_img, 1) > np.percentile(dna_img, 80)
        mask[:3, :40] = True  # an object on the border
        comp, n = ndi.label(mask)
        dist = _edt_by_component(mask, comp)
        np.testing.assert_array_equal(dist, ndi.distance_transform_edt(mask).astype(np.float32))
        smooth = ndi.gaussian_filter(dist, 2)
        peaks = np.argwhere((smooth == ndi.maximum_filter(smooth, 7)) & mask)
        markers = np.zeros(mask.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        assert np.bincount(comp[markers > 0]).max() >= 2  # some components hold several seeds
        np.testing.assert_array_equal(_watershed(-smooth, markers, mask), watershed(-smooth, markers, mask=mask))
        nuclei = segment_nuclei(dna_img)
        cmask = (ndi.gaussian_filter(cyto, 2) > np.percentile(cyto, 60)) | (nuclei > 0)
        elevation = -ndi.gaussian_filter(cyto, 2)
        np.testing.assert_array_equal(_watershed(elevation, nuclei.astype(np.int32), cmask),
                                      watershed(elevation, nuclei.astype(np.int32), mask=cmask))


def test_compiled_otsu_equals_skimage_on_the_clipped_image():
    """The thresholds' histogram is counted by a compiled loop that clips on the fly: the value
    must be skimage's threshold_otsu of the clipped copy, bin for bin, including values exactly
    on bin edges, negative and huge values, a cap inside the range and an image constant after
    clipping."""
    import tifffile
    from skimage.filters import threshold_otsu

    from pipeline.images.segmentation.classical import _otsu

    rng = np.random.default_rng(11)
    images = Path(__file__).resolve().parents[2] / "data" / "phenix_BR00143976_C03" / "Images"
    real = tifffile.imread(next(images.glob("*ch5*"))).astype(np.float32)
    cases = [
        (real, np.float32(np.percentile(real, 99.9))),
        (real[::2, ::2], np.float32(real.max())),
        (rng.normal(0, 1e4, 5000).astype(np.float32), np.float32(3e3)),
        (np.linspace(-3, 5, 257 * 7, dtype=np.float32), np.float32(5)),  # values on the edges
        (rng.integers(0, 9, 3000).astype(np.float32), np.float32(4)),  # ties, cap between values
        (rng.lognormal(5, 2, 4000).astype(np.float32), np.float32(1e9)),
    ]
    for image, cap in cases:
        assert _otsu(image, cap) == float(threshold_otsu(np.minimum(image, cap)))
    flat = np.full((30, 30), 7.0, np.float32)
    flat[0, 0] = 900
    assert _otsu(flat, np.float32(7)) == 7.0


def test_one_dispatch_point_runs_every_declared_method():
    """Every name of SEGMENTERS (the one declaration) has its entry in the dispatch table and no
    other name does; 'classical' through segment_field is segment_nuclei + segment_cells."""
    from pipeline.images.choices import SEGMENTERS
    from pipeline.images.segmentation.dispatch import SEGMENTATION_METHODS, segment_field

    assert set(SEGMENTATION_METHODS) == set(SEGMENTERS)
    image, _, _ = render_field(phenotype_from_smiles("CCO"), size=128, nucleus_radius=7.0,
                               rng=np.random.default_rng(4))
    image = image.astype(np.float32)
    nuclei, cells = segment_field(image[0], image[3], segmenter="classical")
    expected = segment_nuclei(image[0])
    assert nuclei.max() > 3
    np.testing.assert_array_equal(nuclei, expected)
    np.testing.assert_array_equal(cells, segment_cells(expected, image[3]))
    with pytest.raises(ValueError, match="'classical', 'cellpose'"):
        segment_field(image[0], image[3], segmenter="watershed")
