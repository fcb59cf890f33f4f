"""The generator's output, locked: the same seed writes the same plates after a refactor.

The hashes below were produced by the generator before its long functions were split into
named steps (issue #26); a change to them means the generator's output changed. Pixels and
label images are hashed decoded (array bytes, dtype, shape), so the lock does not depend on the
TIFF, zip or Parquet writer's version; text files (CSV, HTD, XML) are hashed as written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from pipeline.synthetic import design_plates, write_plate
from pipeline.synthetic.store import make_synthetic_store


def _array_digest(arr: np.ndarray) -> str:
    arr = np.ascontiguousarray(arr)
    return hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode() + arr.tobytes()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    """Decoded content of images and label archives, raw bytes of everything else (and of files
    the generator corrupts on purpose, which no reader decodes)."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            return _array_digest(tifffile.imread(path))
        if suffix == ".npz":
            with np.load(path) as z:
                return "+".join(f"{k}:{_array_digest(z[k])}" for k in sorted(z.files))
        if suffix == ".npy":
            return _array_digest(np.load(path))
    except Exception:  # noqa: BLE001 - a deliberately broken file: its bytes are the content
        pass
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def folder_digest(root: Path) -> str:
    """One hash over every file under ``root``: relative name and content digest."""
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(root).as_posix()}\0{_file_digest(p)}\n".encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def library() -> pd.DataFrame:
    from pipeline.chem.library import load_compound_library

    return load_compound_library()


PLATE_GOLDEN = {
    "imagexpress": "6154b581cd575f5a66621d0679f2e160df4731d666d02ebe494fc5c5b73ef3e0",
    "phenix": "328733e6e4e006ad9c1b9df9f2516fee382b27e937865a28f6808eb4e0156098",
    "loaddata": "098c12181e9a890b636c016971ba07e4811db1917d76d52cd28a66c8636c587b",
}
DESIGN_GOLDEN = "288c99b2b0d4ce87641ba590e90f2f0e358dfcee7bae43242c0d4aefbe89c2a3"
STORE_GOLDEN = "95021521a16107d8a82f7737ca30b885d5af15ca6fe863020ea6bbfe2e14235e"


def _small_map(library: pd.DataFrame) -> pd.DataFrame:
    maps = design_plates(library, n_plates=2, plate_format=96, n_compounds=40, seed=3)
    return maps[1].iloc[:8].reset_index(drop=True)


@pytest.mark.parametrize("layout", ["imagexpress", "phenix", "loaddata"])
def test_write_plate_output_is_locked(tmp_path, library, layout):
    plate = write_plate(tmp_path, _small_map(library), plate_id="LOCK-1", layout=layout, sites=2, size=48,
                        seed=5, faults=True, defocus_rate=0.3, bleed_through=0.02)
    assert folder_digest(plate) == PLATE_GOLDEN[layout]


def test_design_plates_output_is_locked(library):
    maps = design_plates(library, n_plates=4, plate_format=96, replicates=2, seed=7)
    h = hashlib.sha256()
    for m in maps:
        h.update(m.to_csv(index=False).encode())
    assert h.hexdigest() == DESIGN_GOLDEN


def test_make_synthetic_store_output_is_locked(tmp_path):
    import zarr

    store = make_synthetic_store(tmp_path / "store", n_compounds=12, n_plates=2, n_dmso=2, cells_per_well=4,
                                 crop_size=16, tiles=True, seed=4)
    h = hashlib.sha256()
    for p in sorted(store.root.rglob("*.parquet")):
        table = pd.read_parquet(p)
        h.update(f"{p.relative_to(store.root).as_posix()}\0{list(table.columns)}\0".encode())
        h.update(table.astype(str).to_csv(index=False).encode())
    for plate in ("SYN01", "SYN02"):
        group = zarr.open_group(str(store.crops_zarr(plate)), mode="r")
        for name in ("crops", "tiles"):
            h.update(_array_digest(np.asarray(group[name][:])).encode())
    assert h.hexdigest() == STORE_GOLDEN
