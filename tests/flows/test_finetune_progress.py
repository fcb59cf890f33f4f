"""`cmcl finetune` progress: lines with an ETA and the validation score without -q, none with -q;
the protocol option is recorded in the results."""

import io
import json

from typer.testing import CliRunner

from cmcl_model.finetune.labelled import load_shipped
from flows.cli import app
from flows.finetune_progress import finetune_progress, format_eta


def test_progress_lines_throttle_and_eta(monkeypatch):
    monkeypatch.setenv("CMCL_PROGRESS", "1")
    stream = io.StringIO()
    cb = finetune_progress("finetune x", stream=stream, every_s=3600)
    for done in range(1, 5):
        cb(done, 4, f"gin_random seed 0 epoch {done}/4 val 0.700")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # the first update and the last; the middle ones are throttled
    assert lines[0].startswith("finetune x: 1/4 epochs, ETA ") and lines[-1].startswith("finetune x: 4/4 epochs, ETA 0 s")
    assert "val 0.700" in lines[-1]
    monkeypatch.setenv("CMCL_PROGRESS", "0")
    assert finetune_progress("finetune x", stream=stream) is None
    assert (format_eta(5), format_eta(125), format_eta(3725)) == ("5 s", "2 min 05 s", "1 h 02 min")


def test_finetune_cli_progress_unless_quiet(tmp_path, monkeypatch):
    frame, _ = load_shipped("bbbp")
    path = tmp_path / "bbbp.csv"
    frame.iloc[::25].to_csv(path, index=False)  # 82 molecules
    args = ["finetune", "--csv", str(path), "--task", "p_np", "--seeds", "1", "--epochs", "2", "--layers", "2",
            "--hidden", "16", "--protocol", "hu2020", "--out", str(tmp_path / "res.json")]
    monkeypatch.setenv("CMCL_PROGRESS", "1")  # CliRunner is not a terminal: plain lines
    shown = CliRunner().invoke(app, args, catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    lines = [ln for ln in shown.output.splitlines() if ln.startswith("finetune bbbp.csv: ")]
    assert lines and "epochs, ETA" in lines[0] and "gin_random seed 0 epoch" in lines[0] and " val " in lines[0]
    assert lines[-1].startswith("finetune bbbp.csv: 2/2 epochs")
    doc = json.loads((tmp_path / "res.json").read_text())
    assert doc["protocol"] == "hu2020" and doc["standardization"]["n_changed"] == 0
    quiet = CliRunner().invoke(app, ["--quiet", *args], catch_exceptions=False)
    assert quiet.exit_code == 0, quiet.output
    assert "epochs, ETA" not in quiet.output and "gin_random" in quiet.output
