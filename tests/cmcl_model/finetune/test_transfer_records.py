"""The accumulating transfer benchmark: records replace per cell, survive a reload, skip finished
cells on a rerun, stop on the budget, and the Markdown is regenerated from the JSON."""

import json

import pytest

from benchmarks.finetune import main, plan_cells
from cmcl_model.finetune.records import (
    add_record,
    cell_key,
    finished_keys,
    leakage,
    load_records,
    render_markdown,
    save_records,
)


def _rec(method="gin_random", seed=0, test=0.6, dataset="bbbp"):
    return {"dataset": dataset, "method": method, "seed": seed, "epochs": 100, "protocol": "hu2020", "metric": "roc_auc",
            "test_last": test, "test_best_val": test + 0.01, "best_epoch": 40, "wall_s": 12.0, "commit": "abc",
            "command": f"python benchmarks/finetune.py --seeds {seed}"}


def test_records_replace_reload_and_render(tmp_path):
    doc = {"records": [], "encoders": {}}
    add_record(doc, _rec(seed=0, test=0.60))
    add_record(doc, _rec(seed=1, test=0.70))
    add_record(doc, _rec(seed=1, test=0.66))  # same cell: replaced, not duplicated
    assert len(doc["records"]) == 2 and {r["test_last"] for r in doc["records"]} == {0.60, 0.66}
    path = save_records(doc, tmp_path / "t.json")
    again = load_records(path)
    assert again == doc and finished_keys(again) == {("bbbp", "gin_random", 0, 100, "hu2020", "ogb", "fp32"),
                                                     ("bbbp", "gin_random", 1, 100, "hu2020", "ogb", "fp32")}
    md = render_markdown(again, datasets=["bbbp", "clintox"], methods=["gin_random"], protocol="hu2020", epochs=100,
                         seeds={"gin_random": 3}, descriptions={"gin_random": "random init"})
    best_val, last = md.split("## Test ROC-AUC % at the last epoch")
    # Hu et al. report each seed's test at its best-validation epoch: their row stands beside that table only
    assert "| Hu et al. 2020, no pre-training | hu2020 | 65.8 | 58.0 |" in best_val and "Hu et al." not in last
    assert "| gin_random | ogb | 64.0 ± 4.2 (2/3) | – |" in best_val  # 61 and 67
    assert "| gin_random | ogb | 63.0 ± 4.2 (2/3) | – |" in last  # 60 and 66: mean 63, sd 4.24, 2 of 3 seeds
    assert "gin_random on clintox" in md.split("## Missing cells")[1]
    with pytest.raises(ValueError, match="lacks"):
        add_record(doc, {"dataset": "bbbp"})
    (tmp_path / "bad.json").write_text(json.dumps({"records": [{"dataset": "x"}], "encoders": {}}))
    with pytest.raises(ValueError, match="bad.json: not a transfer results file"):
        load_records(tmp_path / "bad.json")


def test_leakage_counts_molecules_and_scaffolds():
    lk = leakage(["K1", "K2", "K3"], ["c1ccccc1", "c1ccccc1", ""], {"K2", "K9"}, {"c1ccccc1", "C1CC1"})
    assert lk == {"test_molecules": 3, "molecules_in_pretraining": 1, "test_scaffolds": 1, "scaffolds_in_pretraining": 1}


def test_cells_run_most_important_first():
    cells = plan_cells(["bbbp", "clintox", "bace", "sider"], ["gin_random", "morgan_lr", "gin_demo"], [0, 1])
    assert cells[:6] == [("bbbp", "gin_random", 0), ("bbbp", "gin_random", 1), ("clintox", "gin_random", 0),
                         ("clintox", "gin_random", 1), ("bace", "gin_random", 0), ("bace", "gin_random", 1)]
    assert cells[6:9] == [("bbbp", "morgan_lr", 0), ("clintox", "morgan_lr", 0), ("bace", "morgan_lr", 0)]
    assert cells[9][1] == "gin_demo" and cells[15] == ("sider", "gin_random", 0) and len(cells) == 4 * 5


def test_benchmark_accumulates_skips_and_stops_on_budget(tmp_path, capsys):
    out = tmp_path / "transfer.json"
    common = ["--datasets", "bace", "--methods", "morgan_lr", "--out", str(out), "--threads", "1"]
    assert main([*common, "--budget-minutes", "0"]) == 0
    assert "budget of 0.0 min spent" in capsys.readouterr().out and not out.exists()
    assert "morgan_lr on bace" in out.with_suffix(".md").read_text()
    assert main(common) == 0
    rec = load_records(out)["records"]
    assert len(rec) == 1 and rec[0]["protocol"] == "hu2020" and 0.5 < rec[0]["test_last"] <= 1.0
    assert rec[0]["epochs"] is None and "--methods morgan_lr --seeds 0" in rec[0]["command"]
    assert main(common) == 0  # rerun: nothing left to do
    assert "0 cell(s) run, 1 recorded" in capsys.readouterr().out
    assert "| morgan_lr | " in out.with_suffix(".md").read_text()


def test_featurizer_is_part_of_the_cell_key_and_gets_its_own_row():
    """Old records (no featurizer: OGB) are neither skipped as done nor mixed into the new rows."""
    doc = {"records": [], "encoders": {}}
    add_record(doc, _rec(seed=0, test=0.92, dataset="clintox"))  # written before featurizers were recorded
    add_record(doc, {**_rec(seed=0, test=0.58, dataset="clintox"), "featurizer": "hu2020", "conv": "selfloop"})
    assert len(doc["records"]) == 2
    assert finished_keys(doc) == {("clintox", "gin_random", 0, 100, "hu2020", "ogb", "fp32"),
                                  ("clintox", "gin_random", 0, 100, "hu2020", "hu2020", "fp32")}
    kw = dict(datasets=["clintox"], methods=["gin_random"], protocol="hu2020", epochs=100, seeds={"gin_random": 1},
              descriptions={})
    md = render_markdown(doc, **kw, featurizer="hu2020")
    assert "| gin_random | hu2020 | 58.0 ± 0.0 |" in md and "| gin_random | ogb | 92.0 ± 0.0 |" in md
    assert md.split("## Missing cells")[1].split("##")[0].strip() == "none"
    assert "| clintox | gin_random | ogb | 0 |" in md and "| clintox | gin_random | hu2020 | 0 |" in md
    doc["records"].pop()  # only the OGB cell: the hu2020 cell is missing
    assert "gin_random on clintox" in render_markdown(doc, **kw, featurizer="hu2020").split("## Missing cells")[1]


def test_hu2020_benchmark_refuses_pretrained_encoders(capsys):
    with pytest.raises(SystemExit):
        main(["--protocol", "hu2020", "--methods", "gin_random,gin_demo", "--datasets", "bbbp"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "gin_demo read OGB features" in err and "--protocol cmcl" in err


@pytest.mark.parametrize("protocol", ["hu2020", "cmcl"])
def test_speed_runs_with_each_protocols_features(protocol, capsys, monkeypatch):
    """``--speed`` builds the GIN its protocol's featurizer needs (it once built an OGB-feature GIN
    for Hu et al.'s two atom features and failed)."""
    import sys

    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parents[3] / "benchmarks"))
    from finetune_speed import speed

    featurizer = {"hu2020": "hu2020", "cmcl": "ogb"}[protocol]
    assert speed(epochs=1, protocol=protocol, featurizer=featurizer, dataset="bace", limit=300) == 0
    out = capsys.readouterr().out
    assert f"protocol {protocol}, {featurizer} features" in out and "% of the bf16 matmul peak" in out
    assert sys.modules["finetune_speed"] is not None


def test_a_bf16_cell_is_its_own_cell_and_is_compared_not_averaged():
    from cmcl_model.finetune.records import cell_key, render_markdown

    base = dict(dataset="bbbp", method="gin_random", seed=0, epochs=100, protocol="hu2020", featurizer="hu2020",
                metric="roc_auc", best_epoch=50, wall_s=400.0, commit="c" * 40, command="x")
    fp32 = dict(base, test_last=0.66, test_best_val=0.64)
    bf16 = dict(base, test_last=0.60, test_best_val=0.61, precision="bf16", wall_s=280.0)
    assert cell_key(fp32) != cell_key(bf16) and cell_key(fp32) == cell_key(dict(fp32, precision="fp32"))
    md = render_markdown({"records": [fp32, bf16], "encoders": {}}, datasets=["bbbp"], methods=["gin_random"],
                         protocol="hu2020", epochs=100, seeds={}, descriptions={}, featurizer="hu2020")
    assert "| gin_random | hu2020 | 66.0 ± 0.0 (1/3) |" in md  # the table: fp32 only
    assert "| bbbp | gin_random | hu2020 | 0 | 66.0 / 64.0 | 60.0 / 61.0 | 4.0 / 2.8 |" in md


def test_two_runs_writing_one_file_keep_each_others_cells(tmp_path, monkeypatch):
    """A run reads the file again before writing it: a cell another run recorded meanwhile (the
    two background runs of another protocol share docs/transfer.json) is kept."""
    import benchmarks.finetune as bench

    out = tmp_path / "transfer.json"
    foreign = {**_rec(seed=0, test=0.7, dataset="clintox"), "featurizer": "hu2020", "conv": "selfloop"}
    real = bench.run_cell

    def other_run_meanwhile(*a, **k):
        doc = load_records(out) if out.exists() else {"records": [], "encoders": {}}
        add_record(doc, foreign)
        save_records(doc, out)
        return real(*a, **k)

    monkeypatch.setattr(bench, "run_cell", other_run_meanwhile)
    assert main(["--datasets", "bace", "--methods", "morgan_lr", "--out", str(out), "--threads", "1"]) == 0
    assert {(r["dataset"], r["method"]) for r in load_records(out)["records"]} == {("clintox", "gin_random"),
                                                                                ("bace", "morgan_lr")}


def test_a_cell_stopped_part_way_continues_on_the_next_run(tmp_path, capsys, monkeypatch):
    import cmcl_model.finetune.run as ft

    out = tmp_path / "transfer.json"
    args = ["--datasets", "bace", "--methods", "gin_random", "--seeds", "0", "--epochs", "2", "--out", str(out),
            "--threads", "1"]
    real = ft.finetune_once

    def stopped_after_epoch_1(*a, on_epoch=None, **k):
        def stop(epoch, epochs, val):
            if epoch == 1:
                raise KeyboardInterrupt
        return real(*a, on_epoch=stop, **k)

    monkeypatch.setattr(ft, "finetune_once", stopped_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    partial = list((tmp_path / "transfer.json.partial").glob("*.pt"))
    assert len(partial) == 1 and "bace-gin_random-0-2-hu2020-hu2020-fp32" in partial[0].name
    monkeypatch.setattr(ft, "finetune_once", real)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "continuing from" in printed and "epoch 2/2" in printed and "epoch 1/2" not in printed.split("continuing")[1]
    assert not partial[0].exists() and len(load_records(out)["records"]) == 1


def test_a_cell_another_run_finished_meanwhile_is_not_run_again(tmp_path, monkeypatch):
    """Two background runs whose cell lists overlap: a cell the other run recorded after this one
    started is skipped, not computed twice."""
    import benchmarks.finetune as bench

    out = tmp_path / "transfer.json"
    real = bench.run_cell
    ran = []

    def other_run_finishes_seed_1_meanwhile(d, m, s, **k):
        ran.append((d, m, s))
        rec = real(d, m, s, **k)
        doc = load_records(out) if out.exists() else {"records": [], "encoders": {}}
        add_record(doc, {**_rec(method="morgan_rf", seed=1, test=0.7, dataset="bace"), "protocol": "hu2020",
                         "epochs": None})
        save_records(doc, out)
        return rec

    monkeypatch.setattr(bench, "run_cell", other_run_finishes_seed_1_meanwhile)
    assert main(["--datasets", "bace", "--methods", "morgan_rf", "--seeds", "0,1", "--out", str(out),
                 "--threads", "1"]) == 0
    assert ran == [("bace", "morgan_rf", 0)]
    assert sorted(r["seed"] for r in load_records(out)["records"]) == [0, 1]


def test_recorded_commands_name_no_folder_of_this_machine(tmp_path):
    """A cell's command names a store outside the repository by a placeholder, one inside by its
    relative path: docs/transfer.json carries no machine's folders."""
    import argparse

    import benchmarks.finetune as bench

    args = argparse.Namespace(epochs=100, protocol="cmcl", threads=1, featurizer="ogb", precision="fp32",
                              demo_store=tmp_path / "demo", profile_run=tmp_path / "real" / "runs" / "r1")
    assert bench._cell_command(args, "bace", "gin_demo", 0).endswith("--demo-store DEMO_STORE")
    assert bench._cell_command(args, "bace", "gin_profiles", 0).endswith("--profile-run PROFILE_RUN")
    args.demo_store = bench.ROOT / "transfer-demo-store"
    assert bench._cell_command(args, "bace", "gin_ssl", 1).endswith("--demo-store transfer-demo-store")
    doc = load_records(bench.ROOT / "docs" / "transfer.json")  # what is committed: every path relative
    for r in doc["records"]:
        assert not [tok for tok in r["command"].split() if tok.startswith(("/", "~"))], r["command"]
    for name, e in doc["encoders"].items():
        assert not e["source"].startswith(("/", "~")) and " /" not in e["description"], (name, e)


def test_every_recorded_method_gets_its_row_on_render(tmp_path):
    """gin_profiles is run on its own (it needs --profile-run): its cells still get a row in the table."""
    out = tmp_path / "transfer.json"
    doc = {"records": [], "encoders": {}}
    add_record(doc, {**_rec(method="gin_profiles", test=0.66, dataset="bace"), "protocol": "cmcl", "featurizer": "ogb",
                     "conv": "gine"})
    save_records(doc, out)
    assert main(["--render", "--out", str(out), "--protocol", "cmcl"]) == 0
    rows = [ln for ln in out.with_suffix(".md").read_text().splitlines() if ln.startswith("| gin_profiles |")]
    assert len(rows) == 2 and "67.0" in rows[0] and "66.0" in rows[1], rows  # best-validation, then last epoch


def test_a_cell_another_live_run_is_on_is_skipped_and_a_killed_runs_cell_is_not(tmp_path, capsys):
    """Two runs sharing one file and one partial folder never train the same cell at once: a cell
    whose lock another live process holds is skipped; once that process is killed (SIGKILL, no
    clean-up), the next run takes the cell."""
    import signal
    import subprocess
    import sys

    import benchmarks.finetune as bench

    out, partial = tmp_path / "transfer.json", tmp_path / "partial"
    key = cell_key({"dataset": "bace", "method": "morgan_rf", "seed": 0, "epochs": None, "protocol": "hu2020",
                    "precision": "fp32"})
    lock = bench._cell_lock(bench.argparse.Namespace(partial_dir=str(partial)), key)
    partial.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; fh = open(sys.argv[1], 'a'); fcntl.flock(fh, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(600)"), str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["--datasets", "bace", "--methods", "morgan_rf", "--seeds", "0,1", "--out", str(out), "--threads", "1",
                "--partial-dir", str(partial)]
        assert main(args) == 0
        assert "bace morgan_rf seed 0: another run is on this cell; skipping it" in capsys.readouterr().out
        assert [r["seed"] for r in load_records(out)["records"]] == [1]
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert main(args) == 0
        assert sorted(r["seed"] for r in load_records(out)["records"]) == [0, 1]
    finally:
        holder.kill()
        holder.wait(timeout=30)
