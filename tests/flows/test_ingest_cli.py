"""Ingestion as a user drives it: `cmcl ingest`, its settings, its preflight and its quarantine."""

from __future__ import annotations

import json

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.ingest.run import IngestSettings
from pipeline.store.paths import Store
from pipeline.store.verify import verify_store

runner = CliRunner()


@pytest.fixture(scope="module")
def plate(tmp_path_factory) -> Path:
    """6 wells x 1 site, 64 px, ImageXpress (read-only: copy before changing it)."""
    from pipeline.synthetic import generate

    return generate(tmp_path_factory.mktemp("cli_inbox"), plate_id="CL", n_wells=6, sites=1, size=64, seed=4)


def _ingest(*args: str):
    return runner.invoke(app, ["--quiet", "ingest", *args, "--crop-size", "16"])


@pytest.mark.parametrize("field, value, choice", [
    ("illumination_method", "foo", "'mean', 'median', 'background'"), ("cyto_channel", "DNA", "'RNA', 'AGP'"),
    ("border", "wrap", "'skip', 'pad'"), ("layout", "opera", "'auto', 'imagexpress'"), ("crop_size", 4, ">= 8"),
    ("crop_size", 32.5, "an integer"), ("illumination_dark", float("nan"), "finite"),
    ("focus_outlier_fraction", 2.0, "<= 1"), ("channel_map", "DNA=1,FOO=2", "not Cell Painting channels"),
])
def test_settings_are_validated_at_construction(field, value, choice):
    with pytest.raises(ValueError) as info:
        IngestSettings(**{field: value})
    assert choice in str(info.value) and (field in str(info.value) or field == "channel_map")


def test_bad_illumination_flag_is_one_line_naming_the_choices(plate, tmp_path):
    result = _ingest(str(plate), "--store", str(tmp_path / "s"), "--illumination", "foo")
    assert result.exit_code == 1
    assert "illumination_method 'foo' is not one of 'mean', 'median', 'background'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "s").exists()


def test_bad_plate_map_fails_before_any_pixel_is_read(plate, tmp_path, monkeypatch):
    import pipeline.ingest.run as stages

    good = shutil.copytree(plate, tmp_path / "inbox" / "CL", copy_function=shutil.copy2)
    bad = shutil.copytree(plate, tmp_path / "inbox" / "CM", copy_function=shutil.copy2)
    pm = pd.read_csv(bad / "platemap.csv", dtype=str)
    pm.loc[2, "Metadata_Well"] = "Z99x"
    pm.to_csv(bad / "platemap.csv", index=False)

    def no_pixels(*a, **k):
        raise AssertionError("a pixel was read before the preflight finished")

    monkeypatch.setattr(stages, "write_images", no_pixels)
    store = tmp_path / "s"
    result = _ingest(str(good), str(bad), "--store", str(store))  # the bad plate is second: nothing starts
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]  # checked before Prefect starts: one line
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "CM/platemap.csv" in lines[0] and "Z99x" in lines[0] and "Traceback" not in result.output
    assert not (store / ".staging").exists() and Store(store).read("ledger").empty


def test_store_that_is_a_file_fails_naming_it(plate, tmp_path):
    bad = tmp_path / "store"
    bad.write_text("I am a file")
    result = _ingest(str(plate), "--store", str(bad))
    assert result.exit_code == 1 and "NotADirectoryError" in result.output and str(bad) in result.output


def test_empty_plate_map_fails_naming_the_file(plate, tmp_path):
    src = shutil.copytree(plate, tmp_path / "CL", copy_function=shutil.copy2)
    (src / "platemap.csv").write_text("")
    result = _ingest(str(src), "--store", str(tmp_path / "s"))
    assert result.exit_code == 1 and "platemap.csv: plate map is empty" in result.output


def test_loaddata_plate_with_only_bad_fields_completes_with_its_quarantine_and_exits_non_zero(tmp_path):
    """Every LoadData path points outside the plate folder: 0 fields, one quarantine row per image,
    each with its own reason, a one-line summary, and exit 1 with one line saying nothing was
    stored and why (a script or an inbox must not read it as success)."""
    from pipeline.synthetic import generate

    plate = generate(tmp_path / "inbox", layout="loaddata", plate_id="LD", n_wells=3, sites=2, size=64, seed=6)
    csv = plate / "load_data.csv"
    table = pd.read_csv(csv)
    outside = tmp_path / "elsewhere"
    shutil.move(plate / "images", outside)
    for col in [c for c in table.columns if c.startswith("PathName_Orig")]:
        table[col] = [os.path.relpath(outside / Path(p).relative_to("images"), csv.parent) for p in table[col]]
    table.to_csv(csv, index=False)
    store = Store(tmp_path / "s")
    result = _ingest(str(plate), "--store", str(store.root))
    assert result.exit_code == 1, result.output
    assert "plate LD: 0 field(s), 0 cell(s), 30 image(s) quarantined (30 path outside the plate folder)" in \
        " ".join(result.output.split())
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert line == ("error: plate LD: no field stored (30 path outside the plate folder); see `cmcl inspect "
                    "quarantine` for every refused image")
    q = store.read("quarantine")
    assert len(q) == 3 * 2 * 5 and q["Reason"].str.contains("path outside the plate folder").all()
    assert q[["Metadata_Well", "Metadata_Site", "Metadata_Channel"]].notna().all().all()
    assert not q.duplicated(["Metadata_Well", "Metadata_Site", "Metadata_Channel"]).any()
    assert q["File"].map(lambda f: Path(f).is_relative_to(outside.resolve())).all()
    led = store.read("ledger").iloc[0]
    assert led["Status"] == "complete" and led["N_Fields"] == 0 and led["N_Quarantined"] == 30
    assert store.read("fields").empty and store.read("cells").empty
    assert verify_store(store.root) == []
    again = _ingest(str(plate), "--store", str(store.root))  # unchanged: skipped, same summary
    assert again.exit_code == 1 and "30 path outside the plate folder" in " ".join(again.output.split())
    assert "no field stored" in again.output


def test_one_bad_loaddata_row_quarantines_with_its_true_reason(tmp_path):
    from pipeline.synthetic import generate

    plate = generate(tmp_path / "inbox", layout="loaddata", plate_id="LE", n_wells=2, sites=1, size=64, seed=7)
    csv = plate / "load_data.csv"
    table = pd.read_csv(csv)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy2(plate / table.loc[0, "PathName_OrigER"] / table.loc[0, "FileName_OrigER"], outside / "er.tiff")
    table.loc[0, "PathName_OrigER"] = os.path.relpath(outside, csv.parent)
    table.loc[0, "FileName_OrigER"] = "er.tiff"
    table.to_csv(csv, index=False)
    store = Store(tmp_path / "s")
    assert _ingest(str(plate), "--store", str(store.root)).exit_code == 0
    q = store.read("quarantine")
    assert len(q) == 1, q
    row = q.iloc[0]
    assert (row["Metadata_Well"], row["Metadata_Site"], row["Metadata_Channel"]) == (table.loc[0, "Metadata_Well"], 1, "ER")
    assert "path outside the plate folder" in row["Reason"] and row["File"] == str((outside / "er.tiff").resolve())
    assert store.read("ledger").iloc[0]["N_Fields"] == 1


def test_pe2loaddata_csv_beside_its_tiffs_ingests_its_field(tmp_path):
    """The real pe2loaddata CSV names its images under another machine's folder
    (tests/data/Version1/images/); put in one folder with its TIFFs it ingests its field."""
    src = Path(__file__).resolve().parents[1] / "data" / "phenix_BR00121482"
    folder = tmp_path / "BR00121482"
    folder.mkdir()
    shutil.copy2(src / "load_data_version1.csv", folder)
    for f in (src / "Images").glob("*.tiff"):
        shutil.copy2(f, folder)
    store = Store(tmp_path / "s")
    result = _ingest(str(folder), "--store", str(store.root), "--features", "none")
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "plate BR00121482: 1 field(s)" in out and "0 image(s) quarantined" in out
    assert "5 image path(s) re-rooted" in out and "found beside the CSV" in out
    assert "DNA=OrigDNA (HOECHST 33342)" in out and "source: the instrument's metadata" in out
    assert store.read("ledger").iloc[0]["ChannelSource"] == "metadata"


def test_inspect_tables_fit_80_columns_and_json_keeps_every_column(tmp_path):
    from pipeline.store.schema import write_table

    store = Store(tmp_path / "s")
    long = "/very/long/folder/of/an/export/that/a/user/copied/from/somewhere/" * 2
    q = pd.DataFrame({"Metadata_Plate": "BR00121482", "Metadata_Well": ["A01", "B02"], "Metadata_Site": [1, 2],
                      "Metadata_Channel": ["DNA", "Mito"], "File": [long + "r01c01f01p01-ch5sk1fk1fl1.tiff"] * 2,
                      "Reason": ["missing channel DNA: " + long + "r01c01f01p01-ch5sk1fk1fl1.tiff does not exist",
                                 "unreadable TIFF: TiffFileError: not a valid TIFF file"]})
    write_table(q, "quarantine", store.table_path("quarantine", plate="BR00121482"))
    result = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["inspect", "quarantine", "--store", str(store.root)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 80, result.output
    rows = [ln for ln in lines if "A01" in ln or "B02" in ln]
    assert len(rows) == 2, result.output  # one line per row: nothing wrapped
    assert "r01c01f01p01-ch5" in rows[0] and "/very/long" not in rows[0].split("│")[4]  # file names, not paths
    full = CliRunner().invoke(app, ["inspect", "quarantine", "--store", str(store.root), "--json"])
    records = json.loads(full.output)
    assert records[0]["File"] == q["File"][0] and records[0]["Reason"] == q["Reason"][0]
