"""The user-fault catalogue (docs/faults.md), each fault tried through the ``cmcl`` CLI.

Errors are checked in-process (they are raised before Prefect starts); signals, plate identity
and the served inbox run the real command in a process of its own.
"""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.ledger import update_ledger
from pipeline.store import Store

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
