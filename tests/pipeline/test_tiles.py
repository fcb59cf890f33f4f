import numpy as np
import pytest

from pipeline.tiles import crop_cells, field_tiles


def _scene():
    image = np.zeros((5, 64, 64), np.float32)
    nuclei = np.zeros((64, 64), np.uint32)
    nuclei[20:26, 20:26] = 1
    nuclei[1:5, 1:5] = 2  # touches the border region: its crop would leave the field
    # a C-shaped nucleus whose centroid lies outside it
    nuclei[40:52, 40:43] = 3
    nuclei[40:43, 40:52] = 3
    nuclei[49:52, 40:52] = 3
    cells = nuclei.copy()
    for c in range(5):
        image[c] = (c + 1) * 100 + nuclei * 10
    return image, nuclei, cells


def test_crops_are_centred_inside_their_nucleus():
    image, nuclei, cells = _scene()
    crops, table = crop_cells(image, nuclei, cells, crop_size=16)
    assert crops.shape == (2, 5, 16, 16) and crops.dtype == np.uint16
    assert list(table["Metadata_CellID"]) == [1, 3]
    for crop, row in zip(crops, table.itertuples()):
        assert nuclei[row.Crop_CenterY, row.Crop_CenterX] == row.Metadata_CellID
        assert crop[0, 8, 8] == image[0, row.Crop_CenterY, row.Crop_CenterX]
    assert table["Intensity_Mean_Mito"].iloc[0] == pytest.approx(500 + 10)


def test_pad_keeps_border_cells():
    image, nuclei, cells = _scene()
    crops, table = crop_cells(image, nuclei, cells, crop_size=16, border="pad")
    assert len(crops) == 3 and list(table["Metadata_CellID"]) == [1, 2, 3]
    with pytest.raises(ValueError, match="border"):
        crop_cells(image, nuclei, cells, border="wrap")


def test_field_tiles():
    image = np.arange(2 * 10 * 12).reshape(2, 10, 12)
    t = field_tiles(image, tile_size=5)
    assert t.shape == (4, 2, 5, 5)
    np.testing.assert_array_equal(t[1], image[:, 0:5, 5:10])
    with pytest.raises(ValueError, match="smaller"):
        field_tiles(image, tile_size=20)
