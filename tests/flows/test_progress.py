"""flows/progress.py: one progress display with an ETA, as lines without a terminal, off under -q."""

import pytest

import flows.progress as progress
from flows.progress import StepProgress, count_callback, progress_mode, stage_callback, step_progress


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    return now


def test_lines_with_eta_from_the_pace_after_the_first_step(clock, capsys):
    bar = StepProgress("profiles", 5, mode="lines")
    bar.advance(label="P1")  # the first step may hold start-up costs: no ETA yet
    clock[0] += 10
    bar.advance(label="P2")  # 1 step in 10 s since the first update, 3 left
    clock[0] += 2
    bar.advance(label="P3")  # within LINE_INTERVAL_S of the last line: not printed
    clock[0] += 10
    bar.update(5, label="last")
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["profiles: 1/5 (P1)", "profiles: 2/5 (P2), ETA 30 s", "profiles: 5/5 (last), done"]


def test_callbacks_share_the_display_and_quiet_turns_them_off(clock, capsys, monkeypatch):
    monkeypatch.setenv("CMCL_PROGRESS", "1")
    assert progress_mode() in ("lines", "bar")
    if progress_mode() == "bar":
        pytest.skip("stderr is a terminal")
    stage = stage_callback("T1: segment")
    stage("segment", 0, 2)  # pipeline.ingest.run counts from 0
    clock[0] += 60
    stage("segment", 1, 2)
    train = count_callback("train")
    train(1, 400, "epoch 1/2 loss 1.000")
    clock[0] += 200
    train(2, 400, "epoch 1/2 loss 0.900")
    err = capsys.readouterr().err
    assert "T1: segment: 1/2 (segment)" in err and "T1: segment: 2/2 (segment), done" in err
    assert "train: 2/400 (epoch 1/2 loss 0.900), ETA 22 h 06 min" in err  # 398 steps x 200 s
    monkeypatch.setenv("CMCL_PROGRESS", "0")  # what -q sets
    assert stage_callback("x") is None and count_callback("x") is None
    step_progress("quiet", 3)("a")
    StepProgress("quiet", 1).advance()
    assert capsys.readouterr().err == ""
