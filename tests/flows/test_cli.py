"""The CLI end to end, on generated plates and the shipped compound library."""

import json
import time

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.store.schema import table_names
from pipeline.store.paths import Store

runner = CliRunner()


def _ok(args):
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_demo_quick_end_to_end_then_rerun_does_no_work(tmp_path):
    store = tmp_path / "store"
    t0 = time.perf_counter()
    out = _ok(["--quiet", "demo", "--quick", "--store", str(store)])
    first = time.perf_counter() - t0
    assert "held-out retrieval" in out and "chance" in out and "report:" in out
    st = Store(store)
    run = st.runs()[-1]
    metrics = json.loads((st.report_dir(run) / "metrics.json").read_text())
    for key in ("model", "baselines", "chance", "split"):
        assert key in metrics
    n_test = metrics["split"]["test_evaluated"]
    n_cand = metrics["n_candidates"]["hit101"]
    assert n_test >= 2 and n_cand == min(101, n_test)
    for direction in ("graph_to_image", "image_to_graph"):
        r = metrics["model"]["hit101"][direction]
        # invariants of a ranking over n_test queries: each hit rate is a count of queries, ranks
        # lie in 1..n_cand, MRR >= Hit@1 and MRR >= 1 / mean rank (Jensen); a wrong metric breaks them
        n_q = n_test * len(metrics["seeds"])  # hit101 averages over the seeds' negative samples
        for k in (1, 5, 10):
            assert abs(r[f"hit@{k}"] * n_q - round(r[f"hit@{k}"] * n_q)) < 1e-6, (k, r)
            pool = metrics["model"]["fullpool"][direction].get(f"recall@{k}")
            assert pool is None or abs(pool * n_test - round(pool * n_test)) < 1e-6, (k, pool)
        assert r["hit@1"] <= r["hit@5"] <= r["hit@10"] and 1 <= r["mean_rank"] <= n_cand
        assert r["hit@1"] - 1e-9 <= r["mrr"] and r["mrr"] >= 1 / r["mean_rank"] - 1e-9
        chance = metrics["chance"]["hit101"][direction]
        assert chance["hit@10"] == pytest.approx(min(10, n_cand) / n_cand)
    assert (st.report_dir(run) / "report.html").stat().st_size > 1000
    assert "Coloured by ground-truth phenotype class" in (st.report_dir(run) / "report.html").read_text()
    # every written table conforms to schemas/ and opens with duckdb
    for name in table_names():
        for path in st.table_files(name):
            st.read(name)
            n = duckdb.sql(f"select count(*) from '{path}'").fetchall()[0][0]
            assert n == len(pd.read_parquet(path))
    summary = _ok(["inspect", "--store", str(store), "--json"])
    counts = {r["what"]: r["count"] for r in json.loads(summary)}
    assert counts["plates (complete)"] == 1 and counts["cells (crops)"] > 500 and counts["training runs"] == 1
    # rerun on the unchanged inbox: nothing is ingested, standardized or trained again
    t0 = time.perf_counter()
    again = _ok(["--quiet", "run", str(st.inbox), "--store", str(store), "--preset", "quick", "--crop-size", "32",
                 "--illumination", "background", "--dark", "100"])
    second = time.perf_counter() - t0
    assert "skipped" in again and st.runs() == [run]
    assert second < 0.5 * first, (first, second)


def test_compounds_counts_failures_and_is_incremental(tmp_path):
    from pipeline.chem.library import load_compound_library

    messy = load_compound_library(messy=True)
    f = tmp_path / "messy.csv"
    messy.rename(columns={"Metadata_SMILES": "smiles", "Metadata_CompoundID": "id"}).to_csv(f, index=False)
    store = tmp_path / "store"
    out = _ok(["--quiet", "compounds", str(f), "--store", str(store), "--id-col", "id"])
    assert "failed" in out and "compound_inputs" in out
    inputs = Store(store).read("compound_inputs")
    assert len(inputs) == len(messy)
    assert (inputs["Status"] == "failed").sum() == messy["Metadata_CompoundID"].str.startswith("MESSY-BAD").sum()
    assert "nothing to do" in _ok(["--quiet", "compounds", str(f), "--store", str(store), "--id-col", "id"])


def test_errors_are_one_line_without_traceback(tmp_path):
    result = runner.invoke(app, ["--quiet", "ingest", str(tmp_path / "nope"), "--store", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "does not exist" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["inspect", "everything", "--store", str(tmp_path)])
    assert result.exit_code == 1 and "choose one of" in result.output


def test_cli_process_leaves_no_process_behind(tmp_path):
    """A flow run in Prefect's ephemeral mode starts a temporary API; nothing may outlive the CLI."""
    import os
    import shutil
    import signal
    import subprocess
    import sys

    f = tmp_path / "c.smi"
    f.write_text("CCO ethanol\nc1ccccc1O phenol\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    cmcl = shutil.which("cmcl") or f"{sys.executable} -m flows.cli"
    proc = subprocess.Popen([*cmcl.split(), "--quiet", "compounds", str(f), "--store", str(tmp_path / "s")],
                            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "2 standardized" in out
    import time

    deadline = time.monotonic() + 20  # a stopping temporary API may take a moment to exit
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # any member of the CLI's process group still alive?
        except ProcessLookupError:
            return
        time.sleep(0.5)
    left = subprocess.run(["ps", "-o", "pid,args", "-g", str(proc.pid)], capture_output=True, text=True).stdout
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"processes of the CLI's process group outlived it:\n{left}")


@pytest.mark.slow
def test_train_ablation_over_seeds_prints_mean_and_sd(tmp_path):
    from pipeline.synthetic.store import make_synthetic_store

    store = make_synthetic_store(tmp_path / "s", n_compounds=48, seed=2)
    result = runner.invoke(app, ["--quiet", "train", "--ablation", "--ablation-seeds", "0,1", "--store", str(store.root),
                                 "--preset", "quick", "--set", "epochs=1", "--set", "max_steps=1", "--set", "norm_crops=64"],
                           env={"COLUMNS": "250"}, catch_exceptions=False)
    out = result.output
    assert result.exit_code == 0, out
    assert "mean ± sd over 2 seeds" in out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 5}
    assert set(lines) == {"gic", "gic+mgm", "gic+ggim", "all"}, out
    assert all(" ± " in line for line in lines.values())
    csv = pd.read_csv(out.split("table:")[1].split()[0])
    assert len(csv) == 8 and set(csv["seed"]) == {0, 1} and csv["test_g2i_hit@10"].between(0, 1).all()
    bad = runner.invoke(app, ["--quiet", "train", "--ablation", "--ablation-seeds", "0,x", "--store", str(store.root)])
    assert bad.exit_code != 0 and "comma-separated integers" in bad.output


def test_ingest_a_real_phenix_export_with_its_jump_plate_map(tmp_path):
    """`cmcl ingest` on the real Phenix export with no --channels: the Harmony index picks the
    stains, the brightfield channel is ignored (not quarantined), and a JUMP plate map attaches."""
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "data"
    jump = data / "jump_compound_platemaps"
    (tmp_path / "barcode_platemap.csv").write_text(
        "Assay_Plate_Barcode,Plate_Map_Name\nBR00121482,JUMP-Target-2_compound_platemap\n")
    cfg = tmp_path / "platemap.toml"
    cfg.write_text(f'platemap = "{jump}"\ncompound_metadata = "{jump / "JUMP-Target-2_compound_metadata.tsv"}"\n'
                   'barcode_platemap = "barcode_platemap.csv"\n')
    store = tmp_path / "store"
    out = _ok(["--quiet", "ingest", str(data / "phenix_BR00121482"), "--store", str(store), "--platemap", str(cfg)])
    assert ("BR00121482 channels: DNA=ch5 (HOECHST 33342), ER=ch4 (Alexa 488), RNA=ch3 (488 long), "
            "AGP=ch2 (Alexa 568), Mito=ch1 (Alexa 647); ignored: ch6 (Brightfield)") in " ".join(out.split())
    assert "quarantined:" not in out
    st = Store(store)
    assert st.read("quarantine").empty
    pm = st.read("platemap").set_index("Metadata_Well")
    assert len(pm) == 384 and (pm["Metadata_ControlType"] == "negcon").sum() == 64
    assert pm.loc["A01", "Metadata_HasImages"] and pm.loc["A01", "Metadata_SMILES"] == "CCCCCCCCO"
    assert pm["Metadata_HasImages"].sum() == 1
