"""Re-derive a complete plate's damaged crops, labels and illumination functions from its intact
images (``cmcl verify --deep --repair``: :func:`pipeline.store.verify.verify_store`'s
``rederive``), with the settings it was ingested with.
"""

from __future__ import annotations

import shutil
from dataclasses import fields as dc_fields

import pandas as pd
import zarr

from pipeline.ingest.fields import segment_and_tile
from pipeline.ingest.illumination import compute_illumination
from pipeline.ingest.plan import PlatePlan
from pipeline.ingest.settings import IngestSettings
from pipeline.plates.discovery import PlateListing
from pipeline.store.paths import Store
from pipeline.store.verify import Problem, rel_path

__all__ = ["repair_plate"]


def _is_label(problem: Problem) -> bool:
    return "/labels/" in problem.path


def repair_plate(store: Store, plate: str, found: dict[str, list[Problem]]) -> list[Problem]:
    """Re-derive a plate's crops, labels and illumination functions from its (intact) images.

    Returns what could not be repaired (empty when everything was re-derived). Images are the
    one thing the store cannot re-derive: a damaged image chunk is reported with the plate's
    source folder to re-ingest from.
    """
    images = [p for p in found["plate"] if not _is_label(p)]
    if images:
        source = ""
        if store.table_path("ledger").is_file():
            led = store.read("ledger").set_index("Metadata_Plate")
            source = str(led.loc[plate, "Source"]) if plate in led.index else ""
        return [Problem(p.path, p.message + f"; raw images cannot be re-derived: re-ingest the plate from "
                                            f"{source or 'its source folder'} with `cmcl ingest --force`") for p in images]
    try:
        attrs = dict(zarr.open_group(str(store.crops_zarr(plate)), mode="r").attrs)
        known = {f.name for f in dc_fields(IngestSettings)}
        settings = IngestSettings(**{k: v for k, v in attrs["ingest_settings"].items() if k in known})
    except Exception as exc:  # noqa: BLE001 - whatever hides the settings, the answer is the same
        return [Problem(p.path, p.message + f"; cannot re-derive: the plate's ingest settings are unreadable "
                                            f"({type(exc).__name__}); re-ingest with `cmcl ingest --force`")
                for p in found["crops"] + found["plate"] + found["illumination"]]
    staging = store.staging_dir(f"{plate}.repair")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    listing = PlateListing(plate=plate, layout="", root=store.root, images=pd.DataFrame())
    plan = PlatePlan(listing, "repair", staging)
    try:
        shutil.copytree(store.plate_zarr(plate), staging / "plate.ome.zarr")
        fields = store.read("fields")
        fields = fields[fields["Metadata_Plate"] == plate][["Metadata_Well", "Metadata_Site", "Metadata_FieldPath"]]
        fields = fields.sort_values(["Metadata_Well", "Metadata_Site"], ignore_index=True)
        if found["illumination"] or not store.illumination_zarr(plate).is_dir():
            compute_illumination(plan, fields, settings)
        else:
            shutil.copytree(store.illumination_zarr(plate), staging / "illumination.zarr")
        cells, _ = segment_and_tile(plan, fields, settings, processes=1)
        old = store.read("cells")
        old = old[old["Metadata_Plate"] == plate]
        if len(cells) != len(old):
            return [Problem(rel_path(store, store.crops_zarr(plate)), f"plate {plate!r}: re-derived {len(cells)} crops but the "
                                                                  f"cells table has {len(old)}; re-ingest with `cmcl ingest --force`")]
        for src, dst in ((staging / "plate.ome.zarr", store.plate_zarr(plate)), (staging / "crops.zarr", store.crops_zarr(plate)),
                         (staging / "illumination.zarr", store.illumination_zarr(plate))):
            if dst.exists():
                shutil.rmtree(dst)
            src.rename(dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return []
