"""Vendor layouts as a registry: adding one is a module plus one registration line.

``Tiny`` below is such a module, written here (it is not shipped): a file-name pattern, the
name its instrument would write, and ``register(Tiny())``. The generator writes a plate in it,
discovery finds it with ``layout='auto'`` and ingestion stores exactly the pixels it stores for
the same plate in ImageXpress layout.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import numpy as np
import pytest

from pipeline.ingest.run import IngestSettings, ingest_plate
from pipeline.plates.acquisition import Acquisition
from pipeline.plates.discovery import discover_plate
from pipeline.plates.vendors import LAYOUTS, Layout, get_vendor, layout_names, register, unregister, vendors
from pipeline.plates.vendors.base import FileListing, FileNameVendor, PlateLayoutError, list_matching
from pipeline.store.omezarr import open_plate, read_field
from pipeline.store.paths import Store
from pipeline.synthetic import generate

_TINY = re.compile(r"(?P<well>[A-P]\d{2})-f(?P<site>\d+)-c(?P<channel>\d+)\.tif")


class Tiny(FileNameVendor):
    """A made-up instrument writing ``<well>-f<site>-c<channel>.tif``, without metadata."""

    name = "tiny"
    expects = "Tiny '<well>-f<site>-c<channel>.tif'"

    def read_metadata(self, root: Path) -> Acquisition | None:
        return None

    def list_files(self, root: Path, channel_map: dict[str, str] | None) -> FileListing:
        return list_matching(root, _TINY, channel_map)

    def image_name(self, plate: str, well: str, site: int, channel: int, *, guid: str = "") -> str:
        return f"{well}-f{site}-c{channel}.tif"


@pytest.fixture
def tiny():
    vendor = register(Tiny())  # the one registration line
    yield vendor
    unregister("tiny")


CHANNEL_MAP = "DNA=1,ER=2,RNA=3,AGP=4,Mito=5"


def test_registered_vendor_is_written_discovered_and_ingested_like_a_shipped_one(tmp_path, tiny):
    plate = generate(tmp_path / "tiny", layout="tiny", plate_id="V1", n_wells=3, sites=1, size=64, seed=3)
    listing = discover_plate(plate, channel_map=CHANNEL_MAP)
    assert listing.layout == "tiny" and listing.channel_source == "user"
    assert len(listing.images) == 3 * 5 and listing.unmatched == []
    assert sorted(set(listing.images["Metadata_Well"])) == ["A01", "A02", "A03"]
    raw = discover_plate(plate)  # no metadata, no map: channels raw until the pixels find DNA
    assert raw.channel_source == "unresolved" and raw.channels == ("ch1", "ch2", "ch3", "ch4", "ch5")

    reference = generate(tmp_path / "ix", layout="imagexpress", plate_id="V1", n_wells=3, sites=1, size=64, seed=3)
    settings = IngestSettings(channel_map=CHANNEL_MAP, crop_size=24)
    stores = {name: Store(tmp_path / f"store-{name}") for name in ("tiny", "ix")}
    got = ingest_plate(plate, stores["tiny"], settings, processes=1)
    want = ingest_plate(reference, stores["ix"], settings, processes=1)
    assert got.status == want.status == "complete" and got.layout == "tiny" and want.layout == "imagexpress"
    assert got.n_fields == want.n_fields == 3 and got.n_cells == want.n_cells > 0
    fields = {name: store.read("fields").sort_values(["Metadata_Well", "Metadata_Site"]) for name, store in stores.items()}
    assert fields["tiny"]["Metadata_FieldPath"].tolist() == fields["ix"]["Metadata_FieldPath"].tolist()
    plates = {name: open_plate(store.plate_zarr("V1")) for name, store in stores.items()}
    for path in fields["tiny"]["Metadata_FieldPath"]:
        np.testing.assert_array_equal(read_field(plates["tiny"], path), read_field(plates["ix"], path))


def test_registry_lists_finds_and_refuses_by_name(tmp_path, tiny):
    assert layout_names() == (*LAYOUTS, "tiny") and vendors()[-1] is tiny
    assert get_vendor("tiny") is tiny
    with pytest.raises(ValueError, match="'bogus' is not one of 'imagexpress', 'phenix', 'loaddata', 'tiny'"):
        get_vendor("bogus")
    with pytest.raises(ValueError, match="already registered"):
        register(Tiny())
    with pytest.raises(ValueError, match="lower-case word other than 'auto'"):
        register(type("Auto", (Tiny,), {"name": "auto"})())
    (tmp_path / "notes.txt").write_text("no images")
    with pytest.raises(PlateLayoutError, match=r"or Tiny '<well>-f<site>-c<channel>.tif'"):
        discover_plate(tmp_path)


def test_auto_refuses_a_folder_mixing_a_registered_and_a_shipped_layout(tmp_path, tiny):
    plate = generate(tmp_path, layout="imagexpress", plate_id="V2", n_wells=2, sites=1, size=64, seed=1)
    for p in list(plate.glob("V2_A01_s1_w*.tif")):
        if "_thumb" not in p.name:
            (plate / f"A05-f1-c{p.name.split('_w')[1][0]}.tif").write_bytes(p.read_bytes())
    with pytest.raises(PlateLayoutError, match="mixes file-name layouts .*imagexpress.* and .*tiny"):
        discover_plate(plate)
    assert discover_plate(plate, layout="tiny", channel_map=CHANNEL_MAP).images["Metadata_Well"].unique().tolist() == ["A05"]


def test_shipped_layouts_are_one_module_each_in_detection_order():
    assert LAYOUTS == typing.get_args(Layout) == ("imagexpress", "phenix", "loaddata")
    assert [v.name for v in vendors()[:3]] == list(LAYOUTS)
    assert [type(v).__module__ for v in vendors()[:3]] == [f"pipeline.plates.vendors.{n}" for n in LAYOUTS]
    with pytest.raises(ValueError, match="no registered vendor layout named 'phenix'"):
        unregister("phenix")
