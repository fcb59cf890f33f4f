"""A served, scheduled ingest against a real Prefect server: a dropped plate lands exactly once."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from pipeline.store.paths import Store

REPO = Path(__file__).resolve().parents[2]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _completed_ticks(api_url: str) -> list[dict]:
    """Completed ``ingest-inbox`` flow runs, from the server's REST API."""
    body = json.dumps({"flows": {"name": {"any_": ["ingest-inbox"]}},
                       "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}, "limit": 200}).encode()
    req = urllib.request.Request(f"{api_url}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as r:
        return json.loads(r.read())


def _ledger_row(store: Store, plate: str) -> pd.DataFrame:
    led = store.read("ledger")
    return led[led["Metadata_Plate"] == plate]


def _wait(what: str, check, timeout: float, logs: list[Path]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
    pytest.fail(f"{what} not seen within {timeout:g} s\n{tails}")


@pytest.mark.slow
def test_served_schedule_ingests_a_dropped_plate_once(tmp_path):
    from flows.serve import free_port, start_server, stop_process, wait_healthy
    from pipeline.synthetic import generate

    inbox, store_dir, home = tmp_path / "inbox", tmp_path / "store", tmp_path / "prefect-home"
    inbox.mkdir()
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    port = free_port()
    server = start_server(port=port, home=home, log=server_log)
    serve = None
    try:
        wait_healthy(server.api_url, timeout=120, process=server.process)
        env = {**os.environ, "PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(home),
               "PREFECT_RUNNER_POLL_FREQUENCY": "2", "PREFECT_LOGGING_LEVEL": "INFO", "CMCL_PROGRESS": "0"}
        code = ("from flows.serve import serve_ingest; "
                f"serve_ingest({str(inbox)!r}, {str(store_dir)!r}, interval=5, settle_seconds=1, "
                "settings={'crop_size': 32})")
        with open(serve_log, "ab") as out:
            serve = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        # drop a plate: written elsewhere, then moved in at once
        staged = generate(tmp_path / "staging", plate_id="SV1", n_wells=6, sites=1, size=96, seed=7)
        staged.rename(inbox / staged.name)
        store, logs = Store(store_dir), [serve_log, server_log]

        def complete():
            if not store.table_path("ledger").is_file():
                return None
            row = _ledger_row(store, "SV1")
            return row.iloc[0].to_dict() if len(row) and row.iloc[0]["Status"] == "complete" else None

        entry = _wait("plate SV1 complete in the ledger", complete, 150, logs)
        landed = datetime.now().astimezone()
        # ingested exactly once: one ledger row, cells table rows == the ledger's N_Cells, no duplicates
        assert len(_ledger_row(store, "SV1")) == 1
        cells = pd.read_parquet(store.table_path("cells", plate="SV1"))
        assert len(cells) == entry["N_Cells"] > 0
        assert not cells.duplicated().any()
        # another tick runs to completion on the unchanged inbox and ingests nothing
        _wait("a completed tick started after the plate landed",
              lambda: [r for r in _completed_ticks(server.api_url)
                       if r["start_time"] and datetime.fromisoformat(r["start_time"]) > landed], 90, logs)
        after = _ledger_row(store, "SV1")
        assert len(after) == 1 and after.iloc[0]["UpdatedAt"] == entry["UpdatedAt"]
        assert len(pd.read_parquet(store.table_path("cells", plate="SV1"))) == entry["N_Cells"]
    finally:
        pids = [p.pid for p in (serve, server.process) if p is not None]
        if serve is not None:
            stop_process(serve, timeout=10)
        server.stop(timeout=10)
    assert serve.poll() is not None and server.process.poll() is not None
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not _port_open(port)


def test_a_tick_ingests_once_and_retrains_after_enough_plates(tmp_path, monkeypatch):
    import flows.serve as serve
    from pipeline.synthetic import generate

    trained = []

    def fake_train(store, *, preset, overrides):  # training itself is tested elsewhere
        run = f"run{len(trained)}"
        Store(Path(store)).run_dir(run).mkdir(parents=True)
        trained.append((preset, overrides))
        return run

    monkeypatch.setattr(serve, "train_flow", fake_train)
    monkeypatch.setattr(serve, "evaluate_flow", lambda store, run, **kw: {"run": run})
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    generate(inbox, plate_id="TK1", n_wells=6, sites=1, size=96, seed=1)
    kw = dict(settings={"crop_size": 32}, retrain_after=2, preset="quick", settle_seconds=0)
    first = serve.ingest_inbox_flow(str(inbox), str(store), **kw)
    assert [r["status"] for r in first["plates"]] == ["complete"]
    assert first["compounds"] is not None and first["plates_since_training"] == 1 and "run" not in first
    generate(inbox, plate_id="TK2", n_wells=6, sites=1, size=96, seed=2)
    second = serve.ingest_inbox_flow(str(inbox), str(store), **kw)
    assert [r["status"] for r in second["plates"]] == ["skipped", "complete"]
    assert second["run"] == "run0" and trained == [("quick", None)] and second["plates_since_training"] == 0
    manifest = json.loads((Store(store).run_dir("run0") / serve.TRAINED_PLATES).read_text())
    assert sorted(manifest) == ["TK1", "TK2"]
    third = serve.ingest_inbox_flow(str(inbox), str(store), **kw)
    assert [r["status"] for r in third["plates"]] == ["skipped", "skipped"]
    assert third["compounds"] is None and "run" not in third and len(trained) == 1


def test_folders_still_being_written_wait(tmp_path):
    from flows.serve import settled_plate_folders

    (tmp_path / "P1").mkdir()
    (tmp_path / "P1" / "a.tif").write_bytes(b"x")
    assert settled_plate_folders(tmp_path, settle_seconds=60) == ([], [tmp_path / "P1"])
    os.utime(tmp_path / "P1" / "a.tif", (time.time() - 120, time.time() - 120))
    assert settled_plate_folders(tmp_path, settle_seconds=60) == ([tmp_path / "P1"], [])


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one schedule"),
    ({"interval": 5, "cron": "* * * * *"}, "exactly one schedule"),
    ({"interval": 0}, "interval must be positive"),
    ({"interval": 5, "retrain_after": 0}, "retrain_after must be at least 1"),
    ({"interval": 5, "preset": "huge"}, "preset 'huge' is not one of"),
])
def test_serve_ingest_rejects_bad_options_in_one_line(tmp_path, kwargs, message):
    from flows.serve import serve_ingest

    with pytest.raises(ValueError, match=message) as err:
        serve_ingest(tmp_path, tmp_path / "store", **kwargs)
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        serve_ingest(tmp_path / "nope", tmp_path / "store", interval=5)


def test_wait_healthy_gives_up_in_one_line():
    from flows.serve import free_port, wait_healthy

    with pytest.raises(RuntimeError, match=r"did not answer /health within 1 s"):
        wait_healthy(f"http://127.0.0.1:{free_port()}/api", timeout=1)


def test_stop_process_kills_a_process_group_that_ignores_sigterm(tmp_path):
    from flows.serve import stop_process

    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)'], start_new_session=True); "
            "time.sleep(300)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    time.sleep(1.5)
    import psutil

    children = psutil.Process(proc.pid).children(recursive=True)
    assert children
    stop_process(proc, timeout=1)
    assert proc.poll() is not None
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_a_tick_reports_a_plate_that_stored_nothing_and_goes_on(tmp_path):
    """Every field of one plate refused (its LoadData paths point outside its folder): the tick
    lists it under 'empty' with the one line, does not count it as landed, and ingests the other."""
    import shutil

    import flows.serve as serve
    from pipeline.synthetic import generate

    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    generate(inbox, plate_id="OK1", n_wells=2, sites=1, size=96, seed=1)
    bad = generate(inbox, layout="loaddata", plate_id="LD1", n_wells=2, sites=1, size=64, seed=2)
    table = pd.read_csv(bad / "load_data.csv")
    shutil.move(bad / "images", tmp_path / "elsewhere")
    for col in [c for c in table.columns if c.startswith("PathName_Orig")]:
        table[col] = [os.path.relpath(tmp_path / "elsewhere" / Path(p).relative_to("images"), bad) for p in table[col]]
    table.to_csv(bad / "load_data.csv", index=False)
    tick = serve.ingest_inbox_flow(str(inbox), str(store), settings={"crop_size": 16}, settle_seconds=0)
    assert sorted(r["status"] for r in tick["plates"]) == ["complete", "complete"]
    assert list(tick["empty"]) == ["LD1"] and "no field stored (10 path outside the plate folder)" in tick["empty"]["LD1"]
    assert tick["plates_since_training"] >= 1 and tick["compounds"] is not None
