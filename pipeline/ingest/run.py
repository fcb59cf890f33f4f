"""Ingest one plate folder into a store: validate, write OME-Zarr, correct illumination,
segment, tile.

The stages are separate functions so an orchestrator can run them as separate tasks:

1. :func:`write_images` — read and validate every field, quarantine bad ones, write good ones
   losslessly into a staging OME-Zarr plate (resumable field by field);
2. :func:`compute_illumination` — per-channel illumination functions from all written fields
   (streaming mean, bounded memory), stored as a Zarr array plus QC PNGs;
3. :func:`segment_and_tile` — per field: correct, segment nuclei and cells, write labels, append
   single-cell crops, and collect the cell and field tables;
4. :func:`publish` — move the staged plate into place, write its tables, mark the ledger.

:func:`ingest_plate` runs all four and skips plates whose fingerprint the ledger already holds as
complete. A plate is only ever visible as complete once everything is in place.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from dataclasses import replace as _with_fields
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import pandas as pd
import tifffile
import zarr
from numba import njit
from scipy import ndimage as ndi

from pipeline.images import illumination as illum
from pipeline.plates.channel_check import check_channels
from pipeline.features.measure import FEATURE_SETS, measure_objects
from pipeline.store.ledger import file_lock, ledger_entry, update_ledger
from pipeline.store.omezarr import PlateWriter, field_path, open_plate, preload_metadata_writer, read_field
from pipeline.store.provenance import code_fingerprint
from pipeline.plates.vendors import VENDOR_MODULES
from pipeline.plates.discovery import (LAYOUTS, PlateListing, discover_plate, fingerprint_files, parse_channel_map, read_platemap,
                             split_well)
from pipeline.store.schema import arrow_schema, read_table, write_table
from pipeline.images.segmentation.classical import SEGMENTERS, segment_cells, segment_field, segment_nuclei
from pipeline.store.paths import CHANNELS, Store
from pipeline.ingest.pool import pool_context, process_pool, start_pool_server
from pipeline.images.crops import CROPS_CHUNK, CROPS_SHARD, CropArrayWriter, crop_cells, crop_counts, field_tiles

__all__ = [
    "IngestSettings",
    "start_workers",
    "PlateResult",
    "plan_plate",
    "preflight",
    "write_images",
    "compute_illumination",
    "default_processes",
    "segment_and_tile",
    "is_current",
    "PlateConflictError",
    "check_plate_source",
    "folder_platemap",
    "publish",
    "skipped_result",
    "plate_summary",
    "nothing_stored",
    "ingest_plate",
]

Progress = Callable[[str, int, int], None]
#: ``run_stage(name, fn, *args, **kwargs)`` runs one stage of :func:`ingest_plate` (an orchestrator
#: wraps each in a task); it must return ``fn(*args, **kwargs)``.
StageRunner = Callable[..., Any]

ILLUMINATION_METHODS = ("mean", "median", "background")
CYTO_CHANNELS = ("RNA", "AGP")
BORDERS = ("skip", "pad")
_LAYOUT_CHOICES = ("auto", *LAYOUTS)


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(map(repr, choices))}")


def _number(name: str, value: object, *, integer: bool = False, low: float | None = None,
            high: float | None = None, low_open: bool = False, optional: bool = False) -> None:
    if value is None and optional:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or (not integer and not np.isfinite(value)):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a finite number'}"
                         f"{' or None' if optional else ''}; got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}; got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}; got {value!r}")


@dataclass(frozen=True)
class IngestSettings:
    """Everything that decides what ingestion writes (part of each plate's fingerprint).

    Every field is validated at construction.

    Raises
    ------
    ValueError
        Naming the field, the value and, for a choice, the valid values (a channel map that does
        not parse, a crop size below 8, an unknown illumination method ...).
    FileNotFoundError
        If a cellpose weights file does not exist.
    """

    layout: Literal["auto", "imagexpress", "phenix", "loaddata"] = "auto"
    channel_map: str | None = None
    allow_outside: bool = False
    illumination_method: Literal["mean", "median", "background"] = "background"
    illumination_filter_fraction: float = 1 / 8
    illumination_dark: float | None = None  # None: estimated per channel from the fields
    illumination_max_fields: int = 64
    cyto_channel: Literal["RNA", "AGP"] = "AGP"
    crop_size: int = 64
    #: a crop whose box crosses the field's edge: zero-padded and flagged (``'pad'``) or left
    #: out (``'skip'``); nuclei touching the edge never get a row (pipeline.images.borders)
    border: Literal["skip", "pad"] = "pad"
    crops_chunk: int = CROPS_CHUNK
    crops_shard: int = CROPS_SHARD
    segmenter: Literal["classical", "cellpose"] = "classical"
    cellpose_model: str | None = None
    cellpose_cell_model: str | None = None
    cellpose_diameter: float | None = None
    field_tile_size: int | None = None
    focus_outlier_fraction: float = 0.6
    platemap: str | None = None
    #: CellProfiler features per cell (pipeline.features.measure); the CLI's default is 'default', the
    #: library's 'none' (ingestion exactly as without the features stage)
    features: Literal["default", "full", "none"] = "none"

    def __post_init__(self) -> None:
        _choice("layout", self.layout, _LAYOUT_CHOICES)
        if self.channel_map is not None:
            if not isinstance(self.channel_map, str):
                raise ValueError(f"channel_map must be a string or None; got {self.channel_map!r}")
            parse_channel_map(self.channel_map)  # a bad map fails here, naming its file or entry
        if not isinstance(self.allow_outside, bool):
            raise ValueError(f"allow_outside must be True or False; got {self.allow_outside!r}")
        _choice("illumination_method", self.illumination_method, ILLUMINATION_METHODS)
        _number("illumination_filter_fraction", self.illumination_filter_fraction, low=0, high=1, low_open=True)
        _number("illumination_dark", self.illumination_dark, low=0, optional=True)
        _number("illumination_max_fields", self.illumination_max_fields, integer=True, low=1)
        _choice("cyto_channel", self.cyto_channel, CYTO_CHANNELS)
        _number("crop_size", self.crop_size, integer=True, low=8)
        _choice("border", self.border, BORDERS)
        _number("crops_chunk", self.crops_chunk, integer=True, low=1)
        _number("crops_shard", self.crops_shard, integer=True, low=1)
        _number("cellpose_diameter", self.cellpose_diameter, low=0, low_open=True, optional=True)
        _number("field_tile_size", self.field_tile_size, integer=True, low=8, optional=True)
        _number("focus_outlier_fraction", self.focus_outlier_fraction, low=0, high=1)
        _choice("features", self.features, ("default", "full", "none"))
        if self.segmenter not in SEGMENTERS:
            raise ValueError(f"segmenter {self.segmenter!r} is not one of {', '.join(map(repr, SEGMENTERS))}")
        if self.segmenter == "cellpose":
            if not self.cellpose_model:
                raise ValueError("segmenter 'cellpose' needs cellpose_model, the path of a local weights file")
            for p in (self.cellpose_model, self.cellpose_cell_model):
                if p is not None and not Path(p).expanduser().is_file():
                    raise FileNotFoundError(f"cellpose weights file {p!r} does not exist (model names such as "
                                            f"'cyto3' are not accepted; pass the path of a local weights file)")
        if self.crops_chunk < 1 or self.crops_shard % self.crops_chunk or self.crops_shard < self.crops_chunk:
            raise ValueError(f"crops_shard ({self.crops_shard}) must be a positive multiple of crops_chunk ({self.crops_chunk})")
        if self.features not in (*FEATURE_SETS, "none"):
            raise ValueError(f"features {self.features!r} is not one of {', '.join(map(repr, (*FEATURE_SETS, 'none')))}")
        if self.field_tile_size is not None and self.field_tile_size < 8:
            raise ValueError(f"field_tile_size must be None or >= 8; got {self.field_tile_size!r}")

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class PlateResult:
    """Outcome of ingesting one plate."""

    plate: str
    source: str
    status: str  # 'complete' | 'skipped' | 'failed'
    layout: str = ""
    n_fields: int = 0
    n_quarantined: int = 0
    n_cells: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # wall-clock seconds per stage
    error: str | None = None
    channel_map: str = ""
    #: where the channel map comes from: 'metadata', 'user' (--channels) or 'pixels' (DNA only)
    channel_source: str = ""
    #: one line each: metadata that names no channel, LoadData paths re-rooted, a map the pixels contradict
    notes: list[str] = field(default_factory=list)
    n_ignored: int = 0
    summary: str = ""
    #: one line when the plate stored no field (:func:`nothing_stored`), else empty
    nothing_stored: str = ""
    #: seconds the worker processes spent per step, summed over fields (read, write,
    #: illumination_stats, read_staged, correct, segment, write_labels, crops, features, tiles_qc)
    worker_seconds: dict[str, float] = field(default_factory=dict)


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


#: Modules whose code decides what ingestion writes; part of every plate's fingerprint.
_STAGE_MODULES = ("pipeline.ingest.run", "pipeline.plates.discovery", "pipeline.plates.acquisition", "pipeline.store.omezarr", "pipeline.images.illumination",
                  "pipeline.images.segmentation.classical", "pipeline.images.crops", "pipeline.features.measure")


def plan_plate(plate_dir: str | Path, store: Store, settings: IngestSettings, *,
               plate_id: str | None = None) -> PlatePlan:
    """Discover a plate folder and fingerprint it: the names, sizes and mtimes of every file in
    the folder (used or not: an added file is noticed), the settings, the code of the stage
    modules (:data:`_STAGE_MODULES` and every project module they import, cellpose's included;
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
    extra = settings.key() + code_fingerprint(*_STAGE_MODULES, *VENDOR_MODULES)
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
    return PlatePlan(listing, fp, store.root / ".staging" / listing.plate, platemap)


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


def _quarantine_row(plate: str, well: str | None, site: int | None, channel: str | None, file: str, reason: str) -> dict:
    return dict(Metadata_Plate=plate, Metadata_Well=well, Metadata_Site=site, Metadata_Channel=channel,
                File=file, Reason=reason)


#: Fields per task of a worker process, in both passes over a plate. Fixed, so that the work
#: (and the order in which partial illumination statistics are merged) does not depend on the
#: number of processes: outputs are identical for any ``processes``.
BATCH_FIELDS = 4


class _Clock:
    """Wall-clock seconds a worker spends per step (summed over its fields): where its time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        t = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + t - self._t
        self._t = t


def _add_seconds(total: dict[str, float], part: dict[str, float]) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0.0) + v


@dataclass
class IlluminationStats:
    """Streaming illumination statistics of a plate's written fields, per field shape.

    Filled while the fields are written (:func:`write_images`, one partial per batch of fields,
    merged in batch order), so :func:`compute_illumination` needs no second read of the plate.
    ``mean`` is kept only for ``illumination_method='mean'``.
    """

    background: dict[tuple[int, ...], illum.BackgroundAccumulator] = field(default_factory=dict)
    mean: dict[tuple[int, ...], illum.MeanAccumulator] = field(default_factory=dict)

    def add(self, image: np.ndarray, *, with_mean: bool) -> None:
        shape = tuple(image.shape)
        self.background.setdefault(shape, illum.BackgroundAccumulator()).add(image)
        if with_mean:
            self.mean.setdefault(shape, illum.MeanAccumulator()).add(image)

    def merge(self, other: "IlluminationStats") -> None:
        for shape, acc in other.background.items():
            self.background.setdefault(shape, illum.BackgroundAccumulator()).merge(acc)
        for shape, acc in other.mean.items():
            self.mean.setdefault(shape, illum.MeanAccumulator()).merge(acc)

    def count(self, shape: tuple[int, ...]) -> int:
        acc = self.background.get(tuple(shape))
        return 0 if acc is None else acc.count


@dataclass(frozen=True)
class _FieldJob:
    """One field to write: its well, site, index in the well and one file per channel."""

    well: str
    site: int
    index: int
    files: tuple[str, ...]


def _read_channel(path: Path) -> tuple[np.ndarray | None, tuple[int, ...] | None, str | None, str | None]:
    """Open one image file once: (pixels or None, shape, dtype, error). The error is the
    quarantine reason: unreadable header, or unreadable pixel data."""
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unusable
        return None, None, None, f"unreadable TIFF: {type(exc).__name__}: {exc}"
    with tif:
        try:
            page = tif.pages[0]
            shape, dtype = tuple(page.shape), str(page.dtype)
        except Exception as exc:  # noqa: BLE001
            return None, None, None, f"unreadable TIFF: {type(exc).__name__}: {exc}"
        if dtype != "uint16":
            return None, shape, dtype, None
        try:
            return page.asarray(), shape, dtype, None
        except Exception as exc:  # noqa: BLE001 - truncated/corrupt data
            return None, shape, dtype, f"unreadable TIFF data: {type(exc).__name__}: {exc}"


def _one_codec_thread() -> None:
    """Blosc compresses with one thread per core by default; in a worker process, beside other
    workers, that oversubscribes the cores: one thread each."""
    if multiprocessing.parent_process() is not None:
        import numcodecs.blosc

        numcodecs.blosc.set_nthreads(1)


def _write_batch(stage_plate: str, root: str, jobs: list[_FieldJob], *, plate: str, channels: tuple[str, ...],
                 pixel_size_um, stains: dict, with_mean: bool) -> tuple[list[dict], IlluminationStats, dict]:
    """Read, check and write one batch of fields (a task of a worker process).

    Every file is opened once: its header is checked and its pixels decoded from the same
    handle. A field whose channels all decode to one shape is written to the staging plate (or,
    when an interrupted run already wrote it, read back from there) and added to the batch's
    illumination statistics; whether that shape is the plate's is decided afterwards by the
    caller, which sees every field. Returns one record per field (the channels' shapes, dtypes
    and errors, and whether it was written), the statistics and the worker's seconds per step.
    """
    _one_codec_thread()
    writer = PlateWriter(stage_plate, plate=plate, channels=channels, resume=True, pixel_size_um=pixel_size_um,
                         stains=stains)
    stats = IlluminationStats()
    clock = _Clock()
    out = []
    for job in jobs:
        rec = dict(job=job, written=False, channels=[])
        if writer.has_field(job.well, job.index):  # written by an interrupted run with this fingerprint
            image = read_field(writer.root, field_path(job.well, job.index))
            rec["channels"] = [(tuple(image.shape[1:]), "uint16", None)] * len(channels)
            rec["written"] = True
            clock.lap("read")
        else:
            planes = []
            for f in job.files:
                pixels, shape, dtype, error = _read_channel(Path(root) / f)
                rec["channels"].append((shape, dtype, error))
                planes.append(pixels)
            clock.lap("read")
            shapes = {c[0] for c in rec["channels"]}
            if all(p is not None for p in planes) and len(shapes) == 1:
                image = np.stack(planes)
                writer.write_field(job.well, job.index, image)
                rec["written"] = True
                clock.lap("write")
        if rec["written"]:
            stats.add(image, with_mean=with_mean)
            clock.lap("illumination_stats")
        out.append(rec)
    return out, stats, clock.seconds


def _field_jobs(listing: PlateListing) -> tuple[list[_FieldJob], list[dict]]:
    """The fields of a listing to write, and quarantine rows for those refused without opening
    a file (a channel missing, duplicated, or a file that does not exist).

    A field's index in its well is the rank of its site among the well's listed sites, so it is
    known before any file is read; a refused field leaves a gap (NGFF lists a well's images by
    path)."""
    root, plate, channels = listing.root, listing.plate, listing.channels
    refused_at = {(r["Metadata_Well"], r["Metadata_Site"], r["Metadata_Channel"]) for r in listing.refused}
    jobs, quarantine = [], []
    index_in_well: dict[str, int] = {}
    for (well, site), rows in listing.images.groupby(["Metadata_Well", "Metadata_Site"], sort=True):
        idx = index_in_well.get(well, 0)
        index_in_well[well] = idx + 1
        problems = []
        by_channel = rows.groupby("Metadata_Channel")["File"].apply(list).to_dict()
        repeated = []
        for c in channels:
            listed = by_channel.get(c, [])
            files = list(dict.fromkeys(listed))  # a LoadData CSV may list one file twice
            if not files and (well, int(site), c) in refused_at:
                problems.append(None)  # refused by the listing, its reason already recorded
            elif not files:
                problems.append((c, rows["File"].iloc[0], f"missing channel {c}"))
            elif len(files) > 1:
                problems.append((c, files[1], f"duplicate images for channel {c}: {', '.join(files)}"))
            elif len(listed) > 1:
                repeated.append((c, files[0], f"duplicate site: channel {c} listed {len(listed)} times ({files[0]})"))
            elif not (root / files[0]).is_file():
                problems.append((c, files[0], f"missing channel {c}: {files[0]} does not exist"))
        if repeated and not problems:
            problems.append(repeated[0])
        if problems:
            quarantine += [_quarantine_row(plate, well, int(site), c, f, r) for c, f, r in filter(None, problems)]
            continue
        jobs.append(_FieldJob(well, int(site), idx, tuple(by_channel[c][0] for c in channels)))
    return jobs, quarantine


def write_images(plan: PlatePlan, settings: IngestSettings | None = None, *, progress: Progress | None = None,
                 processes: int | None = None, pool=None, timings: dict[str, float] | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame, IlluminationStats]:
    """Validate every field, write the good ones into the staging plate and gather the plate's
    illumination statistics on the way.

    A field is refused (quarantined, with one row per problem) when a channel is missing or
    duplicated, a file is unreadable or truncated, its dtype is not uint16, or its shape differs
    from the plate's (most common) shape. The rest of the plate is written regardless. Fields
    already complete in the staging plate (an interrupted earlier run with the same fingerprint)
    are not rewritten, only read back for their statistics.

    Fields are read, checked, written and measured in batches of :data:`BATCH_FIELDS` by
    ``processes`` worker processes (default :func:`default_processes`; or ``pool``, an executor
    to reuse), each file opened and decoded once. Results, and the partial statistics, are
    gathered in field order, so the outputs are identical for any number of processes.
    ``timings``, when given, receives the workers' seconds per step (read, write,
    illumination_stats).

    Returns
    -------
    fields : DataFrame
        ``Metadata_Well``, ``Metadata_Site``, ``Metadata_FieldPath`` of every written field.
    quarantine : DataFrame
        Rows of the ``quarantine`` table.
    stats : IlluminationStats
        The written fields' statistics (per-pixel mean too when ``settings`` asks for the
        ``'mean'`` method), for :func:`compute_illumination`.
    """
    settings = settings or IngestSettings()
    listing, root, plate = plan.listing, plan.listing.root, plan.plate
    stage = plan.staging
    marker = stage / "fingerprint.txt"
    resume = marker.is_file() and marker.read_text() == plan.fingerprint
    if not resume and stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True, exist_ok=True)
    marker.write_text(plan.fingerprint)
    preload_metadata_writer()  # ome_zarr's ~1 s import happens while the fields are written
    channels = listing.channels
    acq = listing.acquisition
    stains = {}
    if acq is not None:
        for vid, role in listing.channel_map.items():
            info = acq.channel(vid)
            if info is not None:
                stains[role] = {k: v for k, v in (("stain", info.name), ("excitation_wavelength", info.excitation_nm),
                                                  ("emission_wavelength", info.emission_nm)) if v is not None}
    pixel_size = acq.pixel_size_um if acq is not None else None
    writer = PlateWriter(stage / "plate.ome.zarr", plate=plate, channels=channels,
                         resume=resume and (stage / "plate.ome.zarr").exists(), pixel_size_um=pixel_size, stains=stains)

    quarantine: list[dict] = [
        _quarantine_row(plate, None, None, None, f, f"file name matches no pattern of the {listing.layout} layout")
        for f in listing.unmatched if "thumb" not in f.lower()]
    quarantine += [_quarantine_row(plate, r["Metadata_Well"], r["Metadata_Site"], r["Metadata_Channel"], r["File"],
                                   r["Reason"]) for r in listing.refused]
    jobs, refused = _field_jobs(listing)
    quarantine += refused
    for well in sorted({j.well for j in jobs}):  # well groups exist before workers add fields to them
        r, c = split_well(well)
        writer.root.require_group(f"{r}/{c}")
    batches = [jobs[i:i + BATCH_FIELDS] for i in range(0, len(jobs), BATCH_FIELDS)]
    work = partial(_write_batch, str(writer.path), str(root), plate=plate, channels=channels, pixel_size_um=pixel_size,
                   stains=stains, with_mean=settings.illumination_method == "mean")
    records, stats = [], IlluminationStats()
    with _executor(processes or default_processes(len(jobs)), pool) as ex:
        # this process writes the first batch itself while a new pool's workers start
        for batch_records, batch_stats, batch_seconds in _map_in_order(ex, work, batches, help_first=True):
            # in batch order: a deterministic merge
            records += batch_records
            stats.merge(batch_stats)
            if timings is not None:
                _add_seconds(timings, batch_seconds)
            if progress:
                progress("write", len(records) - 1, len(jobs))
    shapes = [ch[0] for rec in records for ch in rec["channels"] if ch[0] is not None]
    plate_shape = max(set(shapes), key=shapes.count) if shapes else None
    written = []
    for rec in records:
        job = rec["job"]
        problems = []
        for c, f, (shape, dtype, error) in zip(channels, job.files, rec["channels"]):
            if shape is None:
                problems.append((c, f, error))
            elif dtype != "uint16":
                problems.append((c, f, f"dtype {dtype}, expected uint16"))
            elif shape != plate_shape:
                problems.append((c, f, f"shape {shape}, expected {plate_shape} like the rest of the plate"))
            elif error is not None:
                problems.append((c, f, error))
        if problems:
            quarantine += [_quarantine_row(plate, job.well, job.site, c, f, r) for c, f, r in problems]
            if rec["written"]:  # a field of another shape: written before the plate's shape was known
                shutil.rmtree(writer.path / field_path(job.well, job.index), ignore_errors=True)
            continue
        written.append(dict(Metadata_Well=job.well, Metadata_Site=job.site,
                            Metadata_FieldPath=field_path(job.well, job.index)))
    stats.background = {k: v for k, v in stats.background.items() if k[1:] == plate_shape}
    stats.mean = {k: v for k, v in stats.mean.items() if k[1:] == plate_shape}
    fields = pd.DataFrame(written, columns=["Metadata_Well", "Metadata_Site", "Metadata_FieldPath"])
    by_well: dict[str, list[int]] = {}
    for fp in fields["Metadata_FieldPath"]:
        r, c, k = fp.split("/")
        by_well.setdefault(f"{r}{int(c):02d}", []).append(int(k))
    writer.finalize(by_well, acquisition=acquisition_record(listing))
    quarantine_df = pd.DataFrame(quarantine, columns=["Metadata_Plate", "Metadata_Well", "Metadata_Site",
                                                      "Metadata_Channel", "File", "Reason"])
    return fields, quarantine_df, stats


def acquisition_record(listing: PlateListing) -> dict:
    """What the plate's ``cmcl`` attribute records: channels, the map used, where it comes from
    (``channel_source``: metadata, user, pixels) and why, the listing's notes, ignored files."""
    from pipeline.plates.acquisition import describe_channel_map

    acq = listing.acquisition
    return {"channels": list(listing.channels), "channel_map": dict(listing.channel_map),
            "channel_map_text": describe_channel_map(listing.channel_map, acq),
            "channel_source": listing.channel_source, "notes": list(listing.notes),
            "metadata_source": str(acq.source.relative_to(listing.root)) if acq is not None
            and acq.source.is_relative_to(listing.root) else (str(acq.source) if acq is not None else None),
            "pixel_size_um": list(acq.pixel_size_um) if acq is not None and acq.pixel_size_um else None,
            "objective": acq.objective if acq is not None else None,
            "ignored": list(listing.ignored)}


def compute_illumination(plan: PlatePlan, fields: pd.DataFrame, settings: IngestSettings,
                         stats: IlluminationStats | None = None, *, qc: bool = True) -> np.ndarray:
    """Illumination functions (C, Y, X) float32 of the staged plate, saved with QC PNGs
    (``qc=False``: without; :func:`illumination_qc` writes them).

    From the plate's streaming statistics (``stats``, gathered by :func:`write_images` while it
    wrote the fields; when absent or not covering every field, one pass over the staged fields
    gathers them): the per-bin mean background of every channel (and for ``'mean'`` the
    per-pixel mean), whatever the plate size. From them: the dark offset per channel when
    ``settings.illumination_dark`` is None (:func:`pipeline.images.illumination.estimate_dark`), the
    function of ``'mean'`` or ``'background'``, and the flatness QC of the corrected background
    per channel. ``'median'`` then stacks one channel of at most
    ``settings.illumination_max_fields`` fields, a deterministic evenly spread subsample
    (:func:`pipeline.images.illumination.subsample`). When the vendor metadata holds a flat-field
    profile (Harmony), the RMS difference between it and cmcl's function is recorded per channel
    (``harmony_rms``).

    Raises
    ------
    ValueError
        If no field was written.
    """
    plate = open_plate(plan.staging / "plate.ome.zarr")
    if fields.empty:
        raise ValueError(f"plate {plan.plate}: no valid field to estimate illumination from")
    paths = list(fields["Metadata_FieldPath"])
    channels = plan.listing.channels
    ff = settings.illumination_filter_fraction
    with_mean = settings.illumination_method == "mean"
    shape = tuple(plate[f"{paths[0]}/0"].shape)
    if stats is None or stats.count(shape) != len(paths) or (with_mean and shape not in stats.mean):
        stats = IlluminationStats()
        for p in paths:
            stats.add(read_field(plate, p), with_mean=with_mean)
    bg_acc = stats.background[shape]
    background = bg_acc.background()
    mean = stats.mean[shape].mean() if with_mean else None
    if settings.illumination_dark is None:
        noise = bg_acc.noise()
        dark = [illum.estimate_dark(noise[c], background[c]) for c in range(len(channels))]
    else:
        dark = [float(settings.illumination_dark)] * len(channels)
    if settings.illumination_method == "median":
        used = [paths[i] for i in illum.subsample(len(paths), settings.illumination_max_fields)]
        funcs = np.stack([
            illum.estimate(np.stack([plate[f"{p}/0"][c] for p in used]), method="median", dark=dark[c],
                           filter_fraction=ff)
            for c in range(len(channels))])
    else:
        used = paths
        combined = mean if settings.illumination_method == "mean" else background
        # one channel per thread (scipy and numpy release the GIL): the workers are idle meanwhile
        with ThreadPoolExecutor(max_workers=min(len(channels), os.cpu_count() or 1)) as threads:
            funcs = np.stack(list(threads.map(lambda c: illum.smooth(combined[c] - dark[c], filter_fraction=ff),
                                              range(len(channels)))))
    flat = {name: dict(zip(("raw_cv", "corrected_cv"), illum.flatness(background[c], funcs[c], dark=dark[c])))
            for c, name in enumerate(channels)}
    harmony = _vendor_flatfield_rms(plan.listing, funcs)
    grp = zarr.open_group(str(plan.staging / "illumination.zarr"), mode="w", zarr_format=3)
    from zarr.codecs import BloscCodec, Crc32cCodec

    # smooth float32 planes: LZ4 with byte shuffling, 1.96x smaller in half zstd's time (~50 ms)
    arr = grp.create_array("function", shape=funcs.shape, chunks=(1, *funcs.shape[1:]), dtype="float32",
                           dimension_names=("c", "y", "x"), config={"write_empty_chunks": True},
                           compressors=(BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec()))
    arr[:] = funcs
    grp.attrs.update({"channels": list(channels), "method": settings.illumination_method,
                      "filter_fraction": ff, "dark": dark, "dark_estimated": settings.illumination_dark is None,
                      "flatness": flat, "harmony_rms": harmony, "n_fields": int(len(fields)),
                      "n_fields_used": len(used)})
    if qc:
        illumination_qc(plan, funcs)
    return funcs


def illumination_qc(plan: PlatePlan, funcs: np.ndarray) -> None:
    """The illumination QC PNGs of :func:`compute_illumination` (one per channel)."""
    _illumination_png(funcs, plan.staging / "illumination_qc", channels=plan.listing.channels)


def warm_kernels(features: str) -> None:
    """Run the illumination statistics, segmentation, crops, focus score and (unless
    ``'none'``) features once on a tiny field, so that a process loads their compiled (numba)
    kernels from the on-disk cache (~1 s) before its first real field: the workers' fork server does it once for
    all workers (:mod:`pipeline.ingest.warm`), and idle workers do it for the features while the main
    process computes the illumination functions. Best effort."""
    try:
        yy, xx = np.mgrid[:48, :48]
        dna = np.where((yy - 24) ** 2 + (xx - 24) ** 2 < 64, 3000.0, 100.0).astype(np.float32)
        # sampled every other pixel, as real fields are (the kernels are compiled per array layout)
        illum.BackgroundAccumulator(full_resolution_below=1).add(np.stack([dna.astype(np.uint16)] * 2))
        nuclei = segment_nuclei(dna)
        cells = segment_cells(nuclei, dna)
        image = np.stack([dna] * len(CHANNELS))
        crop_cells(image, nuclei, cells, crop_size=16, border="pad", channel_names=CHANNELS)
        _focus_score(dna, nuclei)
        if features != "none":
            measure_objects(image, nuclei, cells, channel_names=CHANNELS, feature_set=features)
    except Exception:  # noqa: BLE001 - a warm-up only; the real call reports any problem
        pass


def _vendor_flatfield_rms(listing: PlateListing, funcs: np.ndarray) -> dict[str, float]:
    """Channel -> RMS difference between cmcl's function and the vendor's flat-field profile."""
    from pipeline.plates.acquisition import AcquisitionError
    from pipeline.plates.vendors.phenix import flatfield_image

    acq = listing.acquisition
    out: dict[str, float] = {}
    if acq is None or not acq.flatfield:
        return out
    for vid, role in listing.channel_map.items():
        profile = acq.flatfield.get(vid)
        if profile is None or role not in listing.channels:
            continue
        try:
            ref = flatfield_image(profile, shape=funcs.shape[1:])
        except AcquisitionError:
            continue
        out[role] = illum.compare_profiles(funcs[listing.channels.index(role)], ref)
    return out


def _illumination_png(funcs: np.ndarray, out: Path, *, channels: tuple[str, ...]) -> None:
    """One viridis PNG per channel (function scaled to its min..max, written in the PNG's text
    chunks), at most 540 px a side (the function is smooth; a 1080 px PNG costs 4x to encode).
    Drawn without matplotlib figures, which cost ~0.5 s each."""
    from matplotlib import colormaps
    from PIL import Image, PngImagePlugin

    out.mkdir(parents=True, exist_ok=True)
    lut = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    step = max(1, -(-max(funcs.shape[1:]) // 540))
    for c, name in enumerate(channels):
        f = funcs[c][::step, ::step]
        lo, hi = float(f.min()), float(f.max())
        idx = np.zeros(f.shape, np.uint8) if hi <= lo else np.round((f - lo) / (hi - lo) * 255).astype(np.uint8)
        info = PngImagePlugin.PngInfo()
        info.add_text("Title", f"{name} illumination function")
        info.add_text("Range", f"{lo:.4f}..{hi:.4f}")
        Image.fromarray(lut[idx]).save(out / f"{name}.png", pnginfo=info)


def _focus_score(dna: np.ndarray, nuclei: np.ndarray) -> float:
    """Sharpness of the nuclei's edges, about one over the edge's width in pixels: per nucleus,
    the median Sobel gradient on its boundary pixels over its contrast (its mean DNA minus the
    median outside all nuclei); the field's score is the median over nuclei, so one blurred
    object (debris, a mitotic cell) does not decide it. Unlike the variance of the Laplacian it
    depends neither on how many nuclei a field holds nor on a few saturated specks (on the
    generator's plates the Laplacian's range among in-focus fields was 0.4-75 and overlapped
    the defocused ones'; this score's is ~0.38-0.43 against ~0.18-0.20). NaN without nuclei."""
    x = np.ascontiguousarray(dna, np.float32)
    lab = np.ascontiguousarray(nuclei)
    labels, gx, gy, sums, counts = _boundary_sobel(x, lab, int(lab.max()))
    fg = lab[::4, ::4] > 0
    outside = x[::4, ::4][~fg]
    if labels.size == 0 or outside.size == 0:
        return float("nan")
    ids = np.unique(labels)
    edge = np.asarray(ndi.median(np.hypot(gx, gy) / 8, labels=labels, index=ids), np.float64)
    contrast = sums[ids] / counts[ids] - float(np.median(outside))
    return float(np.median(edge / np.maximum(contrast, 1e-6)))


@njit(cache=True)
def _on_boundary(lab, r, c, k):
    """Pixel (r, c) of object ``k`` touches another label (4-neighbours), away from the edge."""
    h, w = lab.shape
    return 0 < r < h - 1 and 0 < c < w - 1 and (
        lab[r - 1, c] != k or lab[r + 1, c] != k or lab[r, c - 1] != k or lab[r, c + 1] != k)


@njit(cache=True)
def _boundary_sobel(x, lab, n_lab):
    """For :func:`_focus_score`, in one pass: the label and the Sobel gradients (float32) of
    every boundary pixel of an object away from the image's edge (a pixel whose 4-neighbours
    hold another label), in raster order, and each object's pixel sum (float64, raster order)
    and count (labels up to ``n_lab``)."""
    h, w = lab.shape
    sums = np.zeros(n_lab + 1)
    counts = np.zeros(n_lab + 1, np.int64)
    n = 0
    for r in range(h):
        for c in range(w):
            k = lab[r, c]
            if k == 0:
                continue
            sums[k] += x[r, c]
            counts[k] += 1
            if _on_boundary(lab, r, c, k):
                n += 1
    labels = np.empty(n, lab.dtype)
    gx = np.empty(n, np.float32)
    gy = np.empty(n, np.float32)
    two = np.float32(2)
    i = 0
    for r in range(1, h - 1):
        for c in range(1, w - 1):
            k = lab[r, c]
            if k == 0 or not _on_boundary(lab, r, c, k):
                continue
            labels[i] = k
            gx[i] = (x[r - 1, c + 1] + two * x[r, c + 1] + x[r + 1, c + 1]) - (
                x[r - 1, c - 1] + two * x[r, c - 1] + x[r + 1, c - 1])
            gy[i] = (x[r + 1, c - 1] + two * x[r + 1, c] + x[r + 1, c + 1]) - (
                x[r - 1, c - 1] + two * x[r - 1, c] + x[r - 1, c + 1])
            i += 1
    return labels, gx, gy, sums, counts


#: Cytoplasm stains for growing cells, best first (AGP outlines cells; RNA and ER fill them).
_CYTO_PREFERENCE = ("AGP", "RNA", "ER", "Mito")


def cyto_channel(channels: tuple[str, ...], preferred: str = "AGP") -> str | None:
    """The channel cells are grown on: ``preferred`` if the plate has it, else the best one it
    has (:data:`_CYTO_PREFERENCE`), else None (a DNA-only plate: cells are the nuclei)."""
    for c in (preferred, *_CYTO_PREFERENCE):
        if c in channels:
            return c
    return None


def _process_field(writer: PlateWriter, funcs: np.ndarray, field: tuple[str, int, str],
                   settings: IngestSettings, dark: list[float] | float = 0.0, clock: _Clock | None = None
                   ) -> tuple[np.ndarray, pd.DataFrame, dict, np.ndarray | None, pd.DataFrame | None]:
    """Correct, segment, crop and measure one staged field; writes its labels.

    Returns the field's crops, cell table, QC row, with ``settings.field_tile_size`` its
    (rows, cols, C, S, S) uint16 grid tiles (else None), and unless ``settings.features`` is
    ``'none'`` the CellProfiler features of the cropped cells, row for row, in the plate's
    channels (else None). Channels the plate lacks get NaN ``Intensity_Mean_<channel>`` columns.
    """
    well, site, path = field
    plate_id = writer.plate
    channels = writer.channels
    clock = clock or _Clock()
    raw = read_field(writer.root, path)
    clock.lap("read_staged")
    corrected = illum.apply(raw, funcs, dark=dark)
    clock.lap("correct")
    cyto = cyto_channel(channels, settings.cyto_channel)
    if cyto is None:  # DNA only: one "cell" per nucleus, the nucleus itself
        nuclei, _ = segment_field(corrected[0], corrected[0], segmenter=settings.segmenter,
                                  cellpose_model=settings.cellpose_model, cellpose_diameter=settings.cellpose_diameter)
        cells = nuclei.copy()
    else:
        nuclei, cells = segment_field(corrected[0], corrected[channels.index(cyto)],
                                      segmenter=settings.segmenter, cellpose_model=settings.cellpose_model,
                                      cellpose_cell_model=settings.cellpose_cell_model,
                                      cellpose_diameter=settings.cellpose_diameter)
    clock.lap("segment")
    writer.write_labels(well, int(path.rsplit("/", 1)[1]), {"nuclei": nuclei, "cells": cells})
    clock.lap("write_labels")
    crops, table = crop_cells(corrected, nuclei, cells, crop_size=settings.crop_size, border=settings.border,
                              channel_names=channels)
    clock.lap("crops")
    feats = None
    if settings.features != "none":  # same corrected pixels and labels as the crops, same process
        feats = measure_objects(corrected, nuclei, cells, channel_names=channels, feature_set=settings.features,
                                ids=table["Metadata_CellID"].to_numpy())
        clock.lap("features")
    for c in CHANNELS:
        if c not in channels:
            table[f"Intensity_Mean_{c}"] = np.float32(np.nan)
    tiles = None
    if settings.field_tile_size is not None:
        ts = settings.field_tile_size
        grid = (corrected.shape[1] // ts, corrected.shape[2] // ts)
        tiles = np.clip(np.rint(field_tiles(corrected, tile_size=ts)), 0,
                        np.iinfo(np.uint16).max).astype(np.uint16).reshape(*grid, len(channels), ts, ts)
    qc = dict(Metadata_Plate=plate_id, Metadata_Well=well, Metadata_Site=int(site), Metadata_FieldPath=path,
              Count_Nuclei=int(nuclei.max()), Count_Crops=len(table), **crop_counts(nuclei, table),
              QC_FocusScore=_focus_score(corrected[0], nuclei),
              QC_SaturatedFraction=np.count_nonzero(raw == np.iinfo(raw.dtype).max) / raw.size)
    clock.lap("tiles_qc")
    return crops, table, qc, tiles, feats


def _process_batch(plate_path: str, funcs_path: str, batch: list[tuple[str, int, str]], settings: IngestSettings,
                   plate_id: str) -> tuple[list[tuple[np.ndarray, pd.DataFrame, dict, np.ndarray | None,
                                                    pd.DataFrame | None]], dict[str, float]]:
    """Process a batch of fields (one task of a worker process): plate and functions opened once.
    Returns the fields' results and the worker's seconds per step."""
    _one_codec_thread()
    grp = zarr.open_group(funcs_path, mode="r", zarr_format=3)
    px = open_plate(plate_path).attrs.get("cmcl", {}).get("pixel_size_um")  # labels get the image's scale
    writer = PlateWriter(plate_path, plate=plate_id, channels=tuple(grp.attrs["channels"]), resume=True,
                         pixel_size_um=px)
    funcs = grp["function"][:]
    dark = grp.attrs["dark"]  # per channel, given or estimated (compute_illumination)
    clock = _Clock()
    return [_process_field(writer, funcs, f, settings, dark, clock) for f in batch], clock.seconds


def default_processes(n_fields: int) -> int:
    """Worker processes for per-field work: all cores (at most 8) when there is enough work."""
    return 1 if n_fields < 24 else max(1, min(8, os.cpu_count() or 1))


def segment_and_tile(
    plan: PlatePlan,
    fields: pd.DataFrame,
    settings: IngestSettings,
    *,
    processes: int | None = None,
    progress: Progress | None = None,
    pool=None,
    timings: dict[str, float] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Segment every staged field, write its labels and crops; return (cells, fields) tables.

    Fields are processed in batches of :data:`BATCH_FIELDS` by ``processes`` worker processes
    (default: :func:`default_processes`; or ``pool``, an executor to reuse); results are
    gathered in field order, so the output is identical whatever the number of processes.
    ``timings``, when given, receives the workers' seconds per step. Only a few fields per
    process are in memory at a time; crops are appended to ``crops.zarr`` in chunk-sized blocks.

    With ``settings.field_tile_size`` every field is also cut into a grid of non-overlapping
    tiles, appended to the array ``tiles`` (T, C, S, S) uint16 of the same group, and described by
    the ``tiles`` table written to ``plan.staging / 'tiles.parquet'``.

    Unless ``settings.features`` is ``'none'``, every cropped cell's CellProfiler features
    (:func:`pipeline.features.measure.measure_objects`, in the worker that cut its crop) go to the
    ``features`` table at ``plan.staging / 'features.parquet'``, keyed like the cells table.

    After all fields, ``QC_OutOfFocus`` flags fields whose focus score is below
    ``settings.focus_outlier_fraction`` x the plate's median score.
    """
    plate_id = plan.plate
    plate_path = str(plan.staging / "plate.ome.zarr")
    funcs_path = str(plan.staging / "illumination.zarr")
    s = settings.crop_size
    crops_grp = zarr.open_group(str(plan.staging / "crops.zarr"), mode="w", zarr_format=3)
    channels = plan.listing.channels
    crops_arr = CropArrayWriter(crops_grp, "crops", n_channels=len(channels), size=s,
                                chunk=settings.crops_chunk, shard=settings.crops_shard)
    # the settings let `cmcl verify --deep --repair` re-derive damaged crops and labels from the plate
    crops_grp.attrs.update({"channels": list(channels), "crop_size": s, "ingest_settings": asdict(settings)})
    ts = settings.field_tile_size
    tiles_arr = None
    if ts is not None:
        # a 128-px tile holds four 64-px crops' pixels: a quarter of the rows per chunk and shard
        tiles_arr = CropArrayWriter(crops_grp, "tiles", n_channels=len(channels), size=ts,
                                    chunk=max(1, settings.crops_chunk // 4), shard=max(1, settings.crops_shard // 4))
        crops_grp.attrs["tile_size"] = ts
    tile_rows: list[pd.DataFrame] = []
    n_tiles = 0
    records = [(r.Metadata_Well, int(r.Metadata_Site), r.Metadata_FieldPath) for r in fields.itertuples(index=False)]
    batches = [records[i:i + BATCH_FIELDS] for i in range(0, len(records), BATCH_FIELDS)]
    n_proc = processes or default_processes(len(records))
    work = partial(_process_batch, plate_path, funcs_path, settings=settings, plate_id=plate_id)
    n_total = done = 0
    cell_tables, field_rows, feature_tables = [], [], []
    with _executor(n_proc, pool) as ex:
        for batch, seconds in _map_in_order(ex, work, batches):
            if timings is not None:
                _add_seconds(timings, seconds)
            for crops, table, qc, tiles, feats in batch:
                well, site = qc["Metadata_Well"], qc["Metadata_Site"]
                table.insert(0, "Metadata_Site", np.int32(site))
                table.insert(0, "Metadata_Well", well)
                table.insert(0, "Metadata_Plate", plate_id)
                table.insert(4, "Metadata_CropIndex", np.arange(n_total, n_total + len(table), dtype=np.int64))
                if feats is not None:
                    feats = feats.drop(columns="Metadata_CellID")
                    feats.insert(0, "Metadata_CropIndex", table["Metadata_CropIndex"].to_numpy())
                    for k, c in enumerate(("Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_CellID")):
                        feats.insert(k, c, table[c].to_numpy())
                    feature_tables.append(feats)
                n_total += len(table)
                cell_tables.append(table)
                field_rows.append(qc)
                if tiles_arr is not None:
                    tile_rows.append(_tile_table(plate_id, well, site, tiles.shape[:2], start=n_tiles, tile_size=ts))
                    tiles_arr.append(tiles.reshape(-1, *tiles.shape[2:]))
                    n_tiles += tiles.shape[0] * tiles.shape[1]
                crops_arr.append(crops)
                done += 1
                if progress:
                    progress("segment", done - 1, len(records))
    n_written = crops_arr.close()
    n_tiles_written = tiles_arr.close() if tiles_arr is not None else 0
    cells_df = pd.concat(cell_tables, ignore_index=True) if cell_tables else arrow_schema("cells").empty_table().to_pandas()
    if n_written != len(cells_df):
        raise RuntimeError(f"plate {plate_id}: {n_written} crops written but {len(cells_df)} cell rows")
    fields_df = pd.DataFrame(field_rows) if field_rows else arrow_schema("fields").empty_table().to_pandas()
    if len(fields_df):
        median_focus = float(fields_df["QC_FocusScore"].median())  # NaN (no nuclei) left out; never flagged
        fields_df["QC_OutOfFocus"] = (fields_df["QC_FocusScore"] < settings.focus_outlier_fraction * median_focus).fillna(False)
    else:
        fields_df["QC_OutOfFocus"] = pd.Series(dtype=bool)
    if tiles_arr is not None:
        tiles_df = pd.concat(tile_rows, ignore_index=True) if tile_rows else _tile_table(plate_id, "", 0, (0, 0), start=0, tile_size=ts)
        if n_tiles_written != len(tiles_df):
            raise RuntimeError(f"plate {plate_id}: {n_tiles_written} tiles written but {len(tiles_df)} tile rows")
        write_table(tiles_df, "tiles", plan.staging / "tiles.parquet")
    if settings.features != "none":
        feats_df = pd.concat(feature_tables, ignore_index=True) if feature_tables else pd.DataFrame(
            {c: pd.Series(dtype=t) for c, t in (("Metadata_Plate", object), ("Metadata_Well", object),
                                                ("Metadata_Site", np.int32), ("Metadata_CellID", np.int32),
                                                ("Metadata_CropIndex", np.int64))})
        if len(feats_df) != len(cells_df):
            raise RuntimeError(f"plate {plate_id}: {len(feats_df)} feature rows but {len(cells_df)} cell rows")
        write_table(feats_df, "features", plan.staging / "features.parquet")
    return cells_df, fields_df


def _tile_table(plate: str, well: str, site: int, grid: tuple[int, int], *, start: int,
                tile_size: int) -> pd.DataFrame:
    """Rows of the ``tiles`` table for one field's (rows, cols) grid of tiles, row-major."""
    n_cols = max(grid[1], 1)
    n = grid[0] * grid[1]
    idx = np.arange(n)
    return pd.DataFrame({
        "Metadata_Plate": pd.Series([plate] * n, dtype=object),
        "Metadata_Well": pd.Series([well] * n, dtype=object),
        "Metadata_Site": np.full(n, site, np.int32),
        "Metadata_TileIndex": np.arange(start, start + n, dtype=np.int64),
        "Tile_Row": (idx // n_cols).astype(np.int32),
        "Tile_Col": (idx % n_cols).astype(np.int32),
        "Tile_Y0": ((idx // n_cols) * tile_size).astype(np.int32),
        "Tile_X0": ((idx % n_cols) * tile_size).astype(np.int32),
    })


def _map_in_order(ex, fn: Callable, items: list, *, help_first: bool = False) -> Iterator:
    """``fn`` over ``items``, results in order: on the pool ``ex`` (here when None). With
    ``help_first`` this process computes the first item itself while the others are submitted
    from a thread: starting a new pool's workers blocks until its fork server has imported and
    warmed up (~1.5 s, on one core), which would otherwise leave the other core idle."""
    if ex is None:
        yield from map(fn, items)
        return
    if not help_first or len(items) < 2:
        yield from ex.map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmcl-submit") as submitter:
        submitted = submitter.submit(lambda: [ex.submit(fn, item) for item in items[1:]])
        yield fn(items[0])
        futures = submitted.result()[::-1]
        while futures:  # dropped once consumed: a plate's results are never all held at once
            yield futures.pop().result()


@contextmanager
def _executor(processes: int, pool=None):
    """``pool`` when given (an executor the caller keeps), else a process pool of ``processes``
    workers forked from a warm fork server (:func:`pipeline.ingest.pool.pool_context`, which imports
    :mod:`pipeline.ingest.warm`: this module and its compiled kernels, loaded once), or None for one
    process."""
    if pool is not None:
        yield pool
        return
    if processes <= 1:
        yield None
        return
    with process_pool(processes, pool_context(["pipeline.ingest.warm"])) as pool:
        yield pool


def publish(plan: PlatePlan, store: Store, *, fields: pd.DataFrame, cells: pd.DataFrame,
            quarantine: pd.DataFrame, layout: str) -> PlateResult:
    """Move the staged plate into the store, write its tables and mark it complete."""
    plate = plan.plate
    platemap = (plan.platemap.copy() if plan.platemap is not None
                else folder_platemap(plan) if plan.listing.platemap is not None
                else pd.DataFrame(columns=["Metadata_Plate", "Metadata_Well", "Metadata_CompoundID", "Metadata_SMILES",
                                           "Metadata_Concentration", "Metadata_ControlType"]))
    imaged = set(fields["Metadata_Well"])
    unmapped = sorted(imaged - set(platemap["Metadata_Well"]))
    if unmapped:
        extra = pd.DataFrame({"Metadata_Plate": plate, "Metadata_Well": unmapped, "Metadata_CompoundID": None,
                              "Metadata_SMILES": None, "Metadata_Concentration": np.nan,
                              "Metadata_ControlType": "unmapped"})
        platemap = pd.concat([platemap, extra], ignore_index=True) if len(platemap) else extra
    platemap["Metadata_Plate"] = plate
    platemap["Metadata_HasImages"] = platemap["Metadata_Well"].isin(imaged)
    update_ledger(store, dict(Metadata_Plate=plate, Source=str(plan.listing.root), Fingerprint=plan.fingerprint,
                              Status="running", Layout=layout, N_Fields=0, N_Quarantined=0, N_Cells=0, Error=None,
                              ChannelSource=plan.listing.channel_source))
    moves = [(plan.staging / "plate.ome.zarr", store.plate_zarr(plate)),
             (plan.staging / "illumination.zarr", store.illumination_zarr(plate)),
             (plan.staging / "illumination_qc", store.root / "illumination" / plate),
             (plan.staging / "crops.zarr", store.crops_zarr(plate))]
    for src, dst in moves:
        if dst.exists():
            shutil.rmtree(dst)
        if src.exists():  # a plate without a good field has no illumination functions
            dst.parent.mkdir(parents=True, exist_ok=True)
            src.rename(dst)
    write_table(platemap.sort_values("Metadata_Well", ignore_index=True), "platemap", store.table_path("platemap", plate=plate))
    write_table(fields, "fields", store.table_path("fields", plate=plate))
    write_table(cells, "cells", store.table_path("cells", plate=plate))
    write_table(quarantine, "quarantine", store.table_path("quarantine", plate=plate))
    for name in ("tiles", "features"):
        path = store.table_path(name, plate=plate)
        if (plan.staging / f"{name}.parquet").is_file():  # validated when staged
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(plan.staging / f"{name}.parquet", path)
        else:  # this ingest made none: a table left by an earlier one would describe other cells
            path.unlink(missing_ok=True)
    shutil.rmtree(plan.staging)
    from pipeline.plates.acquisition import describe_channel_map

    result = PlateResult(plate=plate, source=str(plan.listing.root), status="complete", layout=layout,
                         n_fields=len(fields), n_quarantined=len(quarantine), n_cells=len(cells),
                         channel_map=describe_channel_map(plan.listing.channel_map, plan.listing.acquisition,
                                                          source=plan.listing.channel_source),
                         channel_source=plan.listing.channel_source, notes=list(plan.listing.notes),
                         n_ignored=len(plan.listing.ignored),
                         summary=plate_summary(plate, n_fields=len(fields), n_cells=len(cells), quarantine=quarantine),
                         nothing_stored="" if len(fields) else nothing_stored(plate, quarantine=quarantine))
    update_ledger(store, dict(Metadata_Plate=plate, Source=result.source, Fingerprint=plan.fingerprint,
                              Status="complete", Layout=layout, N_Fields=result.n_fields,
                              N_Quarantined=result.n_quarantined, N_Cells=result.n_cells, Error=None,
                              ChannelSource=plan.listing.channel_source))
    return result


def is_current(plan: PlatePlan, store: Store) -> bool:
    """True when the ledger holds this plate complete with the same fingerprint and its outputs exist."""
    entry = ledger_entry(store, plan.plate)
    return bool(entry and entry["Status"] == "complete" and entry["Fingerprint"] == plan.fingerprint
                and store.plate_zarr(plan.plate).exists() and store.crops_zarr(plan.plate).exists())


def _check_writable(store: Store) -> None:
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


def plate_summary(plate: str, *, n_fields: int, n_cells: int, quarantine: pd.DataFrame) -> str:
    """One line about an ingested plate: fields, cells and the quarantine by reason.

    Reasons are grouped by their text before the first ``:`` or ``(`` (e.g. ``missing channel
    ER``, ``path outside the plate folder``), most frequent first.
    """
    line = f"plate {plate}: {n_fields} field(s), {n_cells} cell(s), {len(quarantine)} image(s) quarantined"
    if len(quarantine):
        line += " (" + "; ".join(f"{n} {k}" for k, n in _reason_counts(quarantine).items()) + ")"
    return line


def _reason_counts(quarantine: pd.DataFrame) -> pd.Series:
    """Quarantine reasons grouped by their text before the first ``:`` or ``(``, most frequent first."""
    kinds = (quarantine["Reason"].astype(str).str.replace(r"^[^:]*row \d+: ", "", regex=True)
             .str.split(r"[:(]", n=1, regex=True).str[0].str.strip())
    return kinds.value_counts()


def nothing_stored(plate: str, *, quarantine: pd.DataFrame) -> str:
    """One line for a plate that stored no field: the three commonest quarantine reasons, or
    that no field was listed at all. A run whose plate stores nothing is a failure (the CLI
    exits non-zero, a served inbox reports it)."""
    counts = _reason_counts(quarantine) if len(quarantine) else pd.Series(dtype=int)
    why = ("; ".join(f"{n} {k}" for k, n in counts.head(3).items()) if len(counts)
           else "no field of the folder was listed")
    return (f"plate {plate}: no field stored ({why}); see `cmcl inspect quarantine` for every refused image")


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
    _check_writable(store)
    plan = plan_plate(plate_dir, store, settings, plate_id=plate_id)
    if plan.listing.platemap is not None:  # a bad plate map fails now, not after the plate's work
        folder_platemap(plan)
    # a few fields' pixels find DNA (no map) or check the map's DNA, before anything is written
    return _with_fields(plan, listing=check_channels(plan.listing))


def skipped_result(plan: PlatePlan, store: Store) -> PlateResult:
    """The result of a plate found current: its counts and summary as the ledger and its
    quarantine table hold them."""
    done = ledger_entry(store, plan.plate) or {}
    n_fields, n_cells = int(done.get("N_Fields", 0)), int(done.get("N_Cells", 0))
    qpath = store.table_path("quarantine", plate=plan.plate)
    quarantine = read_table("quarantine", qpath, ["Reason"]) if qpath.is_file() else pd.DataFrame(columns=["Reason"])
    source = done.get("ChannelSource")  # absent (None) or NaN in a ledger written before it was recorded
    return PlateResult(plate=plan.plate, source=str(plan.listing.root), status="skipped", layout=plan.listing.layout,
                       n_fields=n_fields, n_quarantined=int(done.get("N_Quarantined", 0)), n_cells=n_cells,
                       summary=plate_summary(plan.plate, n_fields=n_fields, n_cells=n_cells, quarantine=quarantine)
                       + " (unchanged)", channel_source=source if isinstance(source, str) else "",
                       nothing_stored="" if n_fields else nothing_stored(plan.plate, quarantine=quarantine))


def _call(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def start_workers(settings: IngestSettings) -> None:
    """Start the workers' fork server now, preloading what plates ingested with ``settings`` need
    (:func:`pipeline.ingest.pool.start_pool_server`; no-op once it runs): a caller with its own start-up
    to do (the ``cmcl ingest`` command importing Prefect) overlaps it with the server's imports."""
    start_pool_server(["pipeline.ingest.warm"] + (["pipeline.ingest.warm_features"] if settings.features != "none" else []))


def ingest_plate(
    plate_dir: str | Path,
    store: Store,
    settings: IngestSettings = IngestSettings(),
    *,
    force: bool = False,
    lock_timeout: float | None = None,
    processes: int | None = None,
    progress: Progress | None = None,
    replace: bool = False,
    plate_id: str | None = None,
    run_stage: StageRunner = _call,
) -> PlateResult:
    """Ingest one plate folder end to end (all four stages), incrementally.

    This is the one control flow of ingestion: :func:`preflight` (no pixel read), then, under
    the plate's lock, :func:`check_plate_source`, :func:`write_images`,
    :func:`compute_illumination` (skipped when no field is good), :func:`segment_and_tile` and
    :func:`publish`. Unchanged plates (same fingerprint, complete in the ledger) are skipped
    unless ``force`` (:func:`skipped_result`). A folder whose plate ID the store holds from
    another folder is refused unless ``replace``; ``plate_id`` ingests it under another ID.
    A per-plate lock makes a concurrent ingest of the same plate wait (or fail after
    ``lock_timeout`` seconds) and then find the plate already done. A plate whose every image
    is refused completes with 0 fields and its quarantine table.

    ``run_stage(name, fn, *args, **kwargs)`` runs each stage (names: ``preflight``,
    ``write-images``, ``illumination``, ``segment-and-tile``, ``publish``); an orchestrator
    passes one that wraps them in its tasks (:mod:`flows.ingest`).

    Raises
    ------
    PermissionError
        If the store is not writable (checked before any work; the message names the store).
    NotADirectoryError
        If the store path is a file.
    ValueError
        If the plate folder's ``platemap.csv`` is empty or malformed (checked before any work;
        the message names the file).
    PlateConflictError
        If another folder owns the plate ID (checked before any work; names both folders).
    """
    if processes is None or processes > 1:  # its imports overlap the planning below
        start_workers(settings)
    plan = run_stage("preflight", preflight, plate_dir, store, settings, plate_id=plate_id)
    with file_lock(store.root / "locks" / f"{plan.plate}.lock", timeout=lock_timeout):
        check_plate_source(plan, store, replace=replace)
        if not force and is_current(plan, store):
            return skipped_result(plan, store)
        t: dict[str, float] = {}
        work: dict[str, float] = {}
        n_proc = processes or default_processes(len(plan.listing.images.groupby(["Metadata_Well", "Metadata_Site"])))
        with _executor(n_proc) as pool:  # one set of workers for both passes over the plate
            t0 = time.perf_counter()
            fields, quarantine, stats = run_stage("write-images", write_images, plan, settings, progress=progress,
                                                  processes=n_proc, pool=pool, timings=work)
            t["write"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            qc = None
            if pool is not None and len(fields):  # idle workers load pass 2's compiled kernels meanwhile
                for _ in range(n_proc):
                    pool.submit(warm_kernels, settings.features)
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmcl-illumination-qc") as drawer:
                if len(fields):
                    funcs = run_stage("illumination", compute_illumination, plan, fields, settings, stats, qc=False)
                    # the QC PNGs are drawn while the workers segment (the main thread mostly waits then)
                    qc = drawer.submit(illumination_qc, plan, funcs)
                t["illumination"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                cells, field_table = run_stage("segment-and-tile", segment_and_tile, plan, fields, settings,
                                               processes=n_proc, progress=progress, pool=pool, timings=work)
            if qc is not None:
                qc.result()  # the drawing's error, if any, is the plate's
            t["segment_tile"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = run_stage("publish", publish, plan, store, fields=field_table, cells=cells, quarantine=quarantine,
                           layout=plan.listing.layout)
        t["publish"] = time.perf_counter() - t0
        result.seconds = t
        result.worker_seconds = work
        return result
