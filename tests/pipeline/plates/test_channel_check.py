"""Real exports as they arrive: no index file, embedded Harmony descriptions, a map the pixels
contradict, a LoadData CSV whose paths name another machine's folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pipeline.plates.vendors.phenix import tiff_acquisition, tiff_channel_name
from pipeline.plates.channel_check import ChannelMapError, check_channels
from pipeline.plates.discovery import PlateLayoutError, discover_plate

DATA = Path(__file__).resolve().parents[2] / "data"
SPARSE = DATA / "phenix_BR00121482"
DENSE = DATA / "phenix_BR00143976_C03"


def _no_index(src: Path, dst: Path, *, strip_descriptions: bool = False) -> Path:
    """The export's TIFFs without Index.idx.xml; optionally rewritten without their Harmony
    description (tag 65500): same pixels, no embedded metadata."""
    dst.mkdir(parents=True)
    for f in sorted((src / "Images").glob("*.tiff")):
        if strip_descriptions:
            tifffile.imwrite(dst / f.name, tifffile.imread(f))
        else:
            shutil.copy2(f, dst / f.name)
    return dst


def test_harmony_descriptions_name_channels_where_they_hold_records():
    names = {c: tiff_channel_name(next((SPARSE / "Images").glob(f"*-ch{c}sk*"))) for c in range(1, 7)}
    # as the plate's Index.idx.xml says (Harmony V5 writes the measurement's records into each TIFF)
    assert names == {1: "Alexa 647", 2: "Alexa 568", 3: "488 long", 4: "Alexa 488", 5: "HOECHST 33342",
                     6: "Brightfield H"}
    # Harmony V7 (the dense field) writes only the image's ids: no name
    assert tiff_acquisition({"5": next((DENSE / "Images").glob("*-ch5sk*"))}) is None


@pytest.mark.parametrize("src,strip", [(DENSE, False), (SPARSE, True)])
def test_real_fields_without_index_find_dna_from_the_pixels_and_invent_no_stain(src, strip, tmp_path):
    folder = _no_index(src, tmp_path / "plate", strip_descriptions=strip)
    listing = discover_plate(folder)
    assert listing.channel_source == "unresolved" and "DNA" not in listing.channels
    assert any("tag 65500) name no channel" in n for n in listing.notes)
    checked = check_channels(listing)
    assert checked.channel_source == "pixels"
    assert checked.channels == ("DNA", "ch1", "ch2", "ch3", "ch4", "ch6")  # no stain name the data did not give
    assert checked.channel_map["5"] == "DNA" and set(checked.images["Metadata_Channel"]) == set(checked.channels)
    assert any(n.startswith("DNA is ch5, found from the pixels") for n in checked.notes)


def test_sparse_field_without_index_reads_its_embedded_names_and_the_pixels_agree(tmp_path):
    listing = check_channels(discover_plate(_no_index(SPARSE, tmp_path / "plate")))
    assert listing.channel_source == "metadata" and listing.channels == ("DNA", "ER", "RNA", "AGP", "Mito")
    assert listing.channel_map == {"1": "Mito", "2": "AGP", "3": "RNA", "4": "ER", "5": "DNA"}


def _swapped(tmp_path: Path) -> Path:
    """The sparse export with its index, the Hoechst (ch5) and Alexa 488 (ch4) files swapped."""
    folder = shutil.copytree(SPARSE / "Images", tmp_path / "swapped")
    a, b = folder / "r01c01f01p01-ch5sk1fk1fl1.tiff", folder / "r01c01f01p01-ch4sk1fk1fl1.tiff"
    a.rename(folder / "tmp.tiff")
    b.rename(a)
    (folder / "tmp.tiff").rename(b)
    return folder


def test_metadata_naming_a_cytoplasmic_channel_as_dna_is_challenged_in_one_line(tmp_path):
    folder = _swapped(tmp_path)
    with pytest.raises(ChannelMapError) as err:
        check_channels(discover_plate(folder))
    msg = str(err.value)
    assert "\n" not in msg and str(folder) in msg
    assert "metadata names ch5 as DNA, but the pixels pick ch4" in msg and "--channels" in msg


def test_channels_flag_naming_a_cytoplasmic_channel_as_dna_warns_and_goes_on(tmp_path):
    listing = check_channels(discover_plate(_swapped(tmp_path), channel_map="DNA=5,ER=2"))
    assert listing.channel_source == "user" and listing.channel_map == {"5": "DNA", "2": "ER"}
    warning = [n for n in listing.notes if n.startswith("warning:")]
    assert len(warning) == 1 and "--channels names ch5 as DNA, but the pixels pick ch4" in warning[0]


def test_unclear_pixels_stop_before_writing_with_the_scores_and_the_flag(tmp_path):
    folder = tmp_path / "same"
    folder.mkdir()
    hoechst = next((DENSE / "Images").glob("*-ch5sk*"))
    for c in (1, 2, 3):  # three channels, one image: no channel is the nuclear stain more than another
        shutil.copy2(hoechst, folder / f"r03c03f03p01-ch{c}sk1fk1fl1.tiff")
    with pytest.raises(ChannelMapError) as err:
        check_channels(discover_plate(folder))
    msg = str(err.value)
    assert "\n" not in msg and "do not tell the nuclear stain" in msg
    assert "ch1 0.50, ch2 0.50, ch3 0.50" in msg and "--channels DNA=N" in msg


def _loaddata_beside_its_tiffs(tmp_path: Path) -> Path:
    """The real pe2loaddata CSV (PathName 'tests/data/Version1/images/', another machine's
    folder) in one folder with its six TIFFs, as a user copies an export."""
    folder = tmp_path / "BR00121482"
    folder.mkdir()
    shutil.copy2(SPARSE / "load_data_version1.csv", folder)
    for f in (SPARSE / "Images").glob("*.tiff"):
        shutil.copy2(f, folder)
    return folder


def test_loaddata_paths_that_moved_are_rerooted_beside_the_csv(tmp_path):
    listing = discover_plate(_loaddata_beside_its_tiffs(tmp_path))
    assert listing.layout == "loaddata" and not listing.refused
    assert len(listing.images) == 5 and all((listing.root / f).is_file() for f in listing.images["File"])
    dna = listing.images.set_index("Metadata_Channel").loc["DNA", "File"]
    assert dna == "r01c01f01p01-ch5sk1fk1fl1.tiff"
    (note,) = [n for n in listing.notes if "re-rooted" in n]
    assert "5 image path(s) re-rooted" in note and "tests/data/Version1/images/" in note
    assert check_channels(listing).channel_source == "metadata"  # the pixels agree: DNA is ch5


def test_loaddata_file_name_found_twice_is_an_error_naming_both(tmp_path):
    folder = _loaddata_beside_its_tiffs(tmp_path)
    name = "r01c01f01p01-ch5sk1fk1fl1.tiff"
    for sub in ("a", "b"):
        (folder / sub).mkdir()
        shutil.copy2(folder / name, folder / sub / name)
    (folder / name).unlink()
    with pytest.raises(PlateLayoutError) as err:
        discover_plate(folder)
    assert str(folder / "a" / name) in str(err.value) and str(folder / "b" / name) in str(err.value)


def test_ingested_plate_records_where_its_map_comes_from(tmp_path):
    from pipeline.ingest.run import IngestSettings, ingest_plate
    from pipeline.store.omezarr import open_plate
    from pipeline.store.paths import Store
    from pipeline.store.verify import verify_store

    folder = _no_index(DENSE, tmp_path / "C03")
    store = Store(tmp_path / "store")
    result = ingest_plate(folder, store, IngestSettings(crop_size=16), processes=1)
    assert result.channel_source == "pixels" and result.n_fields == 1 and result.n_cells > 20
    assert result.channel_map == ("DNA=ch5; unassigned: ch1, ch2, ch3, ch4, ch6; source: the pixels (DNA only; "
                                  "no metadata names the other stains)")
    attrs = open_plate(store.plate_zarr("C03")).attrs["cmcl"]
    assert attrs["channel_source"] == "pixels" and attrs["channels"] == ["DNA", "ch1", "ch2", "ch3", "ch4", "ch6"]
    assert store.read("ledger").iloc[0]["ChannelSource"] == "pixels"
    cells = store.read("cells")
    # no cytoplasm stain known: cells are grown from nothing, each cell is its nucleus
    assert np.allclose(cells["AreaShape_CellArea"], cells["AreaShape_NucleusArea"])
    assert cells["Intensity_Mean_ER"].isna().all() and cells["Intensity_Mean_ch2"].notna().all()
    assert verify_store(store.root) == []
