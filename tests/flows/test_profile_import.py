"""`cmcl import-profiles` end to end on small real fixtures (tests/data/profile_formats): several
files in one call, reruns that add nothing, the JCP2022 join and its report, `cmcl compounds`
and `cmcl profile` on a store that holds only imported profiles, `cmcl verify` on it."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.store.paths import Store

runner = CliRunner()
FMT = Path(__file__).resolve().parents[1] / "data" / "profile_formats"
IDR = [FMT / "idr0133_fs_treatment_holdout.csv.gz", FMT / "idr0133_fs_well_holdout_every7th.csv.gz"]


def _ok(args):
    result = runner.invoke(app, ["--quiet", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def idr_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("idr")
    out = _ok(["import-profiles", *map(str, IDR), "--store", str(root)])
    assert "imported 126 wells x 352 features" in out and "imported 161 wells x 352 features" in out
    return Store(root)


def test_several_files_append_and_a_rerun_adds_nothing(idr_store):
    files = idr_store.table_files("profiles_imported")
    assert len(files) == 2
    stamps = {p: p.stat().st_mtime_ns for p in files}
    imported = idr_store.read("profiles_imported")
    assert len(imported) == 126 + 161 and imported["Metadata_Source"].nunique() == 2
    out = _ok(["import-profiles", *map(str, IDR), "--store", str(idr_store.root)])
    assert out.count("already imported") == 2
    assert {p: p.stat().st_mtime_ns for p in idr_store.table_files("profiles_imported")} == stamps
    index = json.loads(idr_store.path("profiles_imports").read_text())
    assert sorted(e["file"] for e in index.values()) == sorted(p.name for p in IDR)
    assert all(e["joined"] == e["compounds"] and e["unjoined"] == [] for e in index.values())


def test_compounds_standardizes_the_imported_compounds(idr_store):
    out = _ok(["compounds", "--store", str(idr_store.root)])
    assert "failed" in out
    imported = idr_store.read("profiles_imported")
    parents = set(imported.loc[imported["Metadata_ControlType"] != "negcon", "Metadata_InChIKey"])
    compounds = idr_store.read("compounds")
    assert parents <= set(compounds["Metadata_InChIKey"])  # the same standardizer: the same parents
    assert set(idr_store.read("graphs")["Metadata_InChIKey"]) == set(compounds["Metadata_InChIKey"])
    assert idr_store.read("compound_inputs")["Metadata_Source"].str.startswith("import:").all()
    assert "unchanged: nothing to do" in _ok(["compounds", "--store", str(idr_store.root)])


def test_profile_scores_imported_profiles_and_verify_accepts_the_store(idr_store):
    _ok(["profile", "--store", str(idr_store.root), "--null-size", "200"])
    act = idr_store.read("activity")  # the treatment hold-out has no DMSO well to score against
    assert set(act["Metadata_Source"]) == {"import:" + IDR[1].name} and act["Metadata_InChIKey"].notna().all()
    wells = idr_store.read("profiles_imported")
    trt = wells[(wells["Metadata_Source"] == "import:" + IDR[1].name) & (wells["Metadata_ControlType"] != "negcon")]
    replicated = trt["Metadata_CompoundID"].value_counts()
    scored = set(act["Metadata_CompoundID"])  # copairs needs replicates (on plates with DMSO wells)
    assert scored and scored <= set(replicated.index[replicated >= 2])
    _ok(["verify", "--store", str(idr_store.root)])
    from flows.inspect import profiles

    _, table = profiles(idr_store.root)  # `cmcl inspect profiles`: one row per imported file
    assert sorted(table["source"]) == sorted("import:" + p.name for p in IDR) and table["wells"].sum() == 126 + 161


def test_jump_cpg0016_style_joins_through_the_compound_map(tmp_path):
    out = _ok(["import-profiles", str(FMT / "jump_cpg0016_style.parquet"), "--store", str(tmp_path),
               "--compound-map", str(FMT / "jump_compound_ids_subset.csv.gz"),
               "--feature-names", str(FMT / "jump_cpg0016_feature_names.csv")])
    assert "40 of 41 compounds joined" in out
    assert "not joined: JCP2022_999999 (3 rows): Metadata_JCP2022 not in the compound map" in out
    imported = Store(tmp_path).read("profiles_imported")
    assert imported["Metadata_JCP2022"].notna().all() and set(imported["Metadata_Batch"]) == {"source_3", "source_7"}


def test_compounds_on_imported_profiles_without_structures_has_nothing_to_do(tmp_path):
    _ok(["import-profiles", str(FMT / "jump_cpg0016_style.parquet"), "--store", str(tmp_path)])
    out = _ok(["compounds", "--store", str(tmp_path)])
    assert "nothing to do" in out and not Store(tmp_path).table_path("compounds").exists()


def test_jump_moa_style_activity_is_keyed_by_inchikey(tmp_path):
    out = _ok(["import-profiles", str(FMT / "jump_moa_style_plate.csv.gz"), "--store", str(tmp_path)])
    plate = pd.read_csv(FMT / "jump_moa_style_plate.csv.gz", usecols=["Metadata_broad_sample"])
    n = plate["Metadata_broad_sample"].nunique()
    joined = int(re.search(r"; (\d+) of \d+ compounds joined", out).group(1))
    assert f"of {n} compounds joined" in out and joined >= 0.95 * n
    _ok(["profile", "--store", str(tmp_path), "--null-size", "200"])
    act = Store(tmp_path).read("activity")
    assert len(act) == n and act["Metadata_InChIKey"].notna().mean() >= 0.95


def test_a_changed_file_replaces_its_import_and_a_renamed_copy_adds_nothing(tmp_path):
    from flows.profiles import import_file_task

    store = Store(tmp_path / "s")
    src = pd.read_csv(IDR[0])
    f = tmp_path / "plate.csv"
    src.to_csv(f, index=False)
    first = import_file_task.fn(str(f), str(store.root))
    assert first["status"] == "imported" and first["rows"] == 126
    assert import_file_task.fn(str(f), str(store.root))["status"] == "unchanged"
    src.iloc[:100].to_csv(f, index=False)  # same name, other bytes: replaces the earlier import
    second = import_file_task.fn(str(f), str(store.root))
    assert second["status"] == "imported" and len(store.read("profiles_imported")) == 100
    copy = tmp_path / "copy.csv"
    copy.write_bytes(f.read_bytes())  # the same bytes under another name: still one import
    import_file_task.fn(str(copy), str(store.root))
    files = store.table_files("profiles_imported")
    assert len(files) == 1 and len(store.read("profiles_imported")) == 100
    assert set(json.loads(store.path("profiles_imports").read_text())) == {p.name[: -len(".parquet")] for p in files}


def test_bad_options_fail_in_one_line_before_prefect(tmp_path):
    bad = tmp_path / "cols.toml"
    bad.write_text('"Compound SMILES" = "structure"\n')
    for extra, words in ((["--columns", str(bad)], ["not roles", "smiles"]),
                         (["--compound-map", str(FMT / "jump_compound_ids_subset.csv.gz"), "--samples", str(IDR[0])],
                          ["give one of them"])):
        result = runner.invoke(app, ["import-profiles", str(IDR[0]), "--store", str(tmp_path / "s"), *extra])
        assert result.exit_code == 1 and all(w in result.output for w in words), result.output
        assert result.output.count("\n") == 1 and not (tmp_path / "s").exists()
