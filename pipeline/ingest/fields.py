"""The second pass over a plate: per field, correct the illumination, segment nuclei and cells,
write the labels, cut the single-cell crops (and field tiles), measure the features, and collect
the cells and fields tables.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial

import numpy as np
import pandas as pd
import zarr

from pipeline.features.measure import measure_objects
from pipeline.images import illumination as illum
from pipeline.images.crops import crop_cells, crop_counts, field_tiles
from pipeline.images.qc import cyto_channel, focus_score
from pipeline.images.segmentation.classical import segment_cells, segment_nuclei
from pipeline.images.segmentation.dispatch import segment_field
from pipeline.store.crops import CropArrayWriter
from pipeline.ingest.batches import (BATCH_FIELDS, Clock, Progress, add_seconds, default_processes, executor,
                                     map_in_order, one_codec_thread)
from pipeline.ingest.plan import PlatePlan
from pipeline.ingest.settings import IngestSettings
from pipeline.store.omezarr import PlateWriter, open_plate, read_field
from pipeline.store.paths import CHANNELS
from pipeline.store.schema import arrow_schema, write_table

__all__ = ["segment_and_tile", "warm_kernels"]


def _process_field(writer: PlateWriter, funcs: np.ndarray, field: tuple[str, int, str],
                   settings: IngestSettings, dark: list[float] | float = 0.0, clock: Clock | None = None
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
    clock = clock or Clock()
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
              QC_FocusScore=focus_score(corrected[0], nuclei),
              QC_SaturatedFraction=np.count_nonzero(raw == np.iinfo(raw.dtype).max) / raw.size)
    clock.lap("tiles_qc")
    return crops, table, qc, tiles, feats


def _process_batch(plate_path: str, funcs_path: str, batch: list[tuple[str, int, str]], settings: IngestSettings,
                   plate_id: str) -> tuple[list[tuple[np.ndarray, pd.DataFrame, dict, np.ndarray | None,
                                                    pd.DataFrame | None]], dict[str, float]]:
    """Process a batch of fields (one task of a worker process): plate and functions opened once.
    Returns the fields' results and the worker's seconds per step."""
    one_codec_thread()
    grp = zarr.open_group(funcs_path, mode="r", zarr_format=3)
    px = open_plate(plate_path).attrs.get("cmcl", {}).get("pixel_size_um")  # labels get the image's scale
    writer = PlateWriter(plate_path, plate=plate_id, channels=tuple(grp.attrs["channels"]), resume=True,
                         pixel_size_um=px)
    funcs = grp["function"][:]
    dark = grp.attrs["dark"]  # per channel, given or estimated (compute_illumination)
    clock = Clock()
    return [_process_field(writer, funcs, f, settings, dark, clock) for f in batch], clock.seconds


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
    (default: :func:`pipeline.ingest.batches.default_processes`; or ``pool``, an executor to reuse); results are
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
    ts = settings.field_tile_size
    crops_arr, tiles_arr = _open_crop_arrays(plan, settings)
    tile_rows: list[pd.DataFrame] = []
    n_tiles = 0
    records = [(r.Metadata_Well, int(r.Metadata_Site), r.Metadata_FieldPath) for r in fields.itertuples(index=False)]
    batches = [records[i:i + BATCH_FIELDS] for i in range(0, len(records), BATCH_FIELDS)]
    n_proc = processes or default_processes(len(records))
    work = partial(_process_batch, str(plan.staging / "plate.ome.zarr"), str(plan.staging / "illumination.zarr"),
                   settings=settings, plate_id=plate_id)
    n_total = done = 0
    cell_tables, field_rows, feature_tables = [], [], []
    with executor(n_proc, pool) as ex:
        for batch, seconds in map_in_order(ex, work, batches):
            if timings is not None:
                add_seconds(timings, seconds)
            for crops, table, qc, tiles, feats in batch:
                well, site = qc["Metadata_Well"], qc["Metadata_Site"]
                _key_cells(table, feats, plate_id, well, site, start=n_total)
                if feats is not None:
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
    fields_df = _flag_out_of_focus(field_rows, settings.focus_outlier_fraction)
    if tiles_arr is not None:
        tiles_df = pd.concat(tile_rows, ignore_index=True) if tile_rows else _tile_table(plate_id, "", 0, (0, 0), start=0, tile_size=ts)
        if n_tiles_written != len(tiles_df):
            raise RuntimeError(f"plate {plate_id}: {n_tiles_written} tiles written but {len(tiles_df)} tile rows")
        write_table(tiles_df, "tiles", plan.staging / "tiles.parquet")
    if settings.features != "none":
        _write_features(feature_tables, plan, n_cells=len(cells_df))
    return cells_df, fields_df


def _open_crop_arrays(plan: PlatePlan, settings: IngestSettings) -> tuple[CropArrayWriter, CropArrayWriter | None]:
    """The staged ``crops.zarr`` group's crops array and, with ``settings.field_tile_size``, its
    tiles array (else None), created empty; the group's attributes record the settings."""
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
    return crops_arr, tiles_arr


def _key_cells(table: pd.DataFrame, feats: pd.DataFrame | None, plate: str, well: str, site: int, *,
               start: int) -> None:
    """Give one field's cell table (and its features table, row for row) the plate, well, site
    and crop index (from ``start``) keys of the store's tables, in place."""
    table.insert(0, "Metadata_Site", np.int32(site))
    table.insert(0, "Metadata_Well", well)
    table.insert(0, "Metadata_Plate", plate)
    table.insert(4, "Metadata_CropIndex", np.arange(start, start + len(table), dtype=np.int64))
    if feats is not None:
        feats.drop(columns="Metadata_CellID", inplace=True)
        feats.insert(0, "Metadata_CropIndex", table["Metadata_CropIndex"].to_numpy())
        for k, c in enumerate(("Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_CellID")):
            feats.insert(k, c, table[c].to_numpy())


def _flag_out_of_focus(field_rows: list[dict], fraction: float) -> pd.DataFrame:
    """The fields table, with ``QC_OutOfFocus`` where a field's focus score is below
    ``fraction`` x the plate's median score (a field without nuclei, NaN, is never flagged)."""
    fields_df = pd.DataFrame(field_rows) if field_rows else arrow_schema("fields").empty_table().to_pandas()
    if len(fields_df):
        median_focus = float(fields_df["QC_FocusScore"].median())  # NaN (no nuclei) left out; never flagged
        fields_df["QC_OutOfFocus"] = (fields_df["QC_FocusScore"] < fraction * median_focus).fillna(False)
    else:
        fields_df["QC_OutOfFocus"] = pd.Series(dtype=bool)
    return fields_df


def _write_features(feature_tables: list[pd.DataFrame], plan: PlatePlan, *, n_cells: int) -> None:
    """Write the staged ``features`` table (one row per cell of the cells table)."""
    feats_df = pd.concat(feature_tables, ignore_index=True) if feature_tables else pd.DataFrame(
        {c: pd.Series(dtype=t) for c, t in (("Metadata_Plate", object), ("Metadata_Well", object),
                                            ("Metadata_Site", np.int32), ("Metadata_CellID", np.int32),
                                            ("Metadata_CropIndex", np.int64))})
    if len(feats_df) != n_cells:
        raise RuntimeError(f"plate {plan.plate}: {len(feats_df)} feature rows but {n_cells} cell rows")
    write_table(feats_df, "features", plan.staging / "features.parquet")


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
        focus_score(dna, nuclei)
        if features != "none":
            measure_objects(image, nuclei, cells, channel_names=CHANNELS, feature_set=features)
    except Exception:  # noqa: BLE001 - a warm-up only; the real call reports any problem
        pass
