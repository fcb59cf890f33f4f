"""Views of a store for ``cmcl inspect``: each returns (title, DataFrame)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pandas as pd

from pipeline.store import Store

__all__ = ["VIEWS", "summary", "plates", "quarantine", "compounds", "runs"]


def summary(root: Path) -> tuple[str, pd.DataFrame]:
    st = Store(root)
    led, pm, fields, cells = st.read("ledger"), st.read("platemap"), st.read("fields"), st.read("cells")
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
    cols = ["Metadata_Plate", "Status", "Layout", "N_Fields", "N_Cells", "N_Quarantined", "UpdatedAt", "Source"]
    return "plates", led[cols]


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


VIEWS: dict[str, Callable[[Path], tuple[str, pd.DataFrame]]] = {
    "summary": summary, "plates": plates, "quarantine": quarantine, "compounds": compounds, "runs": runs}
