"""Real use without surprises, through the CLI (issue 25): a plate without DMSO trains and is flagged,
compound IDs are kept, long verbs show progress (not under -q), library warnings stay hidden
unless --debug, and a store given as an argument works or gets a one-line hint."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from cmcl_model.data.pairs import treatment_crops
from pipeline.store.paths import Store

runner = CliRunner()
TRAIN = ["--preset", "quick", "--set", "epochs=2", "--set", "split_fractions=[0.5,0.25,0.25]"]


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _error(args: list[str], code: int = 1) -> str:
    result = runner.invoke(app, args)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == code and len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def _plate(inbox: Path, plate_id: str, compounds: pd.DataFrame, *, n_dmso: int, seed: int) -> Path:
    """Every compound in two wells, then ``n_dmso`` DMSO wells; 128 px fields."""
    from pipeline.synthetic import well_names, write_plate

    ids, smiles = list(compounds["Metadata_CompoundID"]) * 2, list(compounds["Metadata_SMILES"]) * 2
    n = len(ids)
    pm = pd.DataFrame({"Metadata_Well": well_names(96)[: n + n_dmso],
                       "Metadata_CompoundID": ids + [None] * n_dmso, "Metadata_SMILES": smiles + [None] * n_dmso,
                       "Metadata_Concentration": [1.0] * n + [float("nan")] * n_dmso,
                       "Metadata_ControlType": ["trt"] * n + ["negcon"] * n_dmso})
    return write_plate(inbox, pm, plate_id=plate_id, size=128, seed=seed, ground_truth=False)


@pytest.fixture(scope="module")
def no_dmso_run(tmp_path_factory, monkeypatch_module):
    """`cmcl run` (progress forced on, not quiet) on plate HID-A without any DMSO well beside HID-B with 4."""
    from pipeline.chem.library import load_compound_library

    tmp = tmp_path_factory.mktemp("nodmso")
    lib = load_compound_library().iloc[:10]
    _plate(tmp / "inbox", "HID-A", lib, n_dmso=0, seed=1)
    _plate(tmp / "inbox", "HID-B", lib, n_dmso=4, seed=2)
    monkeypatch_module.setenv("CMCL_PROGRESS", "1")  # progress lines without a terminal
    out = _ok(["run", str(tmp / "inbox"), "--store", str(tmp / "store"), "--crop-size", "16", *TRAIN])
    return Store(tmp / "store"), out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.mark.slow
def test_run_on_a_plate_without_dmso_trains_evaluates_and_flags_it(no_dmso_run):
    st, out = no_dmso_run
    assert "plate 'HID-A' has no negative-control well" in out and "plate 'HID-B' has no" not in out
    [run] = st.runs()
    assert (st.report_dir(run) / "metrics.json").is_file()
    wells = st.read("profiles_wells")
    flag = wells.groupby("Metadata_Plate")["Metadata_NormalizedTo"].unique()
    assert list(flag["HID-A"]) == ["all"] and list(flag["HID-B"]) == ["negcon"]
    from flows.inspect import profiles  # `cmcl inspect profiles` shows the flag per plate
    view = profiles(st.root)[1].set_index("plate")["normalized_to"]
    assert view["HID-A"] == "all" and view["HID-B"] == "negcon"
    html = (st.report_dir(run) / "report.html").read_text()
    assert "No negative control on plate(s) HID-A</b>" in html
    metrics = json.loads((st.report_dir(run) / "metrics.json").read_text())
    for rep in metrics["activity"].values():  # HID-B's compounds scored, HID-A's left out and named
        assert rep["plates_not_scored"] == ["HID-A"] and rep["n_compounds"] > 0
    assert st.read("activity")["Metadata_N_Wells"].max() == 2  # only HID-B's two wells per compound
    # one progress display per long verb, with an ETA, on stderr
    for what in ("HID-A: segment-and-tile: ", "profiles: ", "train: ", "evaluate: "):
        assert what in out, what
    assert "evaluate: 6/6 (report), done" in out and "train: 2/2 (epoch 2/2" in out
    assert "phenotypic activity: plate(s) HID-A not scored" in out


@pytest.mark.slow
def test_progress_is_hidden_by_quiet_and_negcon_is_a_setting(no_dmso_run, monkeypatch):
    st, _ = no_dmso_run
    monkeypatch.setenv("CMCL_PROGRESS", "1")
    out = _ok(["profile", "--store", str(st.root), "--null-size", "200"])
    assert "profiles: 1/1" in out and "0 plate(s) profiled" in out  # nothing changed: the last step only
    quiet = _ok(["-q", "profile", "--store", str(st.root), "--null-size", "200", "--negcon", "DMSO,NEGCON,vehicle,negative"])
    assert "0 plate(s) profiled" in quiet and "1/1" not in quiet  # the same labels (any case); no progress
    # other labels: nothing is a negative control now, both plates are normalized against all wells
    out = _ok(["-q", "profile", "--store", str(st.root), "--null-size", "200", "--negcon", "vehicle"])
    assert "2 plate(s) profiled" in out and "plate 'HID-B' has no negative-control well" in out
    assert set(st.read("profiles_wells")["Metadata_NormalizedTo"]) == {"all"}
    assert "negative controls: vehicle (kept by the store" in out
    # the store keeps them: a later run without --negcon redoes nothing, training sees no controls
    assert "0 plate(s) profiled" in _ok(["-q", "profile", "--store", str(st.root), "--null-size", "200"])
    assert len(treatment_crops(st)[1]) == 0
    _ok(["-q", "profile", "--store", str(st.root), "--null-size", "200", "--negcon", "negcon"])
    assert len(treatment_crops(st)[1]) > 0
    assert "--negcon" in _error(["-q", "profile", "--store", str(st.root), "--negcon", " , "])


def test_compounds_keep_the_ids_of_an_id_column(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("smiles,ID\nCCO,ETH-1\nc1ccccc1O,PHE-2\n")
    out = _ok(["-q", "compounds", str(one), "--store", str(tmp_path / "s")])
    assert "one.csv: IDs from column 'ID'" in out
    inputs = Store(tmp_path / "s").read("compound_inputs")
    assert sorted(inputs["Metadata_CompoundID"]) == ["ETH-1", "PHE-2"]
    bare = tmp_path / "bare.csv"
    bare.write_text("smiles\nCCN\n")
    out = _ok(["-q", "compounds", str(bare), "--store", str(tmp_path / "s")])
    assert "bare.csv: no ID column" in out and "--id-col" in out


def test_a_store_given_as_an_argument_works_or_gets_a_hint(ingested, tmp_path):
    store, _ = ingested
    root = str(store.root)
    assert f"store {root}: OK" in _ok(["verify", root])
    assert f"store {root}: OK" in _ok(["verify", root, "--store", root])
    summary = json.loads(_ok(["inspect", root, "--json"]))
    assert {r["what"]: r["count"] for r in summary}["plates (complete)"] == 1
    plates = json.loads(_ok(["inspect", root, "plates", "--json"]))
    assert [p["Metadata_Plate"] for p in plates] == ["T1"]
    empty = tmp_path / "notastore"
    empty.mkdir()
    for args in (["verify", str(empty)], ["inspect", str(empty)]):
        assert _error(args).endswith(f"did you mean --store {empty}?")
    assert "two stores given" in _error(["verify", root, "--store", str(empty)])
    # the same trap in the other verbs: one line naming --store
    assert f"did you mean --store {root}?" in _error(["train", root], code=2)
    assert f"did you mean --store {root}?" in _error(["compounds", root])
    assert f"--store {root}" in _error(["run", root])


def test_library_warnings_reach_the_user_only_with_debug(ingested, monkeypatch):
    import flows.inspect

    store, _ = ingested

    def noisy(root):
        warnings.warn("DataFrame is highly fragmented", pd.errors.PerformanceWarning, stacklevel=1)
        return "t", pd.DataFrame({"what": ["x"], "count": [1]})

    monkeypatch.setitem(flows.inspect.VIEWS, "summary", noisy)
    for args, shown in ((["inspect", "--store", str(store.root)], 0), (["--debug", "inspect", "--store", str(store.root)], 1)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            _ok(args)
        assert len([w for w in seen if "fragmented" in str(w.message)]) == shown, args


def test_prefect_plumbing_logs_reach_the_user_only_with_debug():
    """Prefect's queue services log "EventsWorker - Still processing items: N items remaining..."
    while they drain at exit on a busy machine: not the user's business unless --debug."""
    import logging

    import prefect._internal.concurrency.services as services

    from flows.cli.app import _OneLineLogs, _State

    drain = logging.LogRecord("EventsWorker", logging.WARNING, services.__file__, 231,
                              "Still processing items: 5 items remaining...", (), None)
    ours = logging.LogRecord("prefect.flow_runs", logging.WARNING, __file__, 1, "plate P1: 2 fields quarantined", (), None)
    debug = _State.debug
    try:
        _State.debug = False
        assert not _OneLineLogs().filter(drain) and _OneLineLogs().filter(ours)
        _State.debug = True
        assert _OneLineLogs().filter(drain)
    finally:
        _State.debug = debug


def test_a_run_without_checkpoints_is_not_a_run(tmp_path):
    """``cmcl export --run ID`` names the store's runs in one line when ID is not one of them; a
    run folder that training has not reached yet (no checkpoints folder) is not a run."""
    st = Store(tmp_path / "s")
    (st.run_dir("20260101-000000-aaaaaa") / "checkpoints").mkdir(parents=True)
    st.run_dir("20260102-000000-bbbbbb").mkdir(parents=True)
    assert st.has_run("20260101-000000-aaaaaa") and not st.has_run("20260102-000000-bbbbbb")
    line = _error(["export", str(tmp_path / "m.pt"), "--store", str(st.root), "--run", "20260102-000000-bbbbbb"])
    assert "run '20260102-000000-bbbbbb' not found" in line and "20260101-000000-aaaaaa" in line
