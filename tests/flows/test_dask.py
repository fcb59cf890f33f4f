"""Plates ingested in parallel on a local Dask cluster give exactly the store of a sequential run."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from pipeline.store.schema import table_names
from pipeline.store.paths import Store


@pytest.fixture(scope="module")
def tiny_inbox(tmp_path_factory) -> Path:
    """Three tiny plates (6 wells, 96 px) with plate maps, ImageXpress layout."""
    from pipeline.synthetic import generate

    inbox = tmp_path_factory.mktemp("dask_inbox")
    for i in range(3):
        generate(inbox, plate_id=f"DK{i}", n_wells=6, sites=1, size=96, seed=10 + i)
    return inbox


def _assert_same_store(a: Store, b: Store, plates: list[str]) -> None:
    for name in table_names():
        files_a = [p.relative_to(a.root) for p in a.table_files(name)]
        assert files_a == [p.relative_to(b.root) for p in b.table_files(name)], name
        if not files_a:
            continue
        x, y = a.read(name), b.read(name)
        if name == "ledger":
            x, y = (t.drop(columns=["UpdatedAt", "Source"]) for t in (x, y))
        pd.testing.assert_frame_equal(x, y, obj=name)
    for plate in plates:
        ga, gb = (zarr.open_group(s.crops_zarr(plate), mode="r") for s in (a, b))
        keys = sorted(ga.array_keys())
        assert keys and keys == sorted(gb.array_keys())
        for k in keys:
            np.testing.assert_array_equal(ga[k][...], gb[k][...], err_msg=f"{plate}/{k}")


def _summaries(results: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "worker_seconds", "source")} for r in results]


@pytest.mark.slow
def test_sequential_dask_and_served_ingestion_write_the_same_store_and_summaries(tiny_inbox, tmp_path):
    from flows.pipeline import run_flow
    from flows.serve import ingest_inbox_flow

    settings = {"crop_size": 32}
    seq = run_flow(str(tiny_inbox), str(tmp_path / "seq"), ingest_settings=settings, train=False)
    par = run_flow(str(tiny_inbox), str(tmp_path / "par"), ingest_settings=settings, train=False, workers=2)
    srv = ingest_inbox_flow(str(tiny_inbox), str(tmp_path / "srv"), settings=settings, settle_seconds=0)
    plates = [r["plate"] for r in seq["plates"]]
    assert plates == ["DK0", "DK1", "DK2"] == [r["plate"] for r in par["plates"]]
    assert all(r["status"] == "complete" and r["n_cells"] > 0 for r in par["plates"])
    assert _summaries(seq["plates"]) == _summaries(par["plates"]) == _summaries(srv["plates"])
    _assert_same_store(Store(tmp_path / "seq"), Store(tmp_path / "par"), plates)
    _assert_same_store(Store(tmp_path / "seq"), Store(tmp_path / "srv"), plates)
    # rerun: every plate is recognised as unchanged, with the same counts on every path
    again_par = run_flow(str(tiny_inbox), str(tmp_path / "par"), ingest_settings=settings, train=False, workers=2)
    again_seq = run_flow(str(tiny_inbox), str(tmp_path / "seq"), ingest_settings=settings, train=False)
    assert [r["status"] for r in again_par["plates"]] == ["skipped"] * 3
    assert _summaries(again_par["plates"]) == _summaries(again_seq["plates"])
    assert [r["n_cells"] for r in again_par["plates"]] == [r["n_cells"] for r in seq["plates"]]


def test_bad_worker_count_is_one_clear_error(tmp_path):
    from flows.parallel import dask_task_runner, ingest_plates

    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        ingest_plates([tmp_path], tmp_path / "store", workers=0)
    runner = dask_task_runner(workers=2)
    assert runner.cluster_kwargs["host"] == "127.0.0.1" and runner.cluster_kwargs["threads_per_worker"] == 1
