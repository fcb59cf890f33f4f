"""Crop and tile arrays in the store: their codec (declared once), writer and fast reader.

The one place to change the crop codec is :data:`CROP_CODEC` (with :data:`CROPS_CHUNK` and
:data:`CROPS_SHARD`, the geometry): :class:`CropArrayWriter` writes every new array with it, and
:class:`CropArrayReader` reads arrays in that layout without zarr (two ``pread`` calls per chunk).
A new compressor needs one entry in ``ZARR_COMPRESSORS`` (how zarr writes it) and one in
``FAST_DECODERS`` (how the fast reader decodes it); ``tests/pipeline/store/test_crops.py``
fails when the declared codec lacks either.

What the reader does with an array it cannot read fast is explicit:

* an array not in the crop layout at all (not sharded in rows, e.g. an OME-Zarr image or an
  unsharded array) is read through zarr: :attr:`CropArrayReader.direct` is False and
  :attr:`CropArrayReader.why_zarr` says why;
* an array in the crop layout whose chunks use a codec the fast path cannot decode (a new
  compressor without its decoder, big-endian bytes) is an error at open
  (:class:`CropCodecError`, naming the array and the codec chain), unless the caller asks for
  zarr with ``through_zarr=True``: a slow path is never taken silently for crops.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["CROPS_CHUNK", "CROPS_SHARD", "CropCodec", "CROP_CODEC", "ZARR_COMPRESSORS", "FAST_DECODERS", "CropCodecError",
           "CropArrayWriter", "CropArrayReader"]

#: rows per compressed chunk of a crop array (what reading one crop decodes)
CROPS_CHUNK = 16
#: rows per shard (one file) of a crop array
CROPS_SHARD = 1024

#: A compressor of crop chunks (zarr v3 codec name).
Compressor = Literal["zstd"]


@dataclass(frozen=True)
class CropCodec:
    """How each chunk of a crop or tile array is encoded: zarr v3 ``bytes`` (little-endian), then
    ``compressor`` at ``level``, then a CRC32C checksum when ``checksum`` (corruption is found)."""

    compressor: Compressor
    level: int
    checksum: bool

    def zarr_compressors(self) -> tuple:
        """The zarr v3 codecs after ``bytes`` (``compressors=`` of ``create_array``)."""
        from zarr.codecs import Crc32cCodec

        first = ZARR_COMPRESSORS[self.compressor](self.level)
        return (first, Crc32cCodec()) if self.checksum else (first,)


def _zstd_codec(level: int):
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=level)


def _zstd_decoder():
    from numcodecs import Zstd

    return Zstd()


#: How zarr writes each compressor, at a level.
ZARR_COMPRESSORS = {"zstd": _zstd_codec}
#: How the fast reader decodes each compressor (a numcodecs codec with ``decode``).
FAST_DECODERS = {"zstd": _zstd_decoder}

#: The crop codec: zstd level 1 (fast to write in the crop workers, decoded in ~0.1 ms per chunk)
#: with a checksum per chunk.
CROP_CODEC = CropCodec(compressor="zstd", level=1, checksum=True)


class CropCodecError(ValueError):
    """A crop array in the crop layout whose codec the fast reader cannot decode."""


class CropArrayWriter:
    """Append crops or tiles to a sharded zarr v3 array, one whole shard at a time.

    The array is ``(n, C, S, S)`` uint16, chunked ``chunk`` rows along ``n`` (the unit a reader
    decodes: one crop costs ``chunk`` rows, not a whole file) inside shards of ``shard`` rows (the
    unit of files: a 350,000-cell plate is a few hundred files, not tens of thousands). Each chunk
    is encoded with :data:`CROP_CODEC` (zstd, then a CRC32C checksum). Rows are
    buffered and written only as complete shards, so no shard is ever rewritten; :meth:`close`
    writes the final partial shard.

    Parameters
    ----------
    group : zarr.Group
        Open for writing (zarr format 3).
    name : str
        Array name inside ``group`` (``'crops'``, ``'tiles'``).
    n_channels, size : int
        Channels and edge length of each row.
    chunk, shard : int
        Rows per chunk and per shard; ``shard`` must be a multiple of ``chunk``.

    Examples
    --------
    >>> import zarr
    >>> g = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=3)
    >>> w = CropArrayWriter(g, "crops", n_channels=5, size=8, chunk=4, shard=16)
    >>> w.append(np.zeros((10, 5, 8, 8), np.uint16)); w.close()
    10
    >>> g["crops"].chunks, g["crops"].shards
    ((4, 5, 8, 8), (16, 5, 8, 8))
    """

    def __init__(self, group, name: str, *, n_channels: int, size: int, chunk: int = CROPS_CHUNK, shard: int = CROPS_SHARD) -> None:
        if chunk < 1 or shard < chunk or shard % chunk:
            raise ValueError(f"{name}: shard ({shard}) must be a positive multiple of chunk ({chunk})")
        self.shard = int(shard)
        self.array = group.create_array(
            name, shape=(0, n_channels, size, size), chunks=(chunk, n_channels, size, size),
            shards=(shard, n_channels, size, size), dtype="uint16", dimension_names=("n", "c", "y", "x"),
            compressors=CROP_CODEC.zarr_compressors(),
            config={"write_empty_chunks": True},  # crops are never blank: skip zarr's compare-to-fill pass
        )
        self._buffer: list[np.ndarray] = []
        self._buffered = 0

    def append(self, rows: np.ndarray) -> None:
        """Queue ``rows`` (k, C, S, S); every complete shard queued so far is written."""
        if rows.shape[1:] != self.array.shape[1:]:
            raise ValueError(f"rows of shape {rows.shape[1:]} do not fit array rows {self.array.shape[1:]}")
        if len(rows):
            self._buffer.append(rows)
            self._buffered += len(rows)
        if self._buffered >= self.shard:
            block = np.concatenate(self._buffer)
            n = (len(block) // self.shard) * self.shard
            self.array.append(block[:n], axis=0)
            rest = block[n:]
            self._buffer, self._buffered = ([rest] if len(rest) else []), len(rest)

    def close(self) -> int:
        """Write what is left; return the number of rows in the array."""
        if self._buffered:
            self.array.append(np.concatenate(self._buffer), axis=0)
            self._buffer, self._buffered = [], 0
        return int(self.array.shape[0])


_MISSING = np.uint64(2**64 - 1)


def _direct_layout(meta: dict, shape: tuple[int, ...], path: Path) -> tuple[dict | None, str | None]:
    """The sharding parameters of ``meta`` (a zarr v3 ``zarr.json``) when the array is in the crop
    layout (row shards of row chunks, default chunk keys), else None and why it is not.

    Raises
    ------
    CropCodecError
        When the array is in the crop layout but its codecs are not ones the fast reader decodes.
    """
    try:
        names = [c["name"] for c in meta["codecs"]]
        if names != ["sharding_indexed"]:
            return None, f"not sharded (codecs {' + '.join(names)})"
        (codec,) = meta["codecs"]
        if meta["chunk_key_encoding"]["name"] != "default":
            return None, f"chunk keys {meta['chunk_key_encoding']['name']!r}, not 'default'"
        cfg = codec["configuration"]
        shard = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        chunk = tuple(cfg["chunk_shape"])
        if shard[1:] != tuple(shape[1:]) or chunk[1:] != tuple(shape[1:]) or shard[0] % chunk[0]:
            return None, f"shards {shard} and chunks {chunk} are not whole rows of {tuple(shape)}"
        sep = meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/")
        inner, index = cfg["codecs"], cfg.get("index_codecs", [])
        index_at_end = cfg.get("index_location", "end") == "end"
    except (KeyError, TypeError, ValueError) as err:
        return None, f"metadata not in the crop layout ({type(err).__name__}: {err})"
    compressor, crc32c = _fast_codecs(inner, index, path)
    return {"chunk": chunk[0], "shard": shard[0], "compressor": compressor, "crc32c": crc32c,
            "index_at_end": index_at_end, "sep": sep}, None


def _fast_codecs(inner: list[dict], index: list[dict], path: Path) -> tuple[str | None, bool]:
    """The compressor (None: none) and whether a CRC32C follows, of a chunk codec chain the fast
    reader decodes: ``bytes`` (little-endian), an optional compressor of ``FAST_DECODERS``, an
    optional ``crc32c``; the shard index must be ``bytes`` + ``crc32c``. Else CropCodecError."""
    names = [c.get("name") for c in inner]
    rest = names[1:]
    crc32c = bool(rest) and rest[-1] == "crc32c"
    if crc32c:
        rest = rest[:-1]
    little = bool(inner) and inner[0].get("configuration", {}).get("endian", "little") == "little"
    index_names = [c.get("name") for c in index]
    if names[:1] != ["bytes"] or not little or len(rest) > 1 or (rest and rest[0] not in FAST_DECODERS) \
            or index_names != ["bytes", "crc32c"]:
        raise CropCodecError(
            f"crop array {path}: codecs {' + '.join(map(str, names))}{'' if little else ' (big-endian)'} "
            f"(index {' + '.join(map(str, index_names))}) have no fast reader; declare the decoder in "
            f"pipeline/store/crops.py (FAST_DECODERS) or open it with CropArrayReader(path, through_zarr=True)")
    return (rest[0] if rest else None), crc32c


class CropArrayReader:
    """Whole row-chunks of a crop or tile array, read with two ``pread`` calls each.

    zarr-python 3 spends 2-3 ms per ``array[a:b]`` call in its event-loop round trip, more
    than decoding 16 crops, so a training loader that draws crops at random is bound by call
    overhead. For the layout :class:`CropArrayWriter` writes on a local file system this reader
    reads a shard's index once (checking its CRC32C), then each chunk's bytes, checks the chunk's
    CRC32C when it has one, and decompresses them itself. An array not in that layout (unsharded,
    an OME-Zarr image) is read through zarr (:attr:`direct` False, :attr:`why_zarr` says why); one
    in that layout with codecs the fast path cannot decode is an error (module docstring).

    Parameters
    ----------
    path : path
        The array's directory (e.g. ``crops/<plate>.zarr/crops``).
    through_zarr : bool
        Read every chunk through zarr, whatever the layout (e.g. a crop array written with a
        codec this version cannot decode fast).

    Attributes
    ----------
    shape : tuple of int
        ``(n, C, S, S)``.
    chunk_len : int
        Rows per chunk (what :meth:`read_chunk` returns).
    why_zarr : str or None
        Why chunks are read through zarr; None when they are read directly.

    Raises
    ------
    FileNotFoundError
        If ``path/zarr.json`` does not exist.
    CropCodecError
        If the array is in the crop layout but its codecs have no fast reader (and not ``through_zarr``).
    """

    def __init__(self, path: str | os.PathLike, *, through_zarr: bool = False) -> None:
        self.path = Path(path)
        meta_path = self.path / "zarr.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"crop array {self.path} does not exist (no zarr.json)")
        meta = json.loads(meta_path.read_text())
        self.shape: tuple[int, ...] = tuple(int(v) for v in meta["shape"])
        self._stored_dtype = np.dtype(meta["data_type"]).newbyteorder("<")  # zarr v3 'bytes' codec
        #: dtype of what :meth:`read_chunk` returns (native byte order)
        self.dtype = self._stored_dtype.newbyteorder("=")
        self.fill_value = meta.get("fill_value", 0) or 0
        self._indices: dict[int, np.ndarray] = {}
        self._arr = None
        self._decoder = None
        self._crc = None
        if through_zarr:
            self._layout, self.why_zarr = None, "asked for (through_zarr=True)"
        else:
            self._layout, self.why_zarr = _direct_layout(meta, self.shape, self.path)
        self.chunk_len = self._layout["chunk"] if self._layout is not None else int(self._zarr().chunks[0])

    def __getstate__(self) -> dict:  # cheap to send to DataLoader workers
        state = self.__dict__.copy()
        state.update(_arr=None, _decoder=None, _crc=None, _indices={})
        return state

    @property
    def direct(self) -> bool:
        """True when chunks are read without zarr."""
        return self._layout is not None

    def _zarr(self):
        if self._arr is None:
            import zarr

            self._arr = zarr.open_array(str(self.path), mode="r")
        return self._arr

    def _shard_file(self, shard: int) -> Path:
        sep = self._layout["sep"]
        key = sep.join(["c", str(shard)] + ["0"] * (len(self.shape) - 1))
        return self.path.joinpath(*key.split("/"))

    def _index(self, shard: int, fd: int) -> np.ndarray:
        index = self._indices.get(shard)
        if index is None:
            from numcodecs import CRC32C

            n_inner = self._layout["shard"] // self._layout["chunk"]
            size = n_inner * 16 + 4
            start = os.fstat(fd).st_size - size if self._layout["index_at_end"] else 0
            raw = os.pread(fd, size, start)
            if len(raw) != size:
                raise OSError(f"shard {self._shard_file(shard)} is truncated (index of {size} bytes unreadable)")
            try:
                body = CRC32C().decode(raw)
            except RuntimeError as err:
                raise OSError(f"shard {self._shard_file(shard)}: index checksum mismatch ({err})") from None
            index = np.frombuffer(body, dtype="<u8").reshape(n_inner, 2)
            self._indices[shard] = index
        return index

    def _check(self, raw: bytes, path: Path, local: int) -> bytes:
        """``raw`` without its trailing CRC32C, which must match (else OSError naming the chunk)."""
        if self._crc is None:
            from numcodecs import CRC32C

            self._crc = CRC32C()
        try:
            return self._crc.decode(raw)
        except RuntimeError as err:
            raise OSError(f"shard {path}: chunk {local} (rows from {local * self.chunk_len} of the shard) fails its "
                          f"CRC32C checksum ({err})") from None

    def _fill(self, n: int) -> np.ndarray:
        return np.full((n, *self.shape[1:]), self.fill_value, dtype=self.dtype)

    def read_chunk(self, c: int) -> np.ndarray:
        """Rows ``[c * chunk_len, min((c + 1) * chunk_len, n))`` as an ndarray (native byte order)."""
        L, n = self.chunk_len, self.shape[0]
        a, b = c * L, min((c + 1) * L, n)
        if not 0 <= a < n:
            raise IndexError(f"chunk {c} is outside {self.path} ({n} rows, {L} per chunk)")
        if self._layout is None:
            return np.asarray(self._zarr()[a:b])
        per_shard = self._layout["shard"] // L
        shard, local = divmod(c, per_shard)
        path = self._shard_file(shard)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return self._fill(b - a)  # a shard never written reads as the fill value, as in zarr
        try:
            offset, nbytes = self._index(shard, fd)[local]
            if offset == _MISSING and nbytes == _MISSING:
                return self._fill(b - a)
            raw = os.pread(fd, int(nbytes), int(offset))
        finally:
            os.close(fd)
        if len(raw) != int(nbytes):
            raise OSError(f"shard {path} is truncated: chunk {local} needs {int(nbytes)} bytes at {int(offset)}")
        if self._layout["crc32c"]:
            raw = self._check(raw, path, local)
        if self._layout["compressor"] is not None:
            if self._decoder is None:
                self._decoder = FAST_DECODERS[self._layout["compressor"]]()
            raw = self._decoder.decode(raw)
        block = np.frombuffer(raw, dtype=self._stored_dtype).reshape(L, *self.shape[1:])[: b - a]
        return block.astype(self.dtype, copy=False)
