"""ingest_plate given its preflight's plan does not run the preflight again, and writes the same."""

from __future__ import annotations

import pandas as pd

import pipeline.ingest.run as run_mod
from pipeline.ingest import IngestSettings, ingest_plate, preflight
from pipeline.store.paths import Store


def test_a_passed_plan_is_not_planned_again_and_gives_the_same_store(tmp_path, monkeypatch):
    from pipeline.synthetic import generate

    plate = generate(tmp_path / "in", plate_id="PP", n_wells=2, sites=1, size=64, seed=3)
    settings = IngestSettings(crop_size=16)
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    assert ingest_plate(plate, a, settings, processes=1).status == "complete"
    plan = preflight(plate, b, settings)

    def no_preflight(*args, **kwargs):
        raise AssertionError("the preflight ran again")

    monkeypatch.setattr(run_mod, "preflight", no_preflight)
    assert ingest_plate(plate, b, settings, processes=1, plan=plan).status == "complete"
    for table in ("cells", "fields", "quarantine", "platemap"):
        pd.testing.assert_frame_equal(a.read(table), b.read(table))
    assert b.lock_path("PP").parent == b.root / "locks" and not b.staging_dir("PP").exists()
