"""Fault catalogue: each fault is injected into a small plate or store, then the store must verify
clean (:func:`pipeline.store.verify.verify_store`) with nothing good lost or duplicated."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import zarr

from pipeline.ingest.run import IngestSettings, ingest_plate
from pipeline.store.ledger import update_ledger
from pipeline.store.paths import Store
from pipeline.store.verify import Problem, verify_store

REPO = Path(__file__).resolve().parents[1]
SETTINGS = IngestSettings(crop_size=24)


@pytest.fixture(scope="module")
def plate(tmp_path_factory) -> Path:
    """8 wells x 1 site, 96 px, ImageXpress layout (read-only use: copy before changing it)."""
    from pipeline.synthetic import generate

    return generate(tmp_path_factory.mktemp("fault_inbox"), plate_id="FT", n_wells=8, sites=1, size=96, seed=11)


@pytest.fixture(scope="module")
def reference(plate, tmp_path_factory) -> Store:
    """``plate`` ingested once, undisturbed: the result every faulty run must reproduce."""
    store = Store(tmp_path_factory.mktemp("fault_ref"))
    assert ingest_plate(plate, store, SETTINGS, processes=1).status == "complete"
    return store


def _copy(plate: Path, dest: Path) -> Path:
    shutil.copytree(plate, dest, copy_function=shutil.copy2)  # keep mtimes: same fingerprint
    return dest


def _assert_same(store: Store, reference: Store, plate: str) -> None:
    for name in ("cells", "fields", "platemap", "quarantine"):
        pd.testing.assert_frame_equal(store.read(name), reference.read(name))
    a = zarr.open_group(str(store.crops_zarr(plate)), mode="r")["crops"][:]
    b = zarr.open_group(str(reference.crops_zarr(plate)), mode="r")["crops"][:]
    assert (a == b).all()


def _run_child(code: str, *args: str) -> subprocess.Popen:
    prelude = "import sys; sys.path.insert(0, sys.argv[1]);"
    return subprocess.Popen([sys.executable, "-c", prelude + code, str(REPO), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# --- verify_store itself -------------------------------------------------------------------

def test_reference_store_verifies_clean(reference):
    assert verify_store(reference.root) == []


def test_verify_finds_and_repairs_leftovers_without_touching_complete_plates(reference, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(reference.root, root)
    store = Store(root)
    (root / ".staging" / "XX" / "plate.ome.zarr").mkdir(parents=True)
    (root / "tables" / "cells" / ".FT.parquet.abc.tmp").write_bytes(b"half")
    (root / "runs" / "20240101-000000").mkdir(parents=True)
    shutil.copytree(store.plate_zarr("FT"), store.plate_zarr("GHOST"))  # orphan: not in the ledger
    shutil.copy2(store.table_path("cells", plate="FT"), store.table_path("cells", plate="GHOST"))
    found = verify_store(root)
    assert all(isinstance(p, Problem) for p in found)
    paths = {p.path for p in found}
    assert {".staging/XX", "tables/cells/.FT.parquet.abc.tmp", "runs/20240101-000000",
            "plates/GHOST.ome.zarr", "tables/cells/GHOST.parquet"} <= paths, found
    assert not any("FT" == p.path.split("/")[-1].split(".")[0] for p in found)
    assert verify_store(root, repair=True) == []
    assert verify_store(root) == []
    assert not store.plate_zarr("GHOST").exists() and not (root / ".staging" / "XX").exists()
    _assert_same(store, reference, "FT")  # the complete plate is untouched


def test_verify_reports_inconsistent_complete_plate(reference, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(reference.root, root)
    store = Store(root)
    cells = store.read("cells")
    from pipeline.store.schema import write_table

    write_table(cells.iloc[:-1], "cells", store.table_path("cells", plate="FT"))  # one row lost
    field = store.read("fields")["Metadata_FieldPath"].iloc[0]
    shutil.rmtree(store.plate_zarr("FT") / field / "labels")
    (root / "tables" / "quarantine" / "FT.parquet").write_bytes(b"not parquet")
    messages = "\n".join(map(str, verify_store(root)))
    assert "crops but" in messages and "N_Cells" in messages
    assert "labels missing" in messages and "quarantine" in messages
    assert verify_store(root, repair=True)  # repair never touches a complete plate: still wrong


def test_repair_removes_outputs_of_a_plate_not_complete(reference, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(reference.root, root)
    store = Store(root)
    row = store.read("ledger").iloc[0].to_dict()
    update_ledger(store, {**row, "Status": "running"})  # as if killed inside publish
    assert any("not 'complete'" in p.message for p in verify_store(root))
    assert verify_store(root, repair=True) == []
    assert not store.plate_zarr("FT").exists() and not store.table_path("cells", plate="FT").exists()


def _flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_verify_deep_names_a_damaged_crop_chunk_and_repair_rederives_it(reference, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    root = tmp_path / "store"
    shutil.copytree(reference.root, root)
    store = Store(root)
    shard = store.crops_zarr("FT") / "crops" / "c" / "0" / "0" / "0" / "0"
    _flip_byte(shard)
    runner = CliRunner()
    shallow = runner.invoke(app, ["verify", "--store", str(root)])
    assert shallow.exit_code == 0  # metadata and tables are fine: only decoding finds it
    deep = runner.invoke(app, ["verify", "--deep", "--store", str(root)])
    assert deep.exit_code == 1, deep.output
    assert "crops/FT.zarr/crops: plate 'FT': chunk" in deep.output and "CRC32C" in deep.output
    fixed = runner.invoke(app, ["verify", "--deep", "--repair", "--store", str(root)])
    assert fixed.exit_code == 0, fixed.output
    assert verify_store(root, deep=True) == []
    _assert_same(store, reference, "FT")


def test_verify_deep_names_a_damaged_plate_chunk_and_says_it_cannot_be_rederived(reference, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    root = tmp_path / "store"
    shutil.copytree(reference.root, root)
    store = Store(root)
    field = store.read("fields")["Metadata_FieldPath"].iloc[0]
    chunk = store.plate_zarr("FT") / field / "0" / "c" / "2" / "0" / "0"
    _flip_byte(chunk)
    found = [p for p in verify_store(root, deep=True)]
    assert [p.path for p in found] == [f"plates/FT.ome.zarr/{field}/0"] and "chunk 2.0.0" in found[0].message
    result = CliRunner().invoke(app, ["verify", "--deep", "--repair", "--store", str(root)])
    assert result.exit_code == 1 and "cannot be re-derived" in result.output and "cmcl ingest --force" in result.output


# --- plate faults --------------------------------------------------------------------------

def test_unknown_well_is_flagged_unmapped(plate, reference, tmp_path):
    src = _copy(plate, tmp_path / "FT")
    pm = pd.read_csv(src / "platemap.csv", dtype=str)
    dropped = pm["Metadata_Well"].iloc[0]
    pm.iloc[1:].to_csv(src / "platemap.csv", index=False)
    store = Store(tmp_path / "store")
    assert ingest_plate(src, store, SETTINGS, processes=1).status == "complete"
    table = store.read("platemap").set_index("Metadata_Well")
    assert table.loc[dropped, "Metadata_ControlType"] == "unmapped" and table.loc[dropped, "Metadata_HasImages"]
    assert len(table) == len(pm)
    pd.testing.assert_frame_equal(store.read("cells"), reference.read("cells"))  # images still ingested
    assert verify_store(store.root) == []


@pytest.mark.parametrize("content", ["", "Metadata_Well,Metadata_SMILES\n"], ids=["zero-bytes", "header-only"])
def test_empty_platemap_fails_before_any_work_naming_the_file(plate, tmp_path, content):
    # Decision: an empty plate map is a broken copy, not "no compounds" (a plate without a map
    # simply has no platemap.csv). Ingest refuses it up front with the file's path, writes nothing.
    src = _copy(plate, tmp_path / "FT")
    (src / "platemap.csv").write_text(content)
    store = Store(tmp_path / "store")
    with pytest.raises(ValueError, match="platemap.csv: plate map is empty"):
        ingest_plate(src, store, SETTINGS, processes=1)
    assert not (store.root / ".staging").exists() and store.read("ledger").empty
    assert verify_store(store.root) == []


def test_non_ascii_and_space_in_plate_folder(tmp_path):
    from pipeline.synthetic import generate

    src = generate(tmp_path / "entrée dossier", layout="phenix", plate_id="plaque é 1", n_wells=6, sites=1,
                   size=96, seed=2)
    store = Store(tmp_path / "störe with space")
    result = ingest_plate(src, store, SETTINGS, processes=1)
    assert result.status == "complete" and result.n_fields == 6
    plate = result.plate
    assert store.plate_zarr(plate).is_dir()
    cells = store.read("cells")
    assert len(cells) == result.n_cells and set(cells["Metadata_Plate"]) == {plate}
    assert verify_store(store.root) == []
    assert ingest_plate(src, store, SETTINGS, processes=1).status == "skipped"


def test_two_ingests_of_one_plate_at_once(plate, reference, tmp_path):
    store = tmp_path / "store"
    code = ("from pipeline.ingest.run import IngestSettings, ingest_plate; from pipeline.store.paths import Store;"
            "r = ingest_plate(sys.argv[2], Store(sys.argv[3]), IngestSettings(crop_size=24), processes=1);"
            "print('STATUS', r.status)")
    procs = [_run_child(code, str(plate), str(store)) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    statuses = sorted(o[0].split("STATUS ")[-1].strip() for o in outs)
    assert statuses == ["complete", "skipped"], outs
    st = Store(store)
    assert len(st.read("ledger")) == 1
    assert not st.read("cells")["Metadata_CropIndex"].duplicated().any()
    _assert_same(st, reference, "FT")
    assert verify_store(store) == []


def test_store_path_is_a_file(plate, tmp_path):
    bad = tmp_path / "store"
    bad.write_text("I am a file")
    with pytest.raises(NotADirectoryError, match=str(bad)):
        ingest_plate(plate, Store(bad), SETTINGS, processes=1)
    with pytest.raises(NotADirectoryError, match=str(bad)):
        ingest_plate(plate, Store(bad / "inner"), SETTINGS, processes=1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions (see test_store_path_is_a_file)")
def test_read_only_store_fails_naming_the_store(plate, reference, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(reference.root, root)
    os.chmod(root, 0o555)
    try:
        with pytest.raises(PermissionError, match=str(root)):
            ingest_plate(plate, Store(root), SETTINGS, processes=1)
    finally:
        os.chmod(root, 0o755)
    assert verify_store(root) == []


def test_kill_9_during_tiling_then_rerun(plate, reference, tmp_path):
    store = Store(tmp_path / "store")
    # SIGKILL itself from inside segment_and_tile, after 3 fields: deterministic, however loaded the machine.
    code = ("import os, signal; from pipeline.ingest import fields, run as ing;"
            "orig = fields._process_field; n = [0]\n"
            "def field(*a, **k):\n"
            "    n[0] += 1\n"
            "    if n[0] > 3: os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return orig(*a, **k)\n"
            "fields._process_field = field\n"
            "ing.ingest_plate(sys.argv[2], ing.Store(sys.argv[3]), ing.IngestSettings(crop_size=24), processes=1)")
    proc = _run_child(code, str(plate), str(store.root))
    proc.communicate(timeout=300)
    assert proc.returncode == -9
    staged = store.root / ".staging" / "FT"
    assert (staged / "crops.zarr").is_dir() and not store.plate_zarr("FT").exists()
    assert store.read("ledger").empty
    assert [p.path for p in verify_store(store.root)] == [".staging/FT"]
    assert ingest_plate(plate, store, SETTINGS, processes=1).status == "complete"  # resumes
    assert verify_store(store.root) == []
    _assert_same(store, reference, "FT")


def test_kill_9_while_writing_in_two_processes_then_rerun(plate, reference, tmp_path):
    """SIGKILL of the ingesting process after the first batch of fields was written by a worker
    (its workers then exit, the parent being gone): the rerun, in two processes, reads the
    written fields back from staging for their statistics and writes the rest, and the store is
    the undisturbed one-process store."""
    store = Store(tmp_path / "store")
    code = ("import os, signal; from pipeline.ingest import illumination, run as ing;"
            "orig = illumination.IlluminationStats.merge\n"
            "def merge(self, other):\n"
            "    orig(self, other)\n"
            "    if other.background: os.kill(os.getpid(), signal.SIGKILL)\n"
            "illumination.IlluminationStats.merge = merge\n"
            "if __name__ == '__main__':\n"
            "    ing.ingest_plate(sys.argv[2], ing.Store(sys.argv[3]), ing.IngestSettings(crop_size=24), processes=2)")
    proc = _run_child(code, str(plate), str(store.root))
    # the workers hold the child's stdout/stderr: communicate() returns only once they are gone
    # too (before workers watched their parent, they lived on and this timed out)
    proc.communicate(timeout=120)
    assert proc.returncode == -9
    staged = store.root / ".staging" / "FT"
    written = [p for p in (staged / "plate.ome.zarr").glob("*/*/*/0") if p.is_dir()]
    assert len(written) >= 4 and not store.plate_zarr("FT").exists()  # at least the first batch
    assert ingest_plate(plate, store, SETTINGS, processes=2).status == "complete"  # resumes
    assert verify_store(store.root) == []
    _assert_same(store, reference, "FT")
    a = zarr.open_group(str(store.illumination_zarr("FT")), mode="r")
    b = zarr.open_group(str(reference.illumination_zarr("FT")), mode="r")
    assert (a["function"][:] == b["function"][:]).all() and dict(a.attrs) == dict(b.attrs)


# --- compound faults -----------------------------------------------------------------------

def test_bad_smiles_and_broken_sdf_records_are_kept_with_reasons(tmp_path):
    from rdkit import Chem

    from pipeline.chem.io import read_compounds
    from pipeline.chem.standardize import standardize_table

    csv = tmp_path / "mixed compounds é.csv"
    pd.DataFrame({"ID": ["ok1", "bad1", "bad2", "empty", "ok2"],
                  "smiles": ["CCO", "C1CC", "c1ccccc1X", "", "[Na+].[O-]C(=O)c1ccccc1"]}).to_csv(csv, index=False)
    blocks = []
    for name, smi in [("aspirin", "CC(=O)Oc1ccccc1C(=O)O"), ("broken", "CCN"), ("caffeine", "Cn1cnc2c1c(=O)n(C)c(=O)n2C")]:
        mol = Chem.MolFromSmiles(smi)
        mol.SetProp("_Name", name)
        block = Chem.MolToMolBlock(mol)
        if name == "broken":  # corrupt the counts line: the record cannot be parsed
            lines = block.splitlines()
            lines[3] = "xx" + lines[3][2:]
            block = "\n".join(lines)
        blocks.append(block + "\n$$$$\n")
    sdf = tmp_path / "lib.sdf"
    sdf.write_text("".join(blocks))

    for path, n, id_col, failed in ((csv, 5, "ID", {"bad1", "bad2", "empty"}), (sdf, 3, None, {"broken"})):
        records = pd.concat(list(read_compounds(path, id_col=id_col)), ignore_index=True)
        assert len(records) == n
        out = standardize_table(records)
        assert len(out) == n  # nothing dropped
        bad = out[out["Status"] == "failed"]
        assert set(bad["Metadata_CompoundID"]) == failed, out[["Metadata_CompoundID", "Status", "Error"]]
        assert bad["Error"].str.len().min() > 3
        good = out[out["Status"] == "ok"]
        assert good["Metadata_InChIKey"].str.len().eq(27).all()
