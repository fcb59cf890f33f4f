import os
import time

import pandas as pd
import pytest

from pipeline.plates.discovery import PlateLayoutError, discover_plate, fingerprint_files, parse_channel_map, read_platemap
from pipeline.synthetic import generate


def test_imagexpress_listing_ignores_thumbnails(small_plate):
    listing = discover_plate(small_plate)
    assert listing.layout == "imagexpress" and listing.plate == "T1"
    assert len(listing.images) == 12 * 2 * 5
    assert not listing.images["File"].str.contains("thumb").any()
    assert set(listing.images["Metadata_Channel"]) == {"DNA", "ER", "RNA", "AGP", "Mito"}
    assert listing.platemap is not None and listing.unmatched == []


@pytest.mark.parametrize("layout", ["phenix", "loaddata"])
def test_other_layouts_list_the_same_fields(tmp_path, layout):
    plate = generate(tmp_path, layout=layout, plate_id="L1", n_wells=3, sites=2, size=64, seed=1, )
    listing = discover_plate(plate)
    assert listing.layout == layout
    assert len(listing.images) == 3 * 2 * 5
    assert sorted(set(listing.images["Metadata_Well"])) == ["A01", "A02", "A03"]
    assert sorted(set(listing.images["Metadata_Site"])) == [1, 2]


def test_loaddata_refuses_paths_outside_the_plate(tmp_path):
    plate = generate(tmp_path, layout="loaddata", plate_id="L2", n_wells=1, sites=1, size=64, seed=1)
    csv = next(p for p in plate.glob("*.csv") if "FileName_Orig" in p.read_text())
    table = pd.read_csv(csv)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    src = plate / table.loc[0, "PathName_OrigDNA"] / table.loc[0, "FileName_OrigDNA"]
    (outside / "dna.tif").write_bytes(src.read_bytes())
    table.loc[0, "PathName_OrigDNA"] = os.path.relpath(outside, csv.parent)
    table.loc[0, "FileName_OrigDNA"] = "dna.tif"
    table.to_csv(csv, index=False)
    listing = discover_plate(plate)
    [refused] = listing.refused
    assert "path outside the plate folder" in refused["Reason"] and refused["File"] == str((outside / "dna.tif").resolve())
    assert (refused["Metadata_Well"], refused["Metadata_Site"], refused["Metadata_Channel"]) == ("A01", 1, "DNA")
    assert "DNA" not in set(listing.images["Metadata_Channel"])
    allowed = discover_plate(plate, allow_outside=True)
    assert "DNA" in set(allowed.images["Metadata_Channel"])


def test_no_match_error_lists_what_was_seen(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "image_001.tif").write_bytes(b"")
    with pytest.raises(PlateLayoutError, match="image_001.tif"):
        discover_plate(tmp_path)


def test_channel_map():
    assert parse_channel_map("DNA=5,ER=4,RNA=3,AGP=2,Mito=1")["5"] == "DNA"
    with pytest.raises(ValueError, match="not Cell Painting"):
        parse_channel_map("DNA=1,ER=2,RNA=3,AGP=4,Actin=5")
    assert parse_channel_map("DNA=1") == {"1": "DNA"}  # a subset is fine as long as DNA is in it
    with pytest.raises(ValueError, match="must name the DNA channel"):
        parse_channel_map("ER=2")
    with pytest.raises(ValueError, match="NAME=NUMBER"):
        parse_channel_map("DNA1")


def test_platemap_checks(tmp_path):
    p = tmp_path / "platemap.csv"
    p.write_text("Metadata_Well,Metadata_SMILES\nA1,CCO\nB02,\n")
    pm = read_platemap(p, plate="P")
    assert list(pm["Metadata_Well"]) == ["A01", "B02"]
    assert list(pm["Metadata_ControlType"]) == ["trt", "negcon"]
    p.write_text("Metadata_Well\nA01\nA01\n")
    with pytest.raises(ValueError, match="more than once"):
        read_platemap(p, plate="P")
    p.write_text("Metadata_Well\n")
    with pytest.raises(ValueError, match="empty"):
        read_platemap(p, plate="P")
    p.write_text("Well\nA01\n")
    with pytest.raises(ValueError, match="no Metadata_Well"):
        read_platemap(p, plate="P")


def test_fingerprint_sees_changes(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"1")
    fp = fingerprint_files(tmp_path, ["a.tif"])
    assert fp == fingerprint_files(tmp_path, ["a.tif"])
    time.sleep(0.01)
    (tmp_path / "a.tif").write_bytes(b"12")
    assert fp != fingerprint_files(tmp_path, ["a.tif"])
    assert fp != fingerprint_files(tmp_path, ["a.tif"], extra="settings")


def test_channel_map_from_a_file(tmp_path):
    toml = tmp_path / "channels.toml"
    toml.write_text("[channels]\nDNA = 5\nER = 4\nRNA = 3\nAGP = 2\nMito = 1\n")
    assert parse_channel_map(toml)["5"] == "DNA"
    assert parse_channel_map(str(toml)) == parse_channel_map("DNA=5,ER=4,RNA=3,AGP=2,Mito=1")
    flat = tmp_path / "flat.toml"
    flat.write_text('DNA = 1\nER = 2\nRNA = 3\nAGP = 4\nMito = "5"\n')
    assert parse_channel_map(flat) == parse_channel_map(None)
    bad = tmp_path / "bad.toml"
    bad.write_text("ER = 2\nRNA = 3\n")
    with pytest.raises(ValueError, match="bad.toml.*must name the DNA channel"):
        parse_channel_map(bad)
    bad.write_text("DNA = [1")
    with pytest.raises(ValueError, match="bad.toml: cannot read"):
        parse_channel_map(bad)
    with pytest.raises(ValueError, match="missing.toml"):
        parse_channel_map(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="must be .toml"):
        parse_channel_map(tmp_path / "map.json")
    yaml = pytest.importorskip("yaml")
    yml = tmp_path / "channels.yaml"
    yml.write_text(yaml.safe_dump({"channels": {"DNA": 1, "ER": 2, "RNA": 3, "AGP": 4, "Mito": 5}}))
    assert parse_channel_map(yml) == parse_channel_map(None)


def test_phenix_without_plane_1_ingests_the_lowest_plane(tmp_path):
    plate = generate(tmp_path, layout="phenix", plate_id="Z1", n_wells=2, sites=1, size=64, seed=1)
    for f in sorted((plate / "Images").glob("*.tiff")):
        for plane in (2, 3):  # an export of planes p02 and p03 only
            (f.parent / f.name.replace("p01", f"p{plane:02d}")).write_bytes(f.read_bytes())
        f.unlink()
    listing = discover_plate(plate)
    assert len(listing.images) == 2 * 5 and listing.images["File"].str.contains("p02").all()
    planes = [i for i in listing.ignored if "focal plane 3" in i]
    assert len(planes) == 2 * 5 and "plane 2 of this field is ingested" in planes[0]


def test_every_file_counts_in_the_fingerprint_and_unused_ones_are_listed_once(tmp_path):
    from pipeline.ingest import IngestSettings, plan_plate
    from pipeline.store.paths import Store

    plate = generate(tmp_path / "in", plate_id="U1", n_wells=2, sites=1, size=64, seed=1)
    for f in plate.glob("*.tif"):
        f.rename(f.with_suffix(".TIF"))
    st = Store(tmp_path / "store")
    before = plan_plate(plate, st, IngestSettings())
    assert len(before.listing.images) == 2 * 5  # upper-case extensions are images too
    for i in range(3):
        (plate / f"notes{i}.txt").write_text("hello")
    after = plan_plate(plate, st, IngestSettings())
    assert after.fingerprint != before.fingerprint
    unused = [i for i in after.listing.ignored if i.startswith("notes")]
    assert len(unused) == 3 and all("unused" in i for i in unused)
    assert len(after.listing.ignored) == len(set(after.listing.ignored))


def test_a_channel_outside_the_channel_map_is_ignored_with_that_reason(tmp_path):
    plate = generate(tmp_path, layout="imagexpress", plate_id="CM", n_wells=1, sites=1, size=64, seed=1)
    w1 = next(p for p in plate.glob("*_w1*.tif") if "_thumb" not in p.name)
    extra = plate / w1.name.replace("_w1", "_w6")
    extra.write_bytes(w1.read_bytes())
    listing = discover_plate(plate)
    assert listing.ignored == [f"{extra.name}: channel w6 is not in the channel map"]
    assert len(listing.images) == 5 and listing.unmatched == [] and listing.refused == []
