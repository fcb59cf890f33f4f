"""The last step of a plate: move its staged outputs into the store, write its tables, mark the
ledger complete; and the one-line summaries of an ingested (or unchanged) plate.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.ingest.plan import PlatePlan, folder_platemap
from pipeline.plates.acquisition import describe_channel_map
from pipeline.store.ledger import ledger_entry, update_ledger
from pipeline.store.paths import Store
from pipeline.store.schema import read_table, write_table

__all__ = ["PlateResult", "publish", "skipped_result", "plate_summary", "nothing_stored"]


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
             (plan.staging / "illumination_qc", store.illumination_qc_dir(plate)),
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
