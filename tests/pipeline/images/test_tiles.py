import numpy as np
import pytest

from pipeline.images.crops import crop_cells, field_tiles


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
    crops, table = crop_cells(image, nuclei, cells, crop_size=16, border="skip")
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


def test_cell_table_statistics_equal_scipy_on_the_real_field():
    """Areas, centroids and mean intensities of the crop table (one compiled pass) against
    scipy.ndimage per label, on the real JUMP field with cmcl's labels."""
    from pathlib import Path

    import tifffile
    from scipy import ndimage as ndi

    from pipeline.images.segmentation.classical import segment_cells, segment_nuclei

    real = Path(__file__).resolve().parents[2] / "data" / "phenix_BR00143976_C03" / "Images"
    image = np.stack([tifffile.imread(real / f"r03c03f03p01-ch{c}sk1fk1fl1.tiff") for c in (5, 2, 6, 3, 4)])
    image = image.astype(np.float32)
    nuclei = segment_nuclei(image[0])
    cells = segment_cells(nuclei, image[3])
    _, table = crop_cells(image, nuclei, cells, crop_size=64, border="pad", exclude_edge=False)
    ids = table["Metadata_CellID"].to_numpy()
    assert len(ids) == nuclei.max() > 20
    np.testing.assert_array_equal(table["AreaShape_NucleusArea"], ndi.sum(np.ones_like(nuclei), nuclei, ids))
    np.testing.assert_array_equal(table["AreaShape_CellArea"], ndi.sum(np.ones_like(cells), cells, ids))
    centres = np.array(ndi.center_of_mass(np.ones_like(nuclei), nuclei, ids))
    np.testing.assert_allclose(table[["Location_Center_Y", "Location_Center_X"]], centres, rtol=1e-6)
    for c, name in enumerate(("DNA", "ER", "RNA", "AGP", "Mito")):
        np.testing.assert_allclose(table[f"Intensity_Mean_{name}"], ndi.mean(image[c], cells, ids), rtol=1e-6)
