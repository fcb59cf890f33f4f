"""The first pass over a plate: read and check every field, quarantine the bad ones, write the
good ones losslessly into the staging OME-Zarr plate (resumable field by field), and gather the
plate's illumination statistics on the way.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from pipeline.ingest.batches import (BATCH_FIELDS, Clock, Progress, add_seconds, default_processes, executor,
                                     map_in_order, one_codec_thread)
from pipeline.ingest.illumination import IlluminationStats
from pipeline.ingest.plan import PlatePlan
from pipeline.ingest.settings import IngestSettings
from pipeline.plates.acquisition import describe_channel_map
from pipeline.plates.discovery import PlateListing, split_well
from pipeline.store.omezarr import PlateWriter, field_path, preload_metadata_writer, read_field

__all__ = ["write_images", "acquisition_record"]


def _quarantine_row(plate: str, well: str | None, site: int | None, channel: str | None, file: str, reason: str) -> dict:
    return dict(Metadata_Plate=plate, Metadata_Well=well, Metadata_Site=site, Metadata_Channel=channel,
                File=file, Reason=reason)


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
    one_codec_thread()
    writer = PlateWriter(stage_plate, plate=plate, channels=channels, resume=True, pixel_size_um=pixel_size_um,
                         stains=stains)
    stats = IlluminationStats()
    clock = Clock()
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
    ``processes`` worker processes (default :func:`pipeline.ingest.batches.default_processes`; or ``pool``, an executor
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
        ``'mean'`` method), for :func:`pipeline.ingest.illumination.compute_illumination`.
    """
    settings = settings or IngestSettings()
    listing, plate = plan.listing, plan.plate
    resume = _open_staging(plan)
    jobs, refused = _field_jobs(listing)
    n_processes = processes or default_processes(len(jobs))
    if pool is None and n_processes <= 1:
        preload_metadata_writer()  # ome_zarr's ~1 s import happens while the fields are written
    stains, pixel_size = _channel_metadata(listing)
    writer = PlateWriter(plan.staging / "plate.ome.zarr", plate=plate, channels=listing.channels,
                         resume=resume and (plan.staging / "plate.ome.zarr").exists(), pixel_size_um=pixel_size,
                         stains=stains)
    quarantine: list[dict] = [
        _quarantine_row(plate, None, None, None, f, f"file name matches no pattern of the {listing.layout} layout")
        for f in listing.unmatched if "thumb" not in f.lower()]
    quarantine += [_quarantine_row(plate, r["Metadata_Well"], r["Metadata_Site"], r["Metadata_Channel"], r["File"],
                                   r["Reason"]) for r in listing.refused]
    quarantine += refused
    for well in sorted({j.well for j in jobs}):  # well groups exist before workers add fields to them
        r, c = split_well(well)
        writer.root.require_group(f"{r}/{c}")
    batches = [jobs[i:i + BATCH_FIELDS] for i in range(0, len(jobs), BATCH_FIELDS)]
    work = partial(_write_batch, str(writer.path), str(listing.root), plate=plate, channels=listing.channels,
                   pixel_size_um=pixel_size, stains=stains, with_mean=settings.illumination_method == "mean")
    records, stats = [], IlluminationStats()
    with executor(n_processes, pool) as ex:
        # this process writes the first batch itself while a new pool's workers start
        for batch_records, batch_stats, batch_seconds in map_in_order(ex, work, batches, help_first=True):
            # in batch order: a deterministic merge
            records += batch_records
            stats.merge(batch_stats)
            if timings is not None:
                add_seconds(timings, batch_seconds)
            if progress:
                progress("write", len(records) - 1, len(jobs))
        written, refused_late, plate_shape = _keep_plate_shape(records, writer, plate=plate, channels=listing.channels)
        fields = pd.DataFrame(written, columns=["Metadata_Well", "Metadata_Site", "Metadata_FieldPath"])
        by_well: dict[str, list[int]] = {}
        for fp in fields["Metadata_FieldPath"]:
            r, c, k = fp.split("/")
            by_well.setdefault(f"{r}{int(c):02d}", []).append(int(k))
        # the plate metadata through ome_zarr: in a worker, whose fork server imported it
        # (pipeline.ingest.warm), so this process never pays its ~1 s import
        finish = partial(_finalize, str(writer.path), plate=plate, channels=listing.channels, pixel_size_um=pixel_size,
                         stains=stains, fields=by_well, acquisition=acquisition_record(listing))
        if ex is not None:
            ex.submit(finish).result()
        else:
            finish()
    quarantine += refused_late
    stats.background = {k: v for k, v in stats.background.items() if k[1:] == plate_shape}
    stats.mean = {k: v for k, v in stats.mean.items() if k[1:] == plate_shape}
    quarantine_df = pd.DataFrame(quarantine, columns=["Metadata_Plate", "Metadata_Well", "Metadata_Site",
                                                      "Metadata_Channel", "File", "Reason"])
    return fields, quarantine_df, stats


def _finalize(path: str, *, plate: str, channels: tuple[str, ...], pixel_size_um, stains, fields: dict[str, list[int]],
              acquisition: dict) -> None:
    """:meth:`PlateWriter.finalize` of the staging plate at ``path`` (in a worker or here)."""
    PlateWriter(path, plate=plate, channels=channels, resume=True, pixel_size_um=pixel_size_um,
                stains=stains).finalize(fields, acquisition=acquisition)


def _open_staging(plan: PlatePlan) -> bool:
    """Make the plate's staging folder, marked with its fingerprint; True when an interrupted run
    with the same fingerprint left it (its fields are resumed), else it is emptied first."""
    stage = plan.staging
    marker = stage / "fingerprint.txt"
    resume = marker.is_file() and marker.read_text() == plan.fingerprint
    if not resume and stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True, exist_ok=True)
    marker.write_text(plan.fingerprint)
    return resume


def _channel_metadata(listing: PlateListing) -> tuple[dict[str, dict], tuple[float, ...] | None]:
    """The stains (name, excitation and emission wavelengths) per channel role, and the pixel
    size in µm, from the plate's vendor metadata (empty and None without it)."""
    acq = listing.acquisition
    stains = {}
    if acq is not None:
        for vid, role in listing.channel_map.items():
            info = acq.channel(vid)
            if info is not None:
                stains[role] = {k: v for k, v in (("stain", info.name), ("excitation_wavelength", info.excitation_nm),
                                                  ("emission_wavelength", info.emission_nm)) if v is not None}
    return stains, acq.pixel_size_um if acq is not None else None


def _keep_plate_shape(records: list[dict], writer: PlateWriter, *, plate: str, channels: tuple[str, ...]
                      ) -> tuple[list[dict], list[dict], tuple[int, ...] | None]:
    """Decide, from every field's records, the plate's shape (the most common one) and refuse
    the fields whose channels are unreadable, not uint16 or of another shape (removing those
    written before the shape was known). Returns the kept fields' rows, the refused channels'
    quarantine rows and the plate's shape."""
    shapes = [ch[0] for rec in records for ch in rec["channels"] if ch[0] is not None]
    plate_shape = max(set(shapes), key=shapes.count) if shapes else None
    written, quarantine = [], []
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
    return written, quarantine, plate_shape


def acquisition_record(listing: PlateListing) -> dict:
    """What the plate's ``cmcl`` attribute records: channels, the map used, where it comes from
    (``channel_source``: metadata, user, pixels) and why, the listing's notes, ignored files."""
    acq = listing.acquisition
    return {"channels": list(listing.channels), "channel_map": dict(listing.channel_map),
            "channel_map_text": describe_channel_map(listing.channel_map, acq),
            "channel_source": listing.channel_source, "notes": list(listing.notes),
            "metadata_source": str(acq.source.relative_to(listing.root)) if acq is not None
            and acq.source.is_relative_to(listing.root) else (str(acq.source) if acq is not None else None),
            "pixel_size_um": list(acq.pixel_size_um) if acq is not None and acq.pixel_size_um else None,
            "objective": acq.objective if acq is not None else None,
            "ignored": list(listing.ignored)}
