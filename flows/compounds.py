"""Prefect flow standardizing compounds (files and plate maps) and building their graphs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipeline.store.atomic import write_text_atomic
from pipeline.store.schema import write_table
from pipeline.store.paths import Store

__all__ = ["compounds_flow", "collect_records"]

_RECORD_COLUMNS = ["Metadata_Source", "Metadata_CompoundID", "Input_SMILES", "Error"]


def _library_records(store: Store, files: list[str], *, fresh: bool) -> pd.DataFrame:
    """Records of compound files read by earlier runs, to keep beside this run's files.

    Libraries accumulate: a file read before stays in the store until ``fresh`` (``cmcl
    compounds --fresh``); a file read again replaces its own records only (files are keyed by
    name). Reader errors (``Input_SMILES`` empty) keep their reason; the others are
    standardized again with the rest, so parents are merged over every library.
    """
    if fresh or not store.table_path("compound_inputs").is_file():
        return pd.DataFrame(columns=_RECORD_COLUMNS)
    names = {Path(f).name for f in files}
    prev = store.read("compound_inputs")
    derived = prev["Metadata_Source"].str.startswith(("platemap:", "import:"))  # re-read from the store below
    prev = prev[~derived & ~prev["Metadata_Source"].isin(names)]
    out = prev[_RECORD_COLUMNS].copy()
    out["Error"] = out["Error"].where(out["Input_SMILES"] == "", None)
    return out


def collect_records(store: Store, files: list[str], *, smiles_col: str = "smiles", id_col: str | None = None,
                    fresh: bool = False) -> pd.DataFrame:
    """Input records: earlier libraries (unless ``fresh``), compound files, every treatment
    well of the store's plate maps, and every compound of the store's imported profiles that
    has a SMILES (``cmcl import-profiles``; ``Metadata_Source`` ``import:<file>``).

    Reader errors (a broken SDF record, say) travel in the ``Error`` column so standardization
    reports them instead of a generic failure; a treatment well without SMILES is such a record.

    Raises
    ------
    ValueError
        If a compound file holds no record (a header without rows), naming it.
    """
    parts = [_library_records(store, files, fresh=fresh)]
    if files:
        from pipeline.chem.io import read_compounds

        for f in files:
            chunks = list(read_compounds(f, smiles_col=smiles_col, id_col=id_col))
            if not sum(len(c) for c in chunks):
                raise ValueError(f"{f}: no compound record in the file (a header without rows?)")
            parts.extend(chunks)
    from pipeline.chem.parents import platemap_records

    parts.append(platemap_records(store.read("platemap")))
    parts.append(_imported_records(store))
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=_RECORD_COLUMNS)
    records = pd.concat([p.reindex(columns=_RECORD_COLUMNS) for p in parts], ignore_index=True)
    records["Input_SMILES"] = records["Input_SMILES"].fillna("").astype(str)
    return records.drop_duplicates(ignore_index=True)


def _imported_records(store: Store) -> pd.DataFrame:
    """Compound records of the store's imported profiles (:func:`pipeline.profiles.imports.compound_records`)."""
    if not store.table_files("profiles_imported"):
        return pd.DataFrame(columns=_RECORD_COLUMNS)
    from pipeline.profiles.imports import compound_records

    cols = ["Metadata_Source", "Metadata_CompoundID", "Metadata_InputSMILES", "Metadata_ControlType"]
    return compound_records(store.read("profiles_imported", columns=cols))


def _fingerprint(records: pd.DataFrame, settings: str) -> str:
    h = hashlib.sha256(settings.encode())
    h.update(pd.util.hash_pandas_object(records, index=False).values.tobytes())
    return h.hexdigest()


_CHUNK = 5000


@task(name="standardize", cache_policy=NO_CACHE)
def standardize_task(records: pd.DataFrame, n_jobs: int, canonicalize_tautomer: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Standardize in chunks of 5,000 records (molecules never pile up in memory), merge parents.

    Worker processes only pay off on larger inputs: below two chunks' worth one process is used.
    """
    from pipeline.chem.parents import merge_parents
    from pipeline.chem.standardize import standardize_stream

    chunks = (records.iloc[i:i + _CHUNK] for i in range(0, len(records), _CHUNK))
    jobs = n_jobs if len(records) > 2 * _CHUNK else 1
    inputs = pd.concat(list(standardize_stream(chunks, canonicalize_tautomer=canonicalize_tautomer, n_jobs=jobs)),
                       ignore_index=True)
    if len(inputs) != len(records):
        raise RuntimeError(f"standardization returned {len(inputs)} rows for {len(records)} inputs")
    return inputs, merge_parents(inputs)


@task(name="featurize", cache_policy=NO_CACHE)
def featurize_task(compounds: pd.DataFrame, n_jobs: int) -> pd.DataFrame:
    from pipeline.chem.graphs import graphs_table

    return graphs_table(compounds, n_jobs=n_jobs if len(compounds) > 2 * _CHUNK else 1)


@flow(name="compounds", flow_run_name="compounds", log_prints=True)
def compounds_flow(store: str, *, files: list[str] | None = None, smiles_col: str = "smiles", id_col: str | None = None,
                   n_jobs: int = 2, canonicalize_tautomer: bool = False, force: bool = False,
                   fresh: bool = False) -> dict[str, Any]:
    """Standardize every compound record, merge duplicate parents, write graphs and the (plate, well) ->
    InChIKey table ``well_compounds``; skip if inputs are unchanged.

    Compound files accumulate across runs (see :func:`collect_records`); ``fresh`` forgets the
    files read by earlier runs and keeps only ``files`` and the plate maps.
    """
    logger = get_run_logger()
    st = Store(Path(store))
    records = collect_records(st, list(files or []), smiles_col=smiles_col, id_col=id_col, fresh=fresh)
    from pipeline.store.provenance import code_fingerprint

    key = _fingerprint(records, f"tautomer={canonicalize_tautomer}"
                       + code_fingerprint("pipeline.chem.standardize", "pipeline.chem.parents", "pipeline.chem.graphs"))
    key_file = st.path("compounds_fingerprint")
    if (not force and key_file.is_file() and key_file.read_text() == key and st.table_path("graphs").is_file()
            and st.table_path("well_compounds").is_file()):
        inputs = st.read("compound_inputs")
        logger.info("compound inputs unchanged: nothing to do")
        return _summary(st, inputs, st.read("compounds"), skipped=True)
    if records.empty and st.table_files("profiles_imported"):
        logger.info("the imported profiles name no structure (no SMILES): nothing to standardize")
        return {"read": 0, "standardized": 0, "failed": 0, "unique_parents": 0, "merged": 0, "skipped": True,
                "nothing_to_do": "the store's imported profiles name no structure (no SMILES) and no compound "
                                 "file or plate map was given", "tables": {}}
    if records.empty:
        raise ValueError("no compound records: pass a compound file or ingest plates with a platemap.csv first")
    inputs, compounds = standardize_task(records, n_jobs, canonicalize_tautomer)
    graphs = featurize_task(compounds, n_jobs)
    write_table(inputs, "compound_inputs", st.table_path("compound_inputs"))
    write_table(compounds, "compounds", st.table_path("compounds"))
    write_table(graphs, "graphs", st.table_path("graphs"))
    from pipeline.chem.parents import well_compounds

    write_table(well_compounds(st.read("platemap"), inputs), "well_compounds", st.table_path("well_compounds"))
    write_text_atomic(key, key_file)
    summary = _summary(st, inputs, compounds, skipped=False)
    logger.info("compounds: %(read)d read, %(standardized)d standardized, %(unique_parents)d parents, "
                "%(failed)d failed", summary)
    return summary


def _summary(st: Store, inputs: pd.DataFrame, compounds: pd.DataFrame, *, skipped: bool) -> dict[str, Any]:
    ok = int((inputs["Status"] == "ok").sum())
    return {"read": len(inputs), "standardized": ok, "failed": len(inputs) - ok, "unique_parents": len(compounds),
            "merged": ok - len(compounds), "skipped": skipped,
            "tables": {n: str(st.table_path(n)) for n in ("compound_inputs", "compounds", "graphs", "well_compounds")}}
