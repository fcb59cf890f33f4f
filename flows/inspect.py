"""Views of a store for ``cmcl inspect``: each returns (title, DataFrame)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pandas as pd

from pipeline.store.paths import Store

__all__ = ["VIEWS", "TERMINAL_COLUMNS", "for_terminal", "summary", "plates", "plate", "cells", "quarantine", "compounds",
           "runs", "looks_like_store", "store_argument", "NotAStore"]


class NotAStore(ValueError):
    """A folder given where a store was meant that holds no store."""


def looks_like_store(path: Path) -> bool:
    """Whether ``path`` is a cmcl store: a folder with the store's ``tables/``, ``plates/`` or ``runs/``."""
    path = Path(path)
    return path.is_dir() and any((path / d).is_dir() for d in ("tables", "plates", "runs"))


def store_argument(positional: Path, option: Path | None) -> Path:
    """The store of ``cmcl verify STORE`` / ``cmcl inspect STORE``: the positional folder when it is
    a store (and agrees with ``--store``, when given too).

    Raises
    ------
    NotAStore
        One line ending in ``did you mean --store DIR?`` when the folder is not a store, or
        naming both folders when ``--store`` names another one.
    """
    positional = Path(positional)
    if option is not None and Path(option).resolve() != positional.resolve():
        raise NotAStore(f"two stores given: {positional} and --store {option}; give one")
    if not looks_like_store(positional):
        raise NotAStore(f"{positional} is not a cmcl store (no tables/, plates/ or runs/ in it); "
                        f"did you mean --store {positional}?")
    return positional


def summary(root: Path) -> tuple[str, pd.DataFrame]:
    st = Store(root)
    led, pm, fields, cells = st.read("ledger"), st.read("platemap"), st.read("fields"), st.read("cells", ["Metadata_Plate"])
    quar = st.read("quarantine")
    inputs = st.read("compound_inputs") if st.table_path("compound_inputs").is_file() else None
    comps = st.read("compounds") if st.table_path("compounds").is_file() else None
    rows = [
        ("plates (complete)", int((led["Status"] == "complete").sum())),
        ("wells with images", int(pm["Metadata_HasImages"].sum()) if len(pm) else 0),
        ("fields", len(fields)),
        ("cells (crops)", len(cells)),
        ("quarantined images", len(quar)),
        ("compound records", len(inputs) if inputs is not None else 0),
        ("compound failures", int((inputs["Status"] == "failed").sum()) if inputs is not None else 0),
        ("unique compounds", len(comps) if comps is not None else 0),
        ("training runs", len(st.runs())),
    ]
    return f"store {root}", pd.DataFrame(rows, columns=["what", "count"])


def plates(root: Path) -> tuple[str, pd.DataFrame]:
    led = Store(root).read("ledger")
    if "ChannelSource" not in led.columns:  # a ledger written before the map's source was recorded
        led["ChannelSource"] = None
    cols = ["Metadata_Plate", "Status", "Layout", "N_Fields", "N_Cells", "N_Quarantined", "ChannelSource", "UpdatedAt",
            "Source"]
    return "plates", led[cols]


def plate(root: Path, plate_id: str) -> tuple[str, pd.DataFrame]:
    """Per-well table of one plate; writes heatmaps, the illumination functions and one field
    with its segmentation outlines as PNGs under ``reports/inspect/<plate>/``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.store.omezarr import open_plate, read_field, read_labels
    from pipeline.images.qc_plots import field_composite, plate_heatmaps, well_summary
    from pipeline.store.schema import read_table

    st = Store(root)
    if not st.table_path("platemap", plate=plate_id).is_file():
        known = ", ".join(st.read("ledger")["Metadata_Plate"]) or "none"
        raise KeyError(f"no plate {plate_id!r} in {root} (plates: {known})")
    pm = read_table("platemap", st.table_path("platemap", plate=plate_id))
    cells_t = read_table("cells", st.table_path("cells", plate=plate_id))
    fields = read_table("fields", st.table_path("fields", plate=plate_id))
    quar = read_table("quarantine", st.table_path("quarantine", plate=plate_id))
    summ = well_summary(pm, cells_t, quar)
    out = st.root / "reports" / "inspect" / plate_id
    out.mkdir(parents=True, exist_ok=True)
    fig = plate_heatmaps(summ, title=f"plate {plate_id}")
    fig.savefig(out / "heatmap.png", dpi=70)
    plt.close(fig)
    written = [out / "heatmap.png"]
    if len(fields):
        rec = fields.sort_values("Count_Nuclei").iloc[len(fields) // 2]  # a typical field
        zplate = open_plate(st.plate_zarr(plate_id))
        path = rec["Metadata_FieldPath"]
        rgb = field_composite(read_field(zplate, path), read_labels(zplate, path, "nuclei"),
                              read_labels(zplate, path, "cells"))
        name = f"field_{rec['Metadata_Well']}_s{rec['Metadata_Site']}.png"
        plt.imsave(out / name, rgb)
        written.append(out / name)
    written += sorted((st.root / "illumination" / plate_id).glob("*.png"))
    summ.attrs["files"] = [str(p) for p in written]
    return f"plate {plate_id}: per well (pictures: {out})", summ


def cells(root: Path) -> tuple[str, pd.DataFrame]:
    c = Store(root).read("cells", ["Metadata_Plate", "Metadata_Well", "Metadata_CropIndex", "AreaShape_NucleusArea",
                                   "AreaShape_CellArea"])
    g = c.groupby("Metadata_Plate").agg(wells=("Metadata_Well", "nunique"), cells=("Metadata_CropIndex", "size"),
                                         nucleus_area=("AreaShape_NucleusArea", "mean"),
                                         cell_area=("AreaShape_CellArea", "mean"))
    g["cells_per_well"] = g["cells"] / g["wells"]
    return "cells per plate", g.reset_index()


def quarantine(root: Path) -> tuple[str, pd.DataFrame]:
    return "quarantined images", Store(root).read("quarantine")


def compounds(root: Path) -> tuple[str, pd.DataFrame]:
    st = Store(root)
    inputs = st.read("compound_inputs")
    failed = inputs[inputs["Status"] == "failed"][["Metadata_Source", "Metadata_CompoundID", "Input_SMILES", "Error"]]
    return f"compound failures ({len(failed)} of {len(inputs)} records)", failed


def runs(root: Path) -> tuple[str, pd.DataFrame]:
    st = Store(root)
    rows = []
    for run in st.runs():
        mfile = st.report_dir(run) / "metrics.json"
        m = json.loads(mfile.read_text()) if mfile.is_file() else {}
        h = m.get("model", {}).get("hit101", {})
        rows.append(dict(run=run, evaluated=mfile.is_file(),
                         **{f"{d} hit@10": h.get(d, {}).get("hit@10") for d in ("graph_to_image", "image_to_graph")}))
    return "training runs", pd.DataFrame(rows)


def profiles(root: Path) -> tuple[str, pd.DataFrame]:
    """Per profile source and plate: wells, DMSO wells, features (as stored and after selection),
    compounds scored for activity and retrieved at corrected p < 0.05."""
    from pipeline.features.measure import feature_columns
    from pipeline.profiles.controls import normalized_to

    st = Store(root)
    rows = []
    act = st.read("activity") if st.table_path("activity").is_file() else None
    selected = (pq_columns(st.table_path("profiles_selected")) if st.table_path("profiles_selected").is_file() else [])
    for path in st.table_files("profiles_wells"):
        w = pd.read_parquet(path)
        for source, df in w.groupby("Metadata_Source"):
            a = act[act["Metadata_Source"] == source] if act is not None else None
            rows.append({"source": source, "plate": path.name[: -len(".parquet")], "wells": len(df),
                         "dmso_wells": int((df["Metadata_ControlType"] == "negcon").sum()),
                         "normalized_to": (normalized_to(df["Metadata_NormalizedTo"])
                                           if "Metadata_NormalizedTo" in df.columns else None),
                         "features": len(feature_columns(df.columns)),
                         "selected_features": len(feature_columns(selected)) if source == "cmcl" else len(feature_columns(df.columns)),
                         "compounds_scored": None if a is None else len(a),
                         "retrieved_q<0.05": None if a is None else int(a["below_corrected_p"].sum()),
                         "mean_mAP": None if a is None or not len(a) else float(a["mean_average_precision"].mean())})
    for path in st.table_files("profiles_imported"):  # one row per imported file
        w = pd.read_parquet(path, columns=["Metadata_Source", "Metadata_Plate", "Metadata_ControlType"])
        source = w["Metadata_Source"].iloc[0]
        a = act[act["Metadata_Source"] == source] if act is not None else None
        n_feats = sum(not c.startswith("Metadata_") for c in pq_columns(path))
        rows.append({"source": source, "plate": f"{w['Metadata_Plate'].nunique()} plate(s)", "wells": len(w),
                     "dmso_wells": int((w["Metadata_ControlType"] == "negcon").sum()),
                     "normalized_to": "as imported", "features": n_feats,
                     "selected_features": n_feats, "compounds_scored": None if a is None else len(a),
                     "retrieved_q<0.05": None if a is None else int(a["below_corrected_p"].sum()),
                     "mean_mAP": None if a is None or not len(a) else float(a["mean_average_precision"].mean())})
    return "profiles (cmcl profile: well profiles, activity mAP)", pd.DataFrame(rows)


def pq_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_schema(path).names


VIEWS: dict[str, Callable[[Path], tuple[str, pd.DataFrame]]] = {
    "summary": summary, "plates": plates, "cells": cells, "quarantine": quarantine, "compounds": compounds,
    "runs": runs, "profiles": profiles}
#: Views that take an argument (``cmcl inspect plate ID``).
VIEWS_WITH_ARG: dict[str, Callable[[Path, str], tuple[str, pd.DataFrame]]] = {"plate": plate}


#: Per view, the columns a terminal table shows and their short headers (``--json`` prints every
#: column): an 80-column terminal holds each row on one line, long text cut with an ellipsis.
TERMINAL_COLUMNS: dict[str, dict[str, str]] = {
    "profiles": {"source": "source", "plate": "plate", "wells": "wells", "dmso_wells": "negcon",
                 "normalized_to": "norm. to", "selected_features": "features", "compounds_scored": "scored",
                 "retrieved_q<0.05": "active", "mean_mAP": "mAP"},
    "plates": {"Metadata_Plate": "plate", "Status": "status", "Layout": "layout", "N_Fields": "fields",
               "N_Cells": "cells", "N_Quarantined": "quar.", "ChannelSource": "channels"},
    "quarantine": {"Metadata_Plate": "plate", "Metadata_Well": "well", "Metadata_Site": "site",
                   "Metadata_Channel": "ch", "File": "file", "Reason": "reason"},
    "compounds": {"Metadata_CompoundID": "compound", "Input_SMILES": "SMILES", "Error": "error"},
}


def for_terminal(view: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The columns of ``frame`` a terminal table shows (:data:`TERMINAL_COLUMNS`), renamed short;
    file paths as their names, a plate column dropped when it holds one plate, a blank site
    shown empty. Views not listed are returned unchanged."""
    cols = TERMINAL_COLUMNS.get(view)
    if cols is None:
        return frame
    out = frame[[c for c in cols if c in frame.columns]].copy()
    if "File" in out.columns:
        out["File"] = [Path(f).name if isinstance(f, str) else f for f in out["File"]]
    if view != "plates" and "Metadata_Plate" in out.columns and out["Metadata_Plate"].nunique() <= 1:
        out = out.drop(columns="Metadata_Plate")
    if "Metadata_Site" in out.columns:
        out["Metadata_Site"] = [None if pd.isna(v) else str(int(v)) for v in out["Metadata_Site"]]
    return out.rename(columns=cols)
