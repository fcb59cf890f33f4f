"""Vendor metadata (Harmony index, HTD, LoadData) and plates with a subset of the five stains.

The Harmony tests read the real Phenix export in ``tests/data/phenix_BR00121482`` (see
``tests/data/README.md``); the subset tests use small generated plates.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from pipeline.plates.acquisition import AcquisitionError, auto_channel_map, stain_role
from pipeline.plates.vendors.imagexpress import read_htd
from pipeline.plates.vendors.phenix import flatfield_image, read_harmony_index
from pipeline.ingest.run import IngestSettings, ingest_plate
from pipeline.store.omezarr import open_plate, read_field, read_labels
from pipeline.plates.channel_maps import parse_channel_map
from pipeline.plates.discovery import discover_plate
from pipeline.store.paths import Store
from pipeline.synthetic import generate

DATA = Path(__file__).resolve().parents[2] / "data"
PHENIX = DATA / "phenix_BR00121482"


def test_harmony_v5_index_gives_channels_pixel_size_objective_and_flatfield():
    acq = read_harmony_index(PHENIX / "Images" / "Index.idx.xml")
    assert acq.plate == "BR00121482" and acq.wells == ("A01",) and acq.n_fields == 1
    assert [c.name for c in acq.channels] == ["Alexa 647", "Alexa 568", "488 long", "Alexa 488", "HOECHST 33342",
                                             "Brightfield"]
    assert acq.channel("5").excitation_nm == 405 and acq.channel("5").emission_nm == 456
    assert acq.pixel_size_um == pytest.approx((0.598, 0.598), abs=1e-3)
    assert acq.objective == "20x, NA 1"
    # the same mapping pe2loaddata's config (tests/data/phenix_BR00121482/config_v1.yml) writes by hand
    assert auto_channel_map(acq) == {"1": "Mito", "2": "AGP", "3": "RNA", "4": "ER", "5": "DNA"}
    assert set(acq.flatfield) == {"1", "2", "3", "4", "5", "6"}
    assert acq.flatfield["3"]["ChannelName"] == "488 long"
    ff = flatfield_image(acq.flatfield["5"])
    assert ff.shape == (1080, 1080) and ff.mean() == pytest.approx(1.0, abs=1e-4)
    assert ff[540, 540] > ff[0, 0] and ff[540, 540] > ff[-1, -1]  # vignetting: brightest near the centre


@pytest.mark.parametrize("name, role", [
    ("HOECHST 33342", "DNA"), ("DAPI", "DNA"), ("Alexa 488", "ER"), ("Concanavalin A", "ER"), ("488 long", "RNA"),
    ("SYTO 14", "RNA"), ("Alexa 568", "AGP"), ("Phalloidin/WGA", "AGP"), ("Alexa 647", "Mito"),
    ("MitoTracker Deep Red", "Mito"), ("Brightfield", None), ("Digital Phase Contrast", None), ("Texas Red", "AGP"),
    ("Cy5", "Mito")])
def test_stain_names_map_to_cell_painting_roles(name, role):
    assert stain_role(name) == role


def test_htd_wave_names_give_the_channel_map(tmp_path):
    htd = tmp_path / "P1.HTD"
    htd.write_text('"HTSInfoFile", Version 1.0\n"Sites", TRUE\n"XSites", 3\n"YSites", 3\n"NWavelengths", 6\n'
                   '"WaveName1", "Cy5"\n"WaveName2", "DAPI"\n"WaveName3", "FITC"\n"WaveName4", "Cy3"\n'
                   '"WaveName5", "Texas Red"\n"WaveName6", "Brightfield"\n"EndFile"\n')
    acq = read_htd(htd)
    assert acq.n_fields == 9
    assert auto_channel_map(acq) == {"1": "Mito", "2": "DNA", "3": "ER", "4": "RNA", "5": "AGP"}


def test_two_dna_stains_or_none_is_one_clear_error(tmp_path):
    htd = tmp_path / "P1.HTD"
    htd.write_text('"WaveName1", "DAPI"\n"WaveName2", "Hoechst"\n')
    with pytest.raises(AcquisitionError, match=r"P1.HTD: channels 1 and 2 both look like DNA"):
        auto_channel_map(read_htd(htd))
    htd.write_text('"WaveName1", "Brightfield"\n')
    with pytest.raises(AcquisitionError, match=r"P1.HTD: no channel is a DNA stain"):
        auto_channel_map(read_htd(htd))


def test_channel_maps_may_name_a_subset_containing_dna():
    assert parse_channel_map("DNA=5") == {"5": "DNA"}
    assert parse_channel_map("DNA=1,RNA=2,AGP=3") == {"1": "DNA", "2": "RNA", "3": "AGP"}
    with pytest.raises(ValueError, match="must name the DNA channel"):
        parse_channel_map("RNA=2,AGP=3")


def test_real_phenix_folder_ingests_with_the_stains_its_index_names(tmp_path):
    listing = discover_plate(PHENIX)
    assert listing.layout == "phenix" and listing.plate == "BR00121482"
    assert listing.unmatched == [] and len(listing.ignored) == 1 and "ch6" in listing.ignored[0]
    store = Store(tmp_path / "store")
    result = ingest_plate(PHENIX, store, IngestSettings(crop_size=32), processes=1)
    assert result.status == "complete" and result.n_quarantined == 0 and result.n_cells > 0
    assert result.channel_map.startswith("DNA=ch5 (HOECHST 33342), ER=ch4 (Alexa 488), RNA=ch3 (488 long)")
    assert "ignored: ch6 (Brightfield)" in result.channel_map
    assert store.read("quarantine").empty
    path = store.plate_zarr("BR00121482")
    plate = open_plate(path)
    image = read_field(plate, "A/1/0")
    for k, ch in enumerate((5, 4, 3, 2, 1)):  # DNA, ER, RNA, AGP, Mito
        np.testing.assert_array_equal(image[k], tifffile.imread(PHENIX / "Images" / f"r01c01f01p01-ch{ch}sk1fk1fl1.tiff"))
    assert plate.attrs["cmcl"]["ignored"][0].startswith("Images/r01c01f01p01-ch6")

    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    node = next(iter(Reader(parse_url(str(path / "A" / "1" / "0")))()))
    scale = node.metadata["coordinateTransformations"][0][0]["scale"]
    assert scale == pytest.approx([1.0, 0.598, 0.598], abs=1e-3)
    assert [a.get("unit") for a in node.metadata["axes"]] == [None, "micrometer", "micrometer"]
    assert node.metadata["channel_names"] == ["DNA", "ER", "RNA", "AGP", "Mito"]
    omero = plate["A/1/0"].attrs["ome"]["omero"]["channels"]
    assert [(c["stain"], c["emission_wavelength"]) for c in omero] == [
        ("HOECHST 33342", 456), ("Alexa 488", 522), ("488 long", 599), ("Alexa 568", 599), ("Alexa 647", 706)]
    labels = plate["A/1/0/labels/nuclei"].attrs["ome"]["multiscales"][0]["datasets"][0]
    assert labels["coordinateTransformations"][0]["scale"] == pytest.approx([0.598, 0.598], abs=1e-3)


def test_cellprofiler_outputs_beside_a_plate_are_not_quarantined():
    listing = discover_plate(DATA / "phenix_BR00143976_C03", channel_map="DNA=5,ER=2,RNA=6,AGP=3,Mito=4")
    assert listing.unmatched == []
    assert sorted(Path(i.split(":")[0]).parent.name for i in listing.ignored) == ["Images", "cellprofiler", "cellprofiler"]


@pytest.fixture(scope="module")
def plain_plate(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("subset"), plate_id="S1", n_wells=2, sites=1, size=160, seed=11)


@pytest.mark.parametrize("spec, channels", [("DNA=1", ("DNA",)), ("DNA=1,RNA=3,AGP=4", ("DNA", "RNA", "AGP"))])
def test_plates_with_a_subset_of_stains_ingest_and_segment(plain_plate, tmp_path, spec, channels):
    store = Store(tmp_path / "store")
    result = ingest_plate(plain_plate, store, IngestSettings(channel_map=spec, crop_size=24), processes=1)
    assert result.status == "complete" and result.n_quarantined == 0 and result.n_cells > 0
    plate = open_plate(store.plate_zarr("S1"))
    unmapped = [i for i in plate.attrs["cmcl"]["ignored"] if "not in the channel map" in i]
    assert len(unmapped) == 2 * (5 - len(channels))  # the unmapped channels' files, per field
    fields = store.read("fields")
    assert fields["Count_Nuclei"].min() > 0
    path = fields["Metadata_FieldPath"].iloc[0]
    assert read_field(plate, path).shape[0] == len(channels)
    nuclei, cells = read_labels(plate, path, "nuclei"), read_labels(plate, path, "cells")
    if channels == ("DNA",):
        np.testing.assert_array_equal(cells, nuclei)  # nuclei only: each cell is its nucleus
    else:
        assert (cells > 0).sum() > 1.5 * (nuclei > 0).sum()  # cells grown on AGP reach beyond nuclei
    crops = zarr.open_group(str(store.crops_zarr("S1")), mode="r")
    assert crops.attrs["channels"] == list(channels) and crops["crops"].shape[1] == len(channels)
    cells_table = store.read("cells")
    for c in ("DNA", "ER", "RNA", "AGP", "Mito"):
        assert cells_table[f"Intensity_Mean_{c}"].isna().all() == (c not in channels)

    from cmcl_model.data.pairs import require_channels

    with pytest.raises(ValueError, match=r"training needs crops with channels \['DNA', 'ER', 'RNA', 'AGP', 'Mito'\]"
                                         r".*S1 has \[" + repr(channels[0])):
        require_channels(store)
