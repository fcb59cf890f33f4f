"""Full ingestion of every layout with injected faults, and recovery from a SIGKILL mid-plate."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from pipeline.ingest.run import IngestSettings, ingest_plate
from pipeline.store.omezarr import open_plate, read_field
from pipeline.plates.discovery import discover_plate
from pipeline.store.paths import CHANNELS, Store
from pipeline.synthetic import generate

REPO = Path(__file__).resolve().parents[3]
SETTINGS = IngestSettings(crop_size=24)
EXPECTED_REASON = {"truncated": "unreadable", "zero_bytes": "unreadable", "missing_channel": "missing channel",
                   "duplicate_site": "duplicate", "wrong_dtype": "dtype", "wrong_shape": "shape"}


@pytest.mark.parametrize("layout", ["imagexpress", "phenix", "loaddata"])
def test_layout_with_faults_ingests_every_good_field_exactly(tmp_path, layout):
    plate_dir = generate(tmp_path / "in", layout=layout, plate_id=f"L{layout[:3]}", n_wells=8, sites=2, size=96,
                         seed=5, faults=True)
    store = Store(tmp_path / "store")
    result = ingest_plate(plate_dir, store, SETTINGS, processes=1)
    assert result.status == "complete" and result.layout == layout
    faults = pd.read_csv(plate_dir / "ground_truth" / "faults.csv")
    quarantine = store.read("quarantine")
    bad = set(zip(faults["well"], faults["site"]))
    assert set(zip(quarantine["Metadata_Well"], quarantine["Metadata_Site"])) == bad
    for fault in faults.itertuples():
        q = quarantine[(quarantine.Metadata_Well == fault.well) & (quarantine.Metadata_Site == fault.site)]
        assert len(q) == 1, q  # one reason per fault, not one per channel
        assert EXPECTED_REASON[fault.fault] in q["Reason"].iloc[0] and q["Metadata_Channel"].iloc[0] == fault.channel

    fields = store.read("fields")
    assert len(fields) == 8 * 2 - len(bad) == result.n_fields
    listing = discover_plate(plate_dir).images
    plate = open_plate(store.plate_zarr(result.plate))
    for rec in fields.itertuples():
        image = read_field(plate, rec.Metadata_FieldPath)
        files = listing[(listing.Metadata_Well == rec.Metadata_Well) & (listing.Metadata_Site == rec.Metadata_Site)]
        for c, name in enumerate(CHANNELS):
            np.testing.assert_array_equal(image[c], tifffile.imread(plate_dir / files[files.Metadata_Channel == name]["File"].iloc[0]))

    counts = {n: len(store.read(n)) for n in ("cells", "fields", "quarantine", "platemap", "ledger")}
    again = ingest_plate(plate_dir, store, SETTINGS, processes=1)
    assert again.status == "skipped"
    assert {n: len(store.read(n)) for n in counts} == counts


def _complete_fields(plate_zarr: Path) -> dict[str, int]:
    """{field path: mtime_ns of its zarr.json} for fields whose metadata is complete."""
    out = {}
    for meta in plate_zarr.glob("*/*/*/zarr.json"):
        try:
            if "multiscales" in json.loads(meta.read_text()).get("attributes", {}).get("ome", {}):
                out[str(meta.parent.relative_to(plate_zarr))] = meta.stat().st_mtime_ns
        except (OSError, ValueError):
            pass  # being written right now
    return out


def test_sigkill_mid_plate_resumes_to_the_clean_result(small_plate, tmp_path):
    settings = IngestSettings(crop_size=32)
    broken = Store(tmp_path / "broken")
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "from pipeline.ingest.run import IngestSettings, ingest_plate; from pipeline.store.paths import Store;"
            "ingest_plate(sys.argv[2], Store(sys.argv[3]), IngestSettings(crop_size=32), processes=1)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(REPO), str(small_plate), str(broken.root)])
    staged = broken.root / ".staging" / "T1" / "plate.ome.zarr"
    deadline = time.monotonic() + 120
    try:
        while len(_complete_fields(staged)) < 4:
            assert proc.poll() is None, "the ingest finished before it could be killed"
            assert time.monotonic() < deadline, "no field was staged in time"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _complete_fields(staged)
    assert 4 <= len(before) < 24
    assert not broken.plate_zarr("T1").exists() and broken.read("ledger").empty

    assert ingest_plate(small_plate, broken, settings, processes=1).status == "complete"
    after = _complete_fields(broken.plate_zarr("T1"))
    assert len(after) == 24
    assert {p: after[p] for p in before} == before  # staged fields were kept, not rewritten
    assert not (broken.root / ".staging" / "T1").exists()

    clean = Store(tmp_path / "clean")
    ingest_plate(small_plate, clean, settings, processes=1)
    for name in ("cells", "fields", "platemap", "quarantine"):
        pd.testing.assert_frame_equal(clean.read(name), broken.read(name))
    a = zarr.open_group(str(clean.crops_zarr("T1")), mode="r")["crops"][:]
    b = zarr.open_group(str(broken.crops_zarr("T1")), mode="r")["crops"][:]
    np.testing.assert_array_equal(a, b)
