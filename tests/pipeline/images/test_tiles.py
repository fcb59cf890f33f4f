import numpy as np
import pytest

from pipeline.images.crops import CropArrayReader, CropArrayWriter, crop_cells, field_tiles


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


# --------------------------------------------------------------------------------------------
# crop arrays on disk
# --------------------------------------------------------------------------------------------
def _write(tmp_path, rows, *, chunk=4, shard=16, pieces=(5, 9, 1, 20)):
    import zarr

    group = zarr.open_group(str(tmp_path / "c.zarr"), mode="w", zarr_format=3)
    writer = CropArrayWriter(group, "crops", n_channels=rows.shape[1], size=rows.shape[2], chunk=chunk, shard=shard)
    start = 0
    for k in pieces:
        writer.append(rows[start : start + k])
        start += k
        # only whole shards reach the disk before close()
        assert writer.array.shape[0] % shard == 0
    writer.append(rows[start:])
    assert writer.close() == len(rows)
    return tmp_path / "c.zarr" / "crops"


@pytest.fixture
def rows():
    return np.random.default_rng(0).integers(0, 60000, size=(45, 5, 6, 6)).astype(np.uint16)


def test_writer_shards_and_reader_reads_every_chunk(tmp_path, rows):
    import zarr

    path = _write(tmp_path, rows)
    arr = zarr.open_array(str(path), mode="r")
    assert arr.chunks == (4, 5, 6, 6) and arr.shards == (16, 5, 6, 6)
    np.testing.assert_array_equal(arr[:], rows)
    assert len(list((path / "c").iterdir())) == 3  # 45 rows -> 3 shard files
    reader = CropArrayReader(path)
    assert reader.direct and reader.chunk_len == 4 and reader.shape == rows.shape
    for c in range(12):  # the last chunk (rows 44..45) is partial and in a partial shard
        np.testing.assert_array_equal(reader.read_chunk(c), rows[4 * c : 4 * c + 4])
    with pytest.raises(IndexError, match="outside"):
        reader.read_chunk(12)


def test_reader_falls_back_to_zarr_for_other_layouts(tmp_path, rows):
    import zarr

    arr = zarr.open_group(str(tmp_path / "u.zarr"), mode="w", zarr_format=3).create_array(
        "crops", shape=rows.shape, chunks=(8, 5, 6, 6), dtype="uint16")
    arr[:] = rows
    reader = CropArrayReader(tmp_path / "u.zarr" / "crops")
    assert not reader.direct and reader.chunk_len == 8
    np.testing.assert_array_equal(reader.read_chunk(5), rows[40:45])


def test_reader_rejects_a_damaged_shard_index_and_fills_missing_shards(tmp_path, rows):
    path = _write(tmp_path, rows)
    shard = path / "c" / "1" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF  # inside the index, before its CRC32C
    shard.write_bytes(bytes(raw))
    reader = CropArrayReader(path)
    np.testing.assert_array_equal(reader.read_chunk(0), rows[:4])  # shard 0 untouched
    with pytest.raises(OSError, match="checksum"):
        reader.read_chunk(4)
    shard.unlink()  # a missing shard reads as the fill value, as zarr reads it
    assert not CropArrayReader(path).read_chunk(5).any()


def test_writer_validates_its_geometry(tmp_path, rows):
    import zarr

    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    with pytest.raises(ValueError, match="multiple"):
        CropArrayWriter(group, "crops", n_channels=5, size=6, chunk=4, shard=10)
    writer = CropArrayWriter(group, "crops", n_channels=5, size=6, chunk=4, shard=16)
    with pytest.raises(ValueError, match="do not fit"):
        writer.append(rows[:, :, :4, :4])


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
