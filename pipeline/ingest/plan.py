"""Before any pixel of a plate is written: discover the folder, fingerprint it, and check
everything that can fail early (:func:`preflight`, once per plate).

A :class:`PlatePlan` is the preflight's result: the plate's listing (layout, channel map, files),
its fingerprint, its staging folder and its plate map. Every later stage takes the plan.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from dataclasses import replace as _with_fields
from pathlib import Path

import pandas as pd

from pipeline.ingest.settings import IngestSettings
from pipeline.plates.channel_check import check_channels
from pipeline.plates.discovery import PlateListing, discover_plate, fingerprint_files, read_platemap
from pipeline.store.ledger import ledger_entry
from pipeline.store.paths import Store
from pipeline.plates.vendors import VENDOR_MODULES
from pipeline.store.provenance import code_fingerprint

__all__ = ["PlatePlan", "STAGE_MODULES", "plan_plate", "folder_platemap", "PlateConflictError", "check_plate_source",
           "check_writable", "preflight", "is_current"]


@dataclass(frozen=True)
class PlatePlan:
    """A discovered plate and where its staged outputs go."""

    listing: PlateListing
    fingerprint: str
    staging: Path
    platemap: pd.DataFrame | None = None  # from settings.platemap (a Broad-style map), else None

    @property
    def plate(self) -> str:
        return self.listing.plate


#: Modules whose code decides what ingestion writes; part of every plate's fingerprint (with every
#: project module they import: the ingest stages, the image, feature and store modules they call).
STAGE_MODULES: tuple[str, ...] = (
    "pipeline.ingest.run",
    "pipeline.plates.discovery",
    "pipeline.plates.acquisition",
    "pipeline.store.omezarr",
    "pipeline.images.illumination",
    "pipeline.images.segmentation.classical",
    "pipeline.images.crops",
    "pipeline.features.measure",
)


def plan_plate(plate_dir: str | Path, store: Store, settings: IngestSettings, *,
               plate_id: str | None = None) -> PlatePlan:
    """Discover a plate folder and fingerprint it: the names, sizes and mtimes of every file in
    the folder (used or not: an added file is noticed), the settings, the code of the stage
    modules (:data:`STAGE_MODULES` and every project module they import, cellpose's included;
    docstrings and comments excluded: :func:`pipeline.store.provenance.code_fingerprint`) and the
    content of any segmentation weights. A plate is redone when any of them changes.
    ``plate_id`` replaces the ID found in the folder."""
    listing = discover_plate(plate_dir, layout=settings.layout, channel_map=settings.channel_map,
                             allow_outside=settings.allow_outside)
    if plate_id is not None:
        if not plate_id.strip() or "/" in plate_id or plate_id.startswith("."):
            raise ValueError(f"--plate-id {plate_id!r} is not a usable plate ID (no '/', not empty)")
        listing = _with_fields(listing, plate=plate_id)
    files = sorted(str(p.relative_to(listing.root)) for p in listing.root.rglob("*") if p.is_file())
    listing = _with_fields(listing, ignored=[*listing.ignored, *_unused_files(listing, files)])
    extra = settings.key() + code_fingerprint(*STAGE_MODULES, *VENDOR_MODULES)
    for weights in (settings.cellpose_model, settings.cellpose_cell_model):
        if weights:  # the weights' content, not just their path, decides the labels
            extra += hashlib.sha256(Path(weights).expanduser().read_bytes()).hexdigest()
    platemap = None
    if settings.platemap is not None:  # read now: a bad map fails before the plate's work
        from pipeline.plates.platemaps import load_platemap, read_platemap_config

        config = read_platemap_config(settings.platemap)
        platemap = load_platemap(config, plate=listing.plate)
        extra += config.fingerprint()
    fp = fingerprint_files(listing.root, files, extra=extra)
    return PlatePlan(listing, fp, store.staging_dir(listing.plate), platemap)


def _unused_files(listing: PlateListing, files: list[str]) -> list[str]:
    """Files of the folder that are neither images, nor quarantined, nor metadata, nor already
    listed as ignored: each is listed once in the plate's ``ignored`` record."""
    used = set(listing.images["File"]) | set(listing.unmatched) | {e.split(": ", 1)[0] for e in listing.ignored}
    if listing.platemap is not None:
        used.add(listing.platemap.name)
    acq = listing.acquisition
    if acq is not None and acq.source.is_relative_to(listing.root):
        used.add(str(acq.source.relative_to(listing.root)))
    return [f"{f}: not an image of the plate (unused)" for f in files if f not in used]


def folder_platemap(plan: PlatePlan) -> pd.DataFrame:
    """The plate folder's ``platemap.csv`` (:func:`pipeline.plates.discovery.read_platemap`).

    The folder does not say its plate format, and a partly imaged 384-well plate images only
    96-well positions, so every mapped well is checked against the largest format (1536 wells,
    rows A-AF, columns 1-48): ``Z99`` is an error naming the file and row, ``P24`` is not."""
    return read_platemap(plan.listing.platemap, plate=plan.plate)


class PlateConflictError(ValueError):
    """A plate folder claims a plate ID that the store already holds from another folder."""


def check_plate_source(plan: PlatePlan, store: Store, *, replace: bool = False) -> None:
    """Refuse a second folder with the ID of a plate the store already holds.

    A plate ID belongs to the folder it was first ingested from. Another folder may claim it
    only when it is that plate moved (the same files, sizes and mtimes, and settings: the same
    fingerprint) or when ``replace`` is given.

    Raises
    ------
    PlateConflictError
        Naming both folders and the two ways out (``--replace``, ``--plate-id``).
    """
    entry = ledger_entry(store, plan.plate)
    if entry is None or replace or entry["Fingerprint"] == plan.fingerprint:
        return
    known, here = Path(entry["Source"]), plan.listing.root
    try:
        same = known.resolve() == here.resolve() or (known.exists() and os.path.samefile(known, here))
    except OSError:
        same = False
    if not same:
        raise PlateConflictError(
            f"plate {plan.plate}: folder {here} has the ID of the plate already ingested from {known}; "
            f"refused (the store keeps {known}). Pass --replace to replace it with {here}, or "
            f"--plate-id NEW_ID to ingest {here} as another plate")


def check_writable(store: Store) -> None:
    """Create the store root if needed and prove it writable with a probe file.

    Raises
    ------
    NotADirectoryError
        If the store path (or a parent) is a file.
    PermissionError
        If the store cannot be written; the message names it.
    """
    root = store.root
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"store {str(root)!r} is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-probe-{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except NotADirectoryError:
        raise NotADirectoryError(f"store {str(root)!r}: a parent of it is a file, not a directory") from None
    except PermissionError as exc:
        raise PermissionError(f"store {str(root)!r} is not writable ({exc.strerror})") from None
    except OSError as exc:  # e.g. a read-only file system
        raise PermissionError(f"store {str(root)!r} is not writable ({exc.strerror or exc})") from None


def preflight(plate_dir: str | Path, store: Store, settings: IngestSettings, *,
              plate_id: str | None = None) -> PlatePlan:
    """Every check made before any field is written.

    The store must be writable, the folder must be a plate of a known layout (with the channel
    map applied) and its ``platemap.csv``, if present, must parse; then a few fields' pixels find
    the nuclear stain of a plate without a channel map, or check the map's DNA channel
    (:func:`pipeline.plates.channel_check.check_channels`). Returns the plate's plan
    (:func:`plan_plate`; ``plate_id`` replaces the folder's plate ID).

    Raises
    ------
    PermissionError, NotADirectoryError
        If the store is not a writable directory (the message names it).
    ValueError
        If the plate map is empty or malformed, or the folder matches no layout (the message
        names the file or folder).
    ChannelMapError
        If the nuclear stain cannot be told from the pixels of a plate without a map, or the
        instrument's map names as DNA a channel the pixels clearly rank below another.
    """
    check_writable(store)
    plan = plan_plate(plate_dir, store, settings, plate_id=plate_id)
    if plan.listing.platemap is not None:  # a bad plate map fails now, not after the plate's work
        folder_platemap(plan)
    # a few fields' pixels find DNA (no map) or check the map's DNA, before anything is written
    return _with_fields(plan, listing=check_channels(plan.listing))


def is_current(plan: PlatePlan, store: Store) -> bool:
    """True when the ledger holds this plate complete with the same fingerprint and its outputs exist."""
    entry = ledger_entry(store, plan.plate)
    return bool(entry and entry["Status"] == "complete" and entry["Fingerprint"] == plan.fingerprint
                and store.plate_zarr(plan.plate).exists() and store.crops_zarr(plan.plate).exists())
