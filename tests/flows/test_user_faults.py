"""The user-fault catalogue (docs/faults.md), each fault tried through the ``cmcl`` CLI.

Errors are checked in-process (they are raised before Prefect starts); signals, plate identity
and the served inbox run the real command in a process of its own.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.store.ledger import update_ledger
from pipeline.store.paths import Store

runner = CliRunner()


def _error_line(args: list[str], *needles: str) -> str:
    """Run a failing verb; its output must be exactly one line holding every needle."""
    result = runner.invoke(app, ["--quiet", *args], env={"COLUMNS": "80"}, prog_name="cmcl")
    assert result.exit_code != 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert "Traceback" not in result.output
    return lines[0]


def test_usage_and_setting_errors_are_one_line_before_any_work(tmp_path):
    store = tmp_path / "store"
    # mistyped verb, flag and value: click's usage errors, one line with where help is
    _error_line(["ingst"], "No such command 'ingst'", "cmcl --help")
    _error_line(["ingest", "x", "--crop-sise", "32"], "--crop-sise", "cmcl ingest --help")
    _error_line(["ingest", "x", "--crop-size", "big"], "--crop-size", "integer")
    # --set: the bad value, and an unknown key with the list of valid ones
    _error_line(["train", "--store", str(store), "--set", "epochs=abc"], "epochs", "integer", "'abc'")
    line = _error_line(["train", "--store", str(store), "--set", "nonsense=1"], "unknown key 'nonsense'", "valid keys")
    assert "epochs" in line and "batch_size" in line
    _error_line(["run", str(tmp_path), "--store", str(store), "--set", "image_source=video"], "image_source",
                "'crops', 'tiles'")
    # missing folders are named before Prefect starts
    _error_line(["ingest", str(tmp_path / "nope"), "--store", str(store)], str(tmp_path / "nope"), "does not exist")
    _error_line(["run", str(tmp_path / "inbox"), "--store", str(store)], "inbox", "does not exist")


def test_train_before_compounds_says_what_to_run(tmp_path):
    st = Store(tmp_path / "store")
    _error_line(["train", "--store", str(st.root)], "no ingested plate", "cmcl ingest")
    update_ledger(st, dict(Metadata_Plate="P1", Source=str(tmp_path), Fingerprint="x", Status="complete",
                           Layout="imagexpress", N_Fields=1, N_Quarantined=0, N_Cells=1, Error=None))
    _error_line(["train", "--store", str(st.root)], "no compounds yet", f"cmcl compounds --store {st.root}")
    _error_line(["train", "--store", str(st.root), "--ablation"], "cmcl compounds")


def test_empty_or_headerless_compound_file_is_named(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    _error_line(["compounds", str(empty), "--store", str(tmp_path / "s")], "empty.csv", "is empty", "header")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("name,structure\naspirin,CC(=O)Oc1ccccc1C(=O)O\n")
    _error_line(["compounds", str(wrong), "--store", str(tmp_path / "s")], "wrong.csv", "'smiles'", "structure")
    _error_line(["compounds", str(tmp_path / "nofile.smi"), "--store", str(tmp_path / "s")], "nofile.smi")
    assert not (tmp_path / "s").exists()  # nothing was started


# --- plates: formats, plate identity, Ctrl-C --------------------------------------------------
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _cmcl() -> list[str]:
    return [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); from flows.cli import app; app()",
            str(REPO)]


def _group_gone(pgid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_plate_folder_faults_are_one_line_before_prefect(tmp_path):
    from pipeline.synthetic import generate

    store = str(tmp_path / "store")
    # LoadData: a blank Metadata_Site, a malformed well
    ld = generate(tmp_path / "ld", layout="loaddata", plate_id="LD", n_wells=2, sites=1, size=64, seed=1)
    csv = ld / "load_data.csv"
    table = pd.read_csv(csv)
    table.loc[1, "Metadata_Site"] = None
    table.to_csv(csv, index=False)
    _error_line(["ingest", str(ld), "--store", store], "load_data.csv row 3", "Metadata_Site is blank")
    table.loc[1, "Metadata_Site"] = 1
    table.loc[0, "Metadata_Well"] = "Q7x"
    table.to_csv(csv, index=False)
    _error_line(["ingest", str(ld), "--store", store], "load_data.csv row 2", "'Q7x'", "not a well name")
    # a plate map well outside any plate format
    ix = generate(tmp_path / "ix", plate_id="IX", n_wells=2, sites=1, size=64, seed=1)
    with open(ix / "platemap.csv", "a") as fh:
        fh.write("Z99,X1,CCO,10.0,trt\n")
    _error_line(["ingest", str(ix), "--store", store], "platemap.csv row 4", "'Z99'", "outside")
    # two file-name layouts in one folder
    (ix / "platemap.csv").unlink()
    ph = generate(tmp_path / "ph", layout="phenix", plate_id="PH", n_wells=1, sites=1, size=64, seed=1)
    for f in [f for f in ph.rglob("r0*.tif*") if "ground_truth" not in str(f)]:
        shutil.copy(f, ix / f.name)
    _error_line(["ingest", str(ix), "--store", store], "mixes file-name layouts", "--layout")
    assert not Path(store, "tables").exists()


def test_ctrl_c_mid_ingest_of_a_TIF_plate_resumes_and_a_second_folder_cannot_take_its_id(tmp_path, prefect_api):
    from pipeline.synthetic import generate

    plate = generate(tmp_path / "a", plate_id="UP", n_wells=4, sites=2, size=128, seed=1)
    for f in plate.glob("*.tif"):  # MetaXpress writes upper-case extensions
        f.rename(f.with_suffix(".TIF"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    for attempt in range(3):  # a loaded machine can let the small plate finish before Ctrl-C lands: again
        store = tmp_path / f"store{attempt}"
        args = ["--quiet", "ingest", str(plate), "--store", str(store), "--crop-size", "24"]
        proc = subprocess.Popen([*_cmcl(), *args], env=env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        staged = store / ".staging" / "UP" / "plate.ome.zarr"
        deadline = time.monotonic() + 300
        while not staged.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the ingest finished before it could be interrupted"
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, _ = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 10, out
        assert proc.returncode == 130 and "rerun the same command" in out, out
        assert _group_gone(proc.pid), subprocess.run(["ps", "-o", "pid,args", "-g", str(proc.pid)],
                                                     capture_output=True, text=True).stdout
        if not Store(store).table_path("ledger").is_file():  # interrupted before the plate was published
            break
    assert not Store(store).table_path("ledger").is_file(), "every Ctrl-C landed after the plate was published"
    # the rerun completes the .TIF plate, once; the store verifies clean. (The interrupted run
    # was in Prefect's ephemeral mode, its temporary API among what Ctrl-C had to stop; the rerun
    # uses the session's API and skips starting another.)
    rerun = subprocess.run([*_cmcl(), *args], env={**env, "PREFECT_API_URL": prefect_api}, capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0 and "complete" in rerun.stdout, rerun.stdout + rerun.stderr
    st = Store(store)
    led = st.read("ledger")
    assert list(led["Metadata_Plate"]) == ["UP"] and led["N_Fields"].iloc[0] == 8
    cells = st.read("cells")
    assert len(cells) == led["N_Cells"].iloc[0] > 0 and not cells.duplicated().any()
    ok = runner.invoke(app, ["verify", "--store", str(store)])
    assert ok.exit_code == 0 and "OK" in ok.output, ok.output
    # a re-imaged plate with the same barcode, in another folder: refused, the first plate intact
    other = generate(tmp_path / "b", plate_id="UP", n_wells=2, sites=1, size=64, seed=2)
    line = _error_line(["ingest", str(other), "--store", str(store)], str(other), str(plate), "--replace",
                       "--plate-id")
    assert "refused" in line
    assert st.read("ledger")["Source"].tolist() == [str(plate)] and len(st.read("cells")) == len(cells)
    # the user's way out: the same folder under an ID of its own is accepted up front
    from pipeline.ingest import IngestSettings, check_plate_source, plan_plate

    check_plate_source(plan_plate(other, st, IngestSettings(), plate_id="UP-2"), st)


def test_compound_libraries_accumulate_and_blank_treatment_wells_fail(tmp_path):
    from pipeline.store.schema import write_table

    st = Store(tmp_path / "store")
    # a plate map with six treatment wells, one without SMILES
    pm = pd.DataFrame({"Metadata_Plate": "PM", "Metadata_Well": ["A01", "A02", "A03", "A04", "A05", "A06", "A07"],
                       "Metadata_CompoundID": ["c1", "c2", "c3", "c4", "c5", "c6", None],
                       "Metadata_SMILES": ["CCO", "CCN", "CCC", "c1ccccc1", "CC(=O)O", None, None],
                       "Metadata_Concentration": 1.0,
                       "Metadata_ControlType": ["trt"] * 6 + ["negcon"], "Metadata_HasImages": True})
    write_table(pm, "platemap", st.table_path("platemap", plate="PM"))
    good = tmp_path / "good.csv"
    good.write_text("smiles,id\nCCCCO,g1\nCCCCN,g2\n")
    x = tmp_path / "x.smi"
    x.write_text("c1ccncc1 x1\nC1CCCCC1 x2\nnot_a_smiles x3\n")

    def inputs(*args):
        out = runner.invoke(app, ["--quiet", "compounds", *args, "--store", str(st.root), "--id-col", "id"],
                            catch_exceptions=False)
        assert out.exit_code == 0, out.output
        return st.read("compound_inputs")

    first = inputs(str(good))
    trt = first[first["Metadata_Source"] == "platemap:PM"]
    assert len(trt) == 6  # six treatment wells, six records
    blank = trt[trt["Metadata_CompoundID"] == "c6"].iloc[0]
    assert blank["Status"] == "failed" and "without SMILES" in blank["Error"] and "A06" in blank["Error"]
    second = inputs(str(x))  # another library: the first is kept
    assert set(second["Metadata_Source"]) == {"good.csv", "x.smi", "platemap:PM"}
    assert len(second) == 6 + 2 + 3
    assert (second.loc[second["Metadata_Source"] == "good.csv", "Status"] == "ok").all()
    good.write_text("smiles,id\nCCCCCl,g3\n")  # a changed file replaces its own records only
    third = inputs(str(good))
    assert sorted(third.loc[third["Metadata_Source"] == "good.csv", "Metadata_CompoundID"]) == ["g3"]
    assert (third["Metadata_Source"] == "x.smi").sum() == 3
    assert st.read("compounds")["Metadata_InChIKey"].is_unique
    fresh = inputs(str(x), "--fresh")  # starting over is explicit
    assert set(fresh["Metadata_Source"]) == {"x.smi", "platemap:PM"}


# --- a served inbox ---------------------------------------------------------------------------
@pytest.mark.slow
def test_served_inbox_survives_a_bad_folder_and_a_duplicate_id_and_sigterm_stops_the_server(tmp_path):
    """``cmcl server`` + ``cmcl serve``: the good plate lands and reaches the compound stage; an
    all-bad folder and a second folder with the good plate's ID are reported once and never
    retried while unchanged; SIGTERM on ``cmcl server`` takes its ``prefect server start`` down.
    ``cmcl serve`` is given no PREFECT_API_URL: it finds the server by the record ``cmcl server``
    keeps in PREFECT_HOME, which goes with it."""
    import psutil

    from flows.serve import free_port, stop_process
    from pipeline.synthetic import generate
    from tests.flows.test_serve import _completed_ticks, _wait

    inbox, store = tmp_path / "inbox", Store(tmp_path / "store")
    inbox.mkdir()
    generate(tmp_path / "s1", plate_id="SG", n_wells=4, sites=1, size=96, seed=3).rename(inbox / "A-good")
    generate(tmp_path / "s2", plate_id="SG", n_wells=2, sites=1, size=64, seed=4).rename(inbox / "C-dup")
    bad = inbox / "B-bad"  # nothing in it is a usable image
    bad.mkdir()
    for i in range(5):
        (bad / f"scan_{i:04d}.tif").write_bytes(b"not a tiff")
    home, port = tmp_path / "prefect-home", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(home), CMCL_PROGRESS="0", PREFECT_LOGGING_LEVEL="INFO", PYTHONPATH=str(REPO),
               PREFECT_RUNNER_POLL_FREQUENCY="2")
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    with open(server_log, "wb") as out:
        server = subprocess.Popen([*_cmcl(), "server", "--port", str(port), "--home", str(home)], cwd=REPO, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    serve = None
    logs = [serve_log, server_log]
    try:
        _wait("cmcl server ready", lambda: "ready" in server_log.read_text(), 180, logs)
        prefect_server = psutil.Process(server.pid).children(recursive=True)
        assert prefect_server
        api = f"http://127.0.0.1:{port}/api"
        record = json.loads((home / "cmcl-server.json").read_text())
        assert record["api_url"] == api and record["pid"] in {p.pid for p in prefect_server}, record
        with open(serve_log, "wb") as out:
            serve = subprocess.Popen([*_cmcl(), "serve", str(inbox), "--store", str(store.root), "--interval", "5",
                                      "--settle-seconds", "0", "--crop-size", "24"], cwd=REPO,
                                     env={**env, "CMCL_REUSE_SERVER": "1"}, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

        def compounds_of_good_plate():
            if not store.table_path("compound_inputs").is_file():
                return None
            return (store.read("compound_inputs")["Metadata_Source"] == "platemap:SG").any()

        _wait("the good plate's compounds", compounds_of_good_plate, 300, logs)
        refused = store.path("serve_refused")
        _wait("both bad folders recorded", lambda: refused.is_file() and len(json.loads(refused.read_text())) == 2,
              60, logs)
        led = store.read("ledger")
        assert led["Source"].tolist() == [str(inbox / "A-good")] and led["Status"].tolist() == ["complete"]
        errors = json.loads(refused.read_text())
        assert "has the ID of the plate already ingested" in errors[str(inbox / "C-dup")]["error"]
        assert "no images matched" in errors[str(inbox / "B-bad")]["error"]
        n = _wait("the first tick completed", lambda: len(_completed_ticks(api)), 120, logs)
        _wait("a later tick", lambda: len(_completed_ticks(api)) >= n + 1, 120, logs)
        assert store.read("ledger").equals(led)  # nothing re-ingested, no back and forth
        text = serve_log.read_text()
        assert text.count("plate folder C-dup refused") == 1 and text.count("plate folder B-bad refused") == 1
        assert f"Prefect API: the running `cmcl server` at {api}" in text
    finally:
        if serve is not None:
            stop_process(serve, timeout=20)
        t0 = time.monotonic()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        finally:
            if server.poll() is None:
                stop_process(server, timeout=5)
    assert time.monotonic() - t0 < 15
    assert not (home / "cmcl-server.json").exists()  # a stopped server is not offered to later verbs
    gone = psutil.wait_procs(prefect_server, timeout=10)[1]
    assert not [p for p in gone if p.status() != psutil.STATUS_ZOMBIE], gone
