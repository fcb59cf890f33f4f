"""Cells near the field's edge: padded crops, the flag, edge nuclei left out, features unchanged."""

import numpy as np
import pytest

from pipeline.images.borders import PAD_VALUE, cut_windows, edge_labels, window_inside
from pipeline.images.crops import crop_cells, crop_counts

CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")


def _scene():
    """A 64 x 80 field: nucleus 1 in the middle, 2 near the top-left corner (its 32-px crop crosses
    the edge), 3 touching the right edge, 4 near the bottom (crosses the edge), 5 one pixel from it."""
    rng = np.random.default_rng(0)
    image = rng.uniform(100, 5000, size=(5, 64, 80)).astype(np.float32)
    nuclei = np.zeros((64, 80), np.uint32)
    nuclei[28:36, 36:44] = 1
    nuclei[3:9, 4:10] = 2
    nuclei[20:27, 76:80] = 3  # touches column 79
    nuclei[55:61, 30:36] = 4
    nuclei[56:63, 60:66] = 5  # row 62: one pixel from the edge, not touching it
    cells = nuclei.copy()
    return image, nuclei, cells


def test_edge_labels_and_windows():
    _, nuclei, _ = _scene()
    np.testing.assert_array_equal(edge_labels(nuclei), [3])
    assert edge_labels(np.zeros((4, 4), np.uint32)).size == 0
    with pytest.raises(ValueError, match=r"\(Y, X\)"):
        edge_labels(np.zeros((2, 4, 4), np.uint32))
    np.testing.assert_array_equal(window_inside(np.array([0, -1, 32, 33]), np.array([0, 0, 48, 48]), 32, (64, 80)),
                                  [True, False, True, False])


def test_padded_window_is_the_field_inside_and_the_pad_value_outside():
    image = np.arange(2 * 10 * 12, dtype=np.float32).reshape(2, 10, 12) + 1  # no pixel equals the pad value
    y0, x0 = np.array([-3, 2, 7, -20]), np.array([-2, 3, 9, 0])  # top-left corner, inside, bottom-right, outside
    out = cut_windows(image, y0, x0, 6)
    assert out.shape == (4, 2, 6, 6) and out.dtype == image.dtype
    for k, (y, x) in enumerate(zip(y0, x0)):
        yy, xx = np.mgrid[y:y + 6, x:x + 6]
        inside = (yy >= 0) & (yy < 10) & (xx >= 0) & (xx < 12)
        for c in range(2):
            np.testing.assert_array_equal(out[k, c][inside], image[c, yy[inside], xx[inside]])
            assert (out[k, c][~inside] == PAD_VALUE).all()
    assert (out[3] == PAD_VALUE).all() and (out[1] == image[:, 2:8, 3:9]).all()


def test_crop_cells_pads_flags_and_leaves_edge_nuclei_out():
    image, nuclei, cells = _scene()
    crops, table = crop_cells(image, nuclei, cells, crop_size=32, channel_names=CHANNELS)
    assert list(table["Metadata_CellID"]) == [1, 2, 4, 5]  # 3 touches the edge
    assert list(table["Metadata_CropPadded"]) == [False, True, True, True]
    assert table["Metadata_CropPadded"].dtype == bool
    rounded = np.clip(np.rint(image), 0, 65535).astype(np.uint16)
    for crop, row in zip(crops, table.itertuples()):
        y0, x0 = row.Crop_CenterY - 16, row.Crop_CenterX - 16
        yy, xx = np.mgrid[y0:y0 + 32, x0:x0 + 32]
        inside = (yy >= 0) & (yy < 64) & (xx >= 0) & (xx < 80)
        assert (not inside.all()) == row.Metadata_CropPadded
        for c in range(5):
            np.testing.assert_array_equal(crop[c][inside], rounded[c, yy[inside], xx[inside]])
            assert (crop[c][~inside] == PAD_VALUE).all()
    # interior crops are pixel-identical to the ones 'skip' cuts, and 'skip' drops exactly the padded rows
    skip_crops, skip = crop_cells(image, nuclei, cells, crop_size=32, border="skip", channel_names=CHANNELS)
    assert list(skip["Metadata_CellID"]) == [1] and not skip["Metadata_CropPadded"].any()
    np.testing.assert_array_equal(skip_crops[0], crops[0])
    # the intensities of the table are the whole cell's, padded or not
    for row in table.itertuples():
        assert row.Intensity_Mean_ER == pytest.approx(image[1][cells == row.Metadata_CellID].mean(), rel=1e-6)
    # the fields table's counts: every nucleus is accounted for once
    assert crop_counts(nuclei, table) == {"Count_NucleiTouchingEdge": 1, "Count_CropsSkipped": 0, "Count_CropsPadded": 3}
    assert crop_counts(nuclei, skip) == {"Count_NucleiTouchingEdge": 1, "Count_CropsSkipped": 3, "Count_CropsPadded": 0}
    _, kept = crop_cells(image, nuclei, cells, crop_size=32, exclude_edge=False, channel_names=CHANNELS)
    assert list(kept["Metadata_CellID"]) == [1, 2, 3, 4, 5]


def test_a_crop_larger_than_the_field_is_all_padding_around_it():
    image, nuclei, cells = _scene()
    crops, table = crop_cells(image[:, :40, :40], nuclei[:40, :40], cells[:40, :40], crop_size=96,
                              channel_names=CHANNELS)
    assert list(table["Metadata_CellID"]) == [2] and table["Metadata_CropPadded"].all()  # 1 now touches the edge
    y0, x0 = 48 - table["Crop_CenterY"].iloc[0], 48 - table["Crop_CenterX"].iloc[0]  # the field's corner in the crop
    rounded = np.clip(np.rint(image[:, :40, :40]), 0, 65535).astype(np.uint16)
    np.testing.assert_array_equal(crops[0][:, y0:y0 + 40, x0:x0 + 40], rounded)
    outside = np.ones((96, 96), bool)
    outside[y0:y0 + 40, x0:x0 + 40] = False
    assert (crops[0][:, outside] == PAD_VALUE).all()


def test_features_of_padded_cells_do_not_depend_on_the_crop_window():
    """The features of a cell whose crop is padded equal those measured with the same field set in
    a larger blank canvas, where no crop crosses the edge (bounding boxes shift by the offset)."""
    from pipeline.features.measure import measure_objects
    from pipeline.images.illumination import apply
    from pipeline.images.segmentation.classical import segment_cells, segment_nuclei
    from pipeline.synthetic import illumination_fields, phenotype_from_smiles, render_field

    illum = illumination_fields(192, 5)
    image, _, _ = render_field(phenotype_from_smiles("CC(=O)Oc1ccccc1C(=O)O"), size=192,
                               rng=np.random.default_rng(5), illumination=illum)
    corrected = apply(image, illum)
    nuclei = segment_nuclei(corrected[0])
    cells = segment_cells(nuclei, corrected[3])
    _, table = crop_cells(corrected, nuclei, cells, crop_size=64, channel_names=CHANNELS)
    ids = table["Metadata_CellID"].to_numpy()
    assert table["Metadata_CropPadded"].sum() >= 2 and (~table["Metadata_CropPadded"]).sum() >= 2
    field = measure_objects(corrected, nuclei, cells, channel_names=CHANNELS, ids=ids)
    p = 64
    canvas = measure_objects(np.pad(corrected, ((0, 0), (p, p), (p, p))), np.pad(nuclei, p), np.pad(cells, p),
                             channel_names=CHANNELS, ids=ids)
    _, canvas_table = crop_cells(np.pad(corrected, ((0, 0), (p, p), (p, p))), np.pad(nuclei, p), np.pad(cells, p),
                                 crop_size=64, channel_names=CHANNELS)
    assert not canvas_table["Metadata_CropPadded"].any()
    position = [c for c in field.columns if "BoundingBoxM" in c]  # Minimum_X ... Maximum_Y
    assert len(position) == 8
    np.testing.assert_array_equal(canvas[position] - p, field[position])
    rest = field.columns.difference(position)
    np.testing.assert_allclose(canvas[rest].to_numpy(np.float64), field[rest].to_numpy(np.float64), rtol=1e-6)
