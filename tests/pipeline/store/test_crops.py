"""pipeline.store.crops: the crop codec declared once, the sharded writer, the fast reader and
what it does with arrays it cannot read fast (zarr for other layouts, an error for other codecs)."""

import json

import numpy as np
import pytest

from pipeline.store import crops as store_crops
from pipeline.store.crops import CROP_CODEC, CropArrayReader, CropArrayWriter, CropCodecError


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
    assert not reader.direct and reader.chunk_len == 8 and "not sharded" in reader.why_zarr
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


def _crop_layout_array(tmp_path, rows, **codecs):
    """An array in the crop layout (row shards of row chunks) with other codecs."""
    import zarr

    group = zarr.open_group(str(tmp_path / "o.zarr"), mode="w", zarr_format=3)
    arr = group.create_array("crops", shape=rows.shape, chunks=(4, *rows.shape[1:]), shards=(16, *rows.shape[1:]),
                             dtype="uint16", **codecs)
    arr[:] = rows
    return tmp_path / "o.zarr" / "crops"


def test_the_codec_is_declared_once_and_written_as_declared(tmp_path, rows):
    """What the writer puts in zarr.json is CROP_CODEC, and the fast reader decodes it."""
    meta = json.loads((_write(tmp_path, rows) / "zarr.json").read_text())
    (sharding,) = meta["codecs"]
    inner = sharding["configuration"]["codecs"]
    assert [c["name"] for c in inner] == ["bytes", CROP_CODEC.compressor] + ["crc32c"] * CROP_CODEC.checksum
    assert inner[1]["configuration"]["level"] == CROP_CODEC.level
    assert CROP_CODEC.compressor in store_crops.ZARR_COMPRESSORS and CROP_CODEC.compressor in store_crops.FAST_DECODERS
    assert CropArrayReader(tmp_path / "c.zarr" / "crops").direct


def test_a_crop_array_with_a_codec_the_fast_path_cannot_decode_fails_loudly(tmp_path, rows):
    """Not a silent slow path: the error names the array and the codecs and says what to do;
    through_zarr=True reads it through zarr, on request."""
    from zarr.codecs import BloscCodec

    path = _crop_layout_array(tmp_path, rows, compressors=(BloscCodec(cname="lz4"),))
    with pytest.raises(CropCodecError, match=r"o\.zarr.*bytes \+ blosc.*through_zarr=True"):
        CropArrayReader(path)
    reader = CropArrayReader(path, through_zarr=True)
    assert not reader.direct and "through_zarr" in reader.why_zarr
    np.testing.assert_array_equal(reader.read_chunk(3), rows[12:16])


def test_big_endian_crops_fail_loudly(tmp_path, rows):
    from zarr.codecs import BytesCodec

    path = _crop_layout_array(tmp_path, rows, serializer=BytesCodec(endian="big"))
    with pytest.raises(CropCodecError, match="big-endian"):
        CropArrayReader(path)


def test_a_new_compressor_is_one_decoder_entry(tmp_path, rows, monkeypatch):
    """Declaring the decoder of a compressor makes its crop arrays read fast, with the same rows."""
    from numcodecs import Blosc
    from zarr.codecs import BloscCodec

    path = _crop_layout_array(tmp_path, rows, compressors=(BloscCodec(cname="lz4"),))
    monkeypatch.setitem(store_crops.FAST_DECODERS, "blosc", Blosc)
    reader = CropArrayReader(path)
    assert reader.direct and reader.why_zarr is None
    for c in range(12):
        np.testing.assert_array_equal(reader.read_chunk(c), rows[4 * c: 4 * c + 4])
