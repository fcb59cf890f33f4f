"""Prefect flows for profiles: well profiles from the store's single-cell features, imported
profile tables (pipeline.profiles.imports), feature selection, consensus and phenotypic activity
(pipeline.profiles.wells)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.progress import step_progress
from pipeline.profiles import wells as prof
from pipeline.profiles.choices import DEFAULT_NEGCON
from pipeline.profiles.controls import negcon_key, plates_normalized_to_all, record_negcon
from pipeline.features.measure import feature_columns
from pipeline.plates.discovery import fingerprint_files
from pipeline.store.provenance import code_fingerprint
from pipeline.store.atomic import write_text_atomic
from pipeline.store.schema import read_table, write_table
from pipeline.store.paths import Store

__all__ = ["profile_flow", "import_profiles_flow", "import_file_task", "imported_wells", "activity_of", "consistency_of"]


def _state_path(store: Store) -> Path:
    return store.path("profiles_state")


def _load_state(store: Store) -> dict[str, str]:
    p = _state_path(store)
    return json.loads(p.read_text()) if p.is_file() else {}


def _save_state(store: Store, state: dict[str, str]) -> None:
    write_text_atomic(json.dumps(state, indent=1, sort_keys=True), _state_path(store))


def _plate_fingerprint(store: Store, plate: str, negcon: tuple[str, ...]) -> str:
    files = [store.table_path(n, plate=plate) for n in ("features", "platemap")] + [store.table_path("compounds")]
    return fingerprint_files(store.root, [str(f.relative_to(store.root)) for f in files],
                             extra=code_fingerprint("pipeline.profiles.wells", "pipeline.features.measure", "pipeline.profiles.controls")
                             + negcon_key(negcon))


@task(name="well-profiles", cache_policy=NO_CACHE)
def well_profiles_task(store_root: str, plate: str, negcon: tuple[str, ...] = DEFAULT_NEGCON) -> str:
    """Aggregate, annotate and normalize one plate's cells into ``profiles_wells/<plate>``;
    returns what the plate was normalized against (``'negcon'``, or ``'all'`` without any)."""
    store = Store(Path(store_root))
    cells = read_table("features", store.table_path("features", plate=plate))
    platemap = read_table("platemap", store.table_path("platemap", plate=plate))
    compounds = store.read("compounds", ["Metadata_InChIKey", "Metadata_CompoundIDs"])
    wells = prof.annotate_wells(prof.aggregate_wells(cells), platemap, compounds, negcon=negcon)
    wells = prof.normalize_plate(wells)
    write_table(wells, "profiles_wells", store.table_path("profiles_wells", plate=plate))
    return str(wells["Metadata_NormalizedTo"].iloc[0]) if len(wells) else "negcon"


def activity_of(profiles: pd.DataFrame, *, null_size: int = 10000, seed: int = 0) -> pd.DataFrame:
    """:func:`pipeline.profiles.wells.phenotypic_activity` of well profiles, on their features without
    NaN, with ``Metadata_Source`` and ``Metadata_InChIKey`` of each compound."""
    feats = [c for c in feature_columns(profiles.columns) if profiles[c].notna().all()]
    act = prof.phenotypic_activity(profiles, profiles[feats].to_numpy(np.float64), null_size=null_size, seed=seed)
    skipped = act.attrs.get("plates_without_negcon", [])
    keys = profiles.dropna(subset=["Metadata_CompoundID"]).groupby("Metadata_CompoundID")["Metadata_InChIKey"].first()
    act.insert(0, "Metadata_Source", profiles["Metadata_Source"].iloc[0])
    act.insert(2, "Metadata_InChIKey", act["Metadata_CompoundID"].map(keys))
    act.attrs["plates_without_negcon"] = skipped
    return act


def consistency_of(profiles: pd.DataFrame, *, null_size: int = 10000, seed: int = 0) -> pd.DataFrame:
    """:func:`pipeline.profiles.wells.moa_consistency` of the per-compound medians of treated wells
    with a mechanism (empty when fewer than two mechanisms have two compounds)."""
    trt = profiles[(profiles["Metadata_ControlType"] == "trt") & profiles["Metadata_MOA"].notna()]
    feats = [c for c in feature_columns(profiles.columns) if profiles[c].notna().all()]
    if trt.empty or not feats:
        return pd.DataFrame()
    groups = trt.groupby("Metadata_CompoundID")  # one median over all features at once (no column-by-column frame)
    per = pd.concat([groups["Metadata_MOA"].first(), groups[feats].median()], axis=1).reset_index()
    cons = prof.moa_consistency(per, per[feats].to_numpy(np.float64), null_size=null_size, seed=seed)
    cons.insert(0, "Metadata_Source", profiles["Metadata_Source"].iloc[0])
    return cons


def imported_wells(store: Store) -> list[pd.DataFrame]:
    """The store's imported profiles that ``cmcl profile`` can score, as ``profiles_wells`` rows
    (well level, CellProfiler-named features; :func:`pipeline.profiles.imports.as_well_profiles`)."""
    from pipeline.profiles.imports import as_well_profiles

    out = []
    for p in store.table_files("profiles_imported"):
        wells = as_well_profiles(read_table("profiles_imported", p), metadata=prof.PROFILE_METADATA)
        if wells is not None:
            out.append(wells)
    return out


@task(name="select-consensus-activity", cache_policy=NO_CACHE)
def downstream_task(store_root: str, null_size: int) -> dict[str, Any]:
    """Feature selection per source (imported tables are kept as imported: already selected),
    consensus profiles and phenotypic activity over all well profiles of the store."""
    store = Store(Path(store_root))
    wells = [read_table("profiles_wells", p) for p in store.table_files("profiles_wells")] + imported_wells(store)
    selected, consensus, activity, consistency = [], [], [], []
    by_source: dict[str, list[pd.DataFrame]] = {}
    for df in wells:
        for source, part in df.groupby("Metadata_Source", sort=True):
            by_source.setdefault(str(source), []).append(part)
    out: dict[str, Any] = {}
    for source, parts in sorted(by_source.items()):
        df = pd.concat(parts, ignore_index=True)
        sel = prof.select_features(df) if source == "cmcl" else df
        selected.append(sel)
        consensus.append(prof.consensus_profiles(sel))
        act = activity_of(sel, null_size=null_size)
        activity.append(act)
        cons = consistency_of(sel, null_size=null_size)
        if len(cons):
            consistency.append(cons)
        out[source] = {"wells": len(sel), "features": len(feature_columns(sel.columns)), "compounds": len(act),
                       "retrieved": int(act["below_corrected_p"].sum()), "moas": len(cons),
                       "moas_consistent": int(cons["below_corrected_p"].sum()) if len(cons) else 0,
                       "plates_not_scored": list(act.attrs.get("plates_without_negcon", []))}
        if sel.attrs.get("selection_skipped"):
            out[source]["selection_skipped"] = sel.attrs["selection_skipped"]
            get_run_logger().warning("source %s: %s", source, sel.attrs["selection_skipped"])
    if selected:
        write_table(pd.concat(selected, ignore_index=True), "profiles_selected", store.table_path("profiles_selected"))
        write_table(pd.concat(consensus, ignore_index=True), "profiles_consensus", store.table_path("profiles_consensus"))
        write_table(pd.concat(activity, ignore_index=True), "activity", store.table_path("activity"))
    path = store.table_path("consistency")
    if consistency:
        write_table(pd.concat(consistency, ignore_index=True), "consistency", path)
    else:
        path.unlink(missing_ok=True)
    return out


@flow(name="cmcl-profile", flow_run_name="profile", log_prints=True)
def profile_flow(store: str, null_size: int = 10000, negcon: list[str] | None = None) -> dict[str, Any]:
    """Well profiles for every plate with single-cell features whose inputs changed, then (when
    any well profile changed) feature selection, consensus and activity over the store.

    Incremental like ingestion: a plate's fingerprint covers its features and plate-map files,
    the compounds table, the negative-control labels ``negcon`` (kept by the store for its later
    runs, training included; None: the store's, see :func:`pipeline.profiles.controls.store_negcon`) and the code of the profile stages. A plate
    without a negative-control well is normalized against all its wells, listed in the
    summary's ``plates_without_negcon`` and left out of the activity scores; it never stops
    the flow.
    """
    logger = get_run_logger()
    st = Store(Path(store))
    labels = record_negcon(st, negcon)
    state = _load_state(st)
    plates = [p.name[: -len(".parquet")] for p in st.table_files("features")]
    fps = {p: _plate_fingerprint(st, p, labels) for p in plates}
    todo = [p for p in plates if not (state.get(p) == fps[p] and st.table_path("profiles_wells", plate=p).is_file())]
    done = []
    tick = step_progress("profiles", len(todo) + 1)
    for plate in todo:
        well_profiles_task(str(st.root), plate, labels)
        state[plate] = fps[plate]
        done.append(plate)
        tick(plate)
    well_files = st.table_files("profiles_wells") + st.table_files("profiles_imported")
    wells_fp = fingerprint_files(st.root, [str(p.relative_to(st.root)) for p in well_files],
                                 extra=code_fingerprint("pipeline.profiles.wells", "flows.profiles") + str(null_size))
    summary: dict[str, Any] = {"plates_profiled": done, "plates_unchanged": sorted(set(plates) - set(done)),
                               "negcon": list(labels), "plates_without_negcon": plates_normalized_to_all(st)}
    for plate in summary["plates_without_negcon"]:
        logger.info("plate %r has no negative-control well (%s): normalized against all its wells, "
                    "its activity not scored", plate, ", ".join(labels))
    outputs = [st.table_path(n) for n in ("profiles_selected", "profiles_consensus", "activity")]  # consistency: optional
    if state.get("__downstream__") != wells_fp or not all(p.is_file() for p in outputs):
        if well_files:
            summary["sources"] = downstream_task(str(st.root), null_size)
            state["__downstream__"] = wells_fp
        else:
            summary["sources"] = {}
    else:
        summary["sources"] = "unchanged"
    tick("select, consensus, activity")
    _save_state(st, state)
    logger.info("profiles: %d plate(s) profiled, %d unchanged", len(done), len(summary["plates_unchanged"]))
    return summary


def _read_hub(path: str | os.PathLike | None) -> pd.DataFrame | None:
    if path is None:
        return None
    return pd.read_csv(path, sep="\t", comment="!", low_memory=False)


def _import_settings(compound_map: str | None, columns: str | None, feature_names: str | None,
                     drugs: str | None) -> str:
    """Digest of what besides the file's bytes decides an import: the settings files' bytes and
    the importer's code."""
    from pipeline.profiles.io import file_digest

    parts = [f"{k}={file_digest(v) if v else ''}" for k, v in
             (("map", compound_map), ("columns", columns), ("names", feature_names), ("drugs", drugs))]
    parts.append(code_fingerprint("pipeline.profiles.imports", "pipeline.profiles.io", "pipeline.chem.standardize"))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@task(name="import-profile-file", cache_policy=NO_CACHE)
def import_file_task(file: str, store_root: str, compound_map: str | None = None, columns: str | None = None,
                     feature_names: str | None = None, drugs: str | None = None) -> dict[str, Any]:
    """Import one profile file into ``profiles_imported`` unless these bytes were imported with
    these settings already; record it (and its report) in ``profiles_imports``."""
    from pipeline.profiles import index as idx
    from pipeline.profiles import io as pio
    from pipeline.profiles.imports import import_profiles

    st = Store(Path(store_root))
    name, content = Path(file).name, pio.file_digest(file)
    settings = _import_settings(compound_map, columns, feature_names, drugs)
    index_path = st.path("profiles_imports")
    index = idx.load_index(index_path)
    done = idx.find_import(index, content, settings)
    if done is not None and st.table_path("profiles_imported", import_id=done).is_file():
        return {**index[done], "import_id": done, "status": "unchanged"}
    table = pio.read_profile_table(file)
    user_map, unit = pio.read_column_map(columns) if columns else ({}, None)
    cmap, mroles = None, None
    if compound_map:
        ids = {str(v) for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])
               for v in table[c].dropna().unique()}
        cmap, mroles = pio.read_compound_map(compound_map, ids=ids, id_columns=list(table.columns))
    res = import_profiles(table, source="import:" + name, user_map=user_map, compound_map=cmap, map_roles=mroles,
                          feature_names=pio.read_name_table(feature_names) if feature_names else None,
                          moa_map=_read_hub(drugs), dose_unit=unit, n_jobs=2)
    iid = idx.import_id(name, content, settings)
    write_table(res.profiles, "profiles_imported", st.table_path("profiles_imported", import_id=iid))
    for old in idx.superseded(index, name, content):
        if old != iid:
            st.table_path("profiles_imported", import_id=old).unlink(missing_ok=True)
            index.pop(old)
    entry = {"file": name, "content": content, "settings": settings, "source": "import:" + name,
             "plates": sorted(res.profiles["Metadata_Plate"].unique().tolist()), **res.summary()}
    index[iid] = entry
    idx.save_index(index_path, index)
    return {**entry, "import_id": iid, "status": "imported"}


@flow(name="cmcl-import-profiles", flow_run_name="import-profiles", log_prints=True)
def import_profiles_flow(files: str | list[str], store: str, samples: str | None = None, drugs: str | None = None,
                         compound_map: str | None = None, columns: str | None = None,
                         feature_names: str | None = None) -> dict[str, Any]:
    """Import profile tables (pipeline/profiles/imports.py) into ``profiles_imported``, one file
    each; a file imported before with the same bytes and settings is skipped. ``samples`` (the
    Drug Repurposing Hub's samples file) is a compound map joined by ``pert_id``; ``drugs`` (the
    Hub's drug file) adds mechanisms. ``cmcl profile`` then scores the CellProfiler-named ones.

    Returns
    -------
    dict
        ``files``: one report per file (rows, features, compounds, joined, unjoined with reasons,
        status 'imported' or 'unchanged'); and, summed over the files, ``wells``, ``compounds``,
        ``with_inchikey``, ``plates``, ``source`` (the last file's), ``features`` (the last file's).
    """
    if samples and compound_map:
        raise ValueError("--samples is the Drug Repurposing Hub form of --compound-map: give one of them")
    files = [files] if isinstance(files, str) else list(files)
    reports = [import_file_task(f, store, compound_map or samples, columns, feature_names, drugs) for f in files]
    return {"files": reports, "source": reports[-1]["source"], "features": reports[-1]["features"],
            "plates": sorted({p for r in reports for p in r["plates"]}), "wells": sum(r["rows"] for r in reports),
            "compounds": sum(r["compounds"] for r in reports), "with_inchikey": sum(r["joined"] for r in reports)}
