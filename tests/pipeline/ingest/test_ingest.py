import os
import warnings

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from pipeline.images.qc import focus_score
from pipeline.ingest import plan as ingest_plan
from pipeline.ingest import run as ing
from pipeline.ingest.run import IngestSettings, ingest_plate
from pipeline.store.omezarr import open_plate, read_field, read_labels
from pipeline.plates.discovery import discover_plate
from pipeline.store.schema import table_names, validate_array
from pipeline.store.paths import CHANNELS, Store


def test_every_good_field_is_pixel_identical(ingested, small_plate):
    store, result = ingested
    assert result.status == "complete" and result.n_fields == 24 and result.n_quarantined == 0
    plate = open_plate(store.plate_zarr("T1"))
    fields = store.read("fields")
    listing = discover_plate(small_plate).images
    for rec in fields.itertuples():
        image = read_field(plate, rec.Metadata_FieldPath)
        files = listing[(listing.Metadata_Well == rec.Metadata_Well) & (listing.Metadata_Site == rec.Metadata_Site)]
        for c, name in enumerate(CHANNELS):
            src = tifffile.imread(small_plate / files[files.Metadata_Channel == name]["File"].iloc[0])
            np.testing.assert_array_equal(image[c], src)


def test_cells_crops_and_labels_agree(ingested):
    store, result = ingested
    cells = store.read("cells")
    crops = zarr.open_group(str(store.crops_zarr("T1")), mode="r")["crops"]
    assert crops.shape == (len(cells), 5, 32, 32) == (result.n_cells, 5, 32, 32)
    validate_array(crops, "crops", "crops")  # 16-row chunks in 1024-row shards, uint16, (n, c, y, x)
    assert list(cells["Metadata_CropIndex"]) == list(range(len(cells)))
    plate = open_plate(store.plate_zarr("T1"))
    fields = store.read("fields").set_index(["Metadata_Well", "Metadata_Site"])
    for (well, site), group in cells.groupby(["Metadata_Well", "Metadata_Site"]):
        path = fields.loc[(well, site), "Metadata_FieldPath"]
        nuclei = read_labels(plate, path, "nuclei")
        cell_labels = read_labels(plate, path, "cells")
        assert nuclei.max() == fields.loc[(well, site), "Count_Nuclei"]
        assert set(np.unique(cell_labels)) == set(np.unique(nuclei))
        assert np.all(nuclei[group.Crop_CenterY, group.Crop_CenterX] == group.Metadata_CellID)
    assert (cells.groupby("Metadata_Well").size() > 5).all()


def test_every_written_table_matches_its_schema(ingested):
    store, _ = ingested
    written = [n for n in table_names() if store.table_files(n)]
    assert {"cells", "fields", "platemap", "quarantine", "ledger"} <= set(written)
    for name in written:
        store.read(name)  # validates against schemas/ (raises SchemaError otherwise)


def test_standard_reader_opens_the_plate(ingested):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Plate, Reader

    store, _ = ingested
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nodes = list(Reader(parse_url(str(store.plate_zarr("T1"))))())
    assert any(isinstance(s, Plate) for s in nodes[0].specs)
    attrs = open_plate(store.plate_zarr("T1")).attrs["ome"]
    assert attrs["version"] == "0.5" and len(attrs["plate"]["wells"]) == 12
    field = open_plate(store.plate_zarr("T1"))["A/1/0"].attrs["ome"]
    assert [c["label"] for c in field["omero"]["channels"]] == list(CHANNELS)


def test_rerun_does_nothing_and_a_changed_plate_is_redone(small_plate, tmp_path):
    store = Store(tmp_path / "store")
    first = ingest_plate(small_plate, store, IngestSettings(crop_size=32))
    assert ingest_plate(small_plate, store, IngestSettings(crop_size=32)).status == "skipped"
    assert ingest_plate(small_plate, store, IngestSettings(crop_size=24)).status == "complete"  # settings changed
    assert len(store.read("cells")) == store.read("ledger")["N_Cells"].sum()
    led = store.read("ledger")
    assert len(led) == 1 and led["Status"].iloc[0] == "complete"
    assert first.n_fields == led["N_Fields"].iloc[0]


def test_faults_are_quarantined_and_the_rest_is_kept(faulty_plate, tmp_path):
    store = Store(tmp_path / "store")
    result = ingest_plate(faulty_plate, store, IngestSettings(crop_size=24))
    assert result.status == "complete"
    faults = pd.read_csv(faulty_plate / "ground_truth" / "faults.csv")
    quarantine = store.read("quarantine")
    bad_fields = set(zip(faults["well"], faults["site"]))
    assert set(zip(quarantine["Metadata_Well"], quarantine["Metadata_Site"])) == bad_fields
    for fault in faults.itertuples():
        q = quarantine[(quarantine.Metadata_Well == fault.well) & (quarantine.Metadata_Site == fault.site)]
        assert q["Reason"].str.len().min() > 5
    expected = {"truncated": "unreadable", "zero_bytes": "unreadable", "missing_channel": "missing channel",
                "duplicate_site": "duplicate", "wrong_dtype": "dtype", "wrong_shape": "shape"}
    for fault in faults.itertuples():
        q = quarantine[(quarantine.Metadata_Well == fault.well) & (quarantine.Metadata_Site == fault.site)]
        assert q["Reason"].str.contains(expected[fault.fault]).any(), (fault, q["Reason"].tolist())
    fields = store.read("fields")
    assert len(fields) == 24 * 2 - len(bad_fields)
    assert not set(zip(fields["Metadata_Well"], fields["Metadata_Site"])) & bad_fields
    # a refused field leaves a gap in its well: each well's NGFF metadata lists exactly the fields
    # written, every listed image exists, and a field's index is its site's rank in the well
    plate = open_plate(store.plate_zarr("F1"))
    for well, rows in fields.groupby("Metadata_Well"):
        r, c, _ = rows["Metadata_FieldPath"].iloc[0].split("/")
        listed = [im["path"] for im in plate[f"{r}/{c}"].attrs["ome"]["well"]["images"]]
        assert sorted(listed) == sorted(p.split("/")[2] for p in rows["Metadata_FieldPath"]), well
        assert all(f"{r}/{c}/{k}/0" in plate for k in listed)
        assert list(rows["Metadata_FieldPath"].str.split("/").str[2].astype(int)) == list(rows["Metadata_Site"] - 1)
    assert (fields["Metadata_FieldPath"].str.endswith("/1") & (fields.groupby("Metadata_Well")["Metadata_Site"]
                                                               .transform("size") == 1)).any()  # a gap was tried


def test_interrupted_ingest_resumes_to_the_same_store(small_plate, tmp_path, monkeypatch):
    clean = Store(tmp_path / "clean")
    ingest_plate(small_plate, clean, IngestSettings(crop_size=32))
    broken = Store(tmp_path / "broken")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill during segmentation")

    monkeypatch.setattr(ing, "segment_and_tile", crash)
    with pytest.raises(KeyboardInterrupt):
        ingest_plate(small_plate, broken, IngestSettings(crop_size=32))
    assert not broken.plate_zarr("T1").exists()  # nothing half-written is visible
    assert broken.read("ledger").empty
    monkeypatch.undo()
    assert ingest_plate(small_plate, broken, IngestSettings(crop_size=32)).status == "complete"
    for name in ("cells", "fields", "platemap", "quarantine"):
        pd.testing.assert_frame_equal(clean.read(name), broken.read(name))
    a = zarr.open_group(str(clean.crops_zarr("T1")), mode="r")["crops"][:]
    b = zarr.open_group(str(broken.crops_zarr("T1")), mode="r")["crops"][:]
    np.testing.assert_array_equal(a, b)
    assert not (broken.root / ".staging" / "T1").exists()


def test_field_tiles_and_focus_flag(small_plate, tmp_path):
    import pandas as pd
    import zarr

    from pipeline.ingest import compute_illumination, plan_plate, segment_and_tile, write_images
    from pipeline.store.schema import read_table

    settings = IngestSettings(crop_size=32, field_tile_size=128)
    plan = plan_plate(small_plate, Store(tmp_path / "store"), settings)
    fields, _, stats = write_images(plan, settings)
    compute_illumination(plan, fields, settings, stats)
    cells, field_table = segment_and_tile(plan, fields, settings, processes=1)
    tiles = zarr.open_group(str(plan.staging / "crops.zarr"), mode="r")["tiles"]
    table = read_table("tiles", plan.staging / "tiles.parquet")
    assert tiles.shape == (4 * len(fields), 5, 128, 128) and len(table) == tiles.shape[0]
    validate_array(tiles, "crops", "tiles")
    assert (table["Metadata_TileIndex"] == range(len(table))).all()
    truth = pd.read_csv(small_plate / "ground_truth" / "fields.csv")
    flagged = field_table.merge(truth, on=["Metadata_Well", "Metadata_Site"])
    assert (flagged["QC_OutOfFocus"] == flagged["out_of_focus"].astype(bool)).all()
    # every field's nuclei are found on the corrected DNA: a saturated speck once pulled the
    # threshold above the nuclei of A09 site 1 (4 of 10 found), which also made it look blurred
    assert (abs(flagged["Count_Nuclei"] - flagged["n_nuclei"]) <= 0.3 * flagged["n_nuclei"] + 1).all()


@pytest.mark.parametrize("module", ["pipeline.ingest.run", "pipeline.ingest.fields", "pipeline.images.segmentation.cellpose"])
def test_plate_fingerprint_ignores_docstrings_and_comments_but_not_logic(ingested, small_plate, monkeypatch, module):
    """A docstring or comment edit to a stage module (the cellpose one included, which ingestion
    imports only on demand) leaves the plate current; a logic edit redoes it."""
    import pipeline.store.provenance as prov

    store, _ = ingested
    settings = IngestSettings(crop_size=32)
    assert ingest_plan.is_current(ingest_plan.plan_plate(small_plate, store, settings), store)
    real = prov._source

    def edited(change):
        def source(name):
            text = real(name)
            return change(text) if name == module else text
        return source

    def fingerprint_with(change):
        monkeypatch.setattr(prov, "_source", edited(change))
        prov.code_fingerprint.cache_clear()
        try:
            return ingest_plan.is_current(ingest_plan.plan_plate(small_plate, store, settings), store)
        finally:
            monkeypatch.setattr(prov, "_source", real)
            prov.code_fingerprint.cache_clear()

    first_doc = real(module).split('"""')[1]
    assert fingerprint_with(lambda t: t.replace(first_doc, first_doc + " A clearer sentence.", 1))
    assert fingerprint_with(lambda t: t + "\n# a comment at the end\n")
    assert fingerprint_with(lambda t: t.replace("\n\n\n", "\n\n\n\n", 1))  # layout
    assert not fingerprint_with(lambda t: t + "\nLOGIC_CHANGED = 1\n")
    assert "pipeline.images.segmentation.cellpose" in prov.module_closure(*ingest_plan.STAGE_MODULES)


def _arrays(group: zarr.Group, prefix: str = "") -> dict:
    """Every array below ``group`` by path, and every sub-group's attributes."""
    out = {}
    for name, node in group.members():
        path = f"{prefix}{name}"
        if isinstance(node, zarr.Array):
            out[path] = node[...]
        else:
            out[f"{path}/.attrs"] = dict(node.attrs)
            out.update(_arrays(node, f"{path}/"))
    return out


def test_one_and_two_processes_write_identical_stores(faulty_plate, tmp_path):
    """Both passes over a plate (write + illumination statistics, then segmentation + crops) run
    in worker processes; pixels, labels, illumination functions, crops and every table must not
    depend on how many there are, quarantined fields (gaps in the wells) included."""
    settings = IngestSettings(crop_size=24)
    one, two = Store(tmp_path / "one"), Store(tmp_path / "two")
    r1 = ingest_plate(faulty_plate, one, settings, processes=1)
    r2 = ingest_plate(faulty_plate, two, settings, processes=2)
    assert r1.n_quarantined > 0 and (r1.n_fields, r1.n_cells) == (r2.n_fields, r2.n_cells)
    assert {"read", "write", "illumination_stats", "segment", "crops"} <= set(r2.worker_seconds)
    for name in ("cells", "fields", "platemap", "quarantine"):
        pd.testing.assert_frame_equal(one.read(name), two.read(name), obj=name)
    for where in (one.plate_zarr, one.illumination_zarr, one.crops_zarr):
        ga, gb = (zarr.open_group(str(where("F1")).replace(str(one.root), str(s.root)), mode="r") for s in (one, two))
        a, b = _arrays(ga), _arrays(gb)
        assert a.keys() == b.keys() and len(a) >= 1 and dict(ga.attrs) == dict(gb.attrs)
        for k in a:
            if k.endswith(".attrs"):
                assert a[k] == b[k], k
            else:
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_illumination_qc_pngs_are_published_and_a_failing_qc_thread_fails_the_plate(ingested, small_plate, tmp_path,
                                                                                    monkeypatch):
    """The QC PNGs are drawn in a thread while the workers segment; they are in the store after
    ingestion, and an error there is the plate's error, not a silent loss."""
    store, _ = ingested
    plate = store.read("fields")["Metadata_Plate"].iloc[0]
    pngs = sorted(p.name for p in (store.root / "illumination" / plate).glob("*.png"))
    assert pngs == sorted(f"{c}.png" for c in CHANNELS)
    from matplotlib import colormaps
    from PIL import Image

    viridis = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    for name in pngs:  # viridis pixels, from the function's minimum (index 0) to its maximum (255)
        with Image.open(store.root / "illumination" / plate / name) as im:
            rgb = np.asarray(im.convert("RGB")).reshape(-1, 3)
            assert max(im.size) <= 540 and "Range" in im.text
        index = {tuple(c): i for i, c in enumerate(viridis)}
        seen = {index[tuple(c)] for c in np.unique(rgb, axis=0)}
        assert min(seen) == 0 and max(seen) == 255

    def broken(plan, funcs):
        raise OSError("disk full while drawing the QC")

    monkeypatch.setattr(ing, "illumination_qc", broken)
    with pytest.raises(OSError, match="disk full"):
        ingest_plate(small_plate, Store(tmp_path / "s"), IngestSettings(crop_size=32, features="none"))


def test_focus_score_separates_defocused_fields_whatever_their_nuclei():
    """About one over the nuclei's edge width: in-focus fields with 5 or 25 nuclei score alike,
    defocused ones below 0.6 x that; no nuclei gives NaN."""
    from pipeline.images.illumination import apply
    from pipeline.images.segmentation.classical import segment_nuclei
    from pipeline.synthetic import DMSO, illumination_fields, render_field

    rng = np.random.default_rng(0)
    illum = illumination_fields(256, 0)
    scores = {False: [], True: []}
    for i in range(12):
        oof = i % 3 == 0
        image = render_field(DMSO, size=256, rng=rng, illumination=illum, out_of_focus=oof,
                             cell_density=0.5 + i / 6)[0]
        dna = apply(image, illum, dark=100)[0]
        scores[oof].append(focus_score(dna, segment_nuclei(dna)))
    sharp, blurred = np.array(scores[False]), np.array(scores[True])
    assert sharp.min() > 0.85 * np.median(sharp)
    assert blurred.max() < 0.6 * np.median(sharp)
    assert np.isnan(focus_score(np.ones((64, 64), np.float32), np.zeros((64, 64), np.uint32)))


def test_code_fingerprints_are_kept_by_content_across_processes(tmp_path, monkeypatch):
    """A second process reads each module's digest from the cache instead of parsing it; a
    corrupt or unwritable cache only costs the parse."""
    import json
    import subprocess
    import sys

    import pipeline.store.provenance as prov

    code = ("import sys, ast, pipeline.store.provenance as p\n"
            "calls = []\nreal = ast.parse\n"
            "ast.parse = lambda *a, **k: (calls.append(1), real(*a, **k))[1]\n"
            "print(p.code_fingerprint('pipeline.ingest.plan'), len(calls))\n")
    env = {**__import__("os").environ, "CMCL_CACHE_DIR": str(tmp_path / "cache")}
    run = lambda: subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,  # noqa: E731
                                 check=True).stdout.split()
    first, second = run(), run()
    assert first[0] == second[0] and int(first[1]) > 10 and second[1] == "0"
    cache = tmp_path / "cache" / "code-fingerprints.json"
    assert len(json.loads(cache.read_text())) == int(first[1])
    cache.write_text("{not json")
    assert run() == first  # parsed again, same fingerprint, cache rewritten
    assert json.loads(cache.read_text())
    monkeypatch.setenv("CMCL_CACHE_DIR", str(tmp_path / "cache"))
    prov.code_fingerprint.cache_clear()
    prov._cached_records.cache_clear()
    assert prov.code_fingerprint("pipeline.ingest.plan") == first[0]  # in-process: the same value
