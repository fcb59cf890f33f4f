"""The evaluation report of a run: ``reports/<run>/report.html``, one self-contained file.

Every figure is a PNG embedded as base64, so the file can be mailed or archived alone.
Sections: training curves (``runs/<run>/metrics.jsonl``), retrieval tables (model, baselines
and chance, compound and crop level), rank histograms, example queries with crop grids, a 2-D
PCA map of the test compounds' image embeddings (coloured by ground-truth phenotype class when
the caller passes the plates' ground truth, else by cells per well), per-plate QC
heatmaps of cells per well, the downstream probe and the fine-tuning results (``cmcl finetune``).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from cmcl_model.evaluation.metrics import DIRECTIONS, PROTOCOLS
from cmcl_model.reports.figures import (
    embedding_map_png,
    img_tag,
    plate_qc_png,
    rank_histograms_png,
    training_curves_png,
)
from cmcl_model.reports.finetune import finetune_section
from cmcl_model.reports.sections import (
    activity_html,
    ci_html,
    consistency_html,
    controls_html,
    examples_html,
    probe_html,
    retrieval_table,
)
from pipeline.store.atomic import write_text_atomic
from pipeline.store.paths import Store

__all__ = ["write_report"]


def write_report(store: Store, run_dir: Path, result: dict[str, Any], *, dataset=None, embeddings=None,
                 ground_truth: pd.DataFrame | None = None) -> Path:
    """Write ``reports/<run>/report.html`` and return its path.

    ``dataset`` (the test :class:`~cmcl_model.data.pairs.PairDataset`) and ``embeddings``
    (:class:`~cmcl_model.evaluation.embeddings.TestEmbeddings`) enable the rank histograms, example
    queries and embedding map; without them only tables, curves, QC and probe are written.
    ``ground_truth`` (a per-well phenotype table, see :func:`cmcl_model.reports.figures.phenotype_classes`; the synthetic
    generator's is read by :func:`pipeline.synthetic.read_ground_truth`) colours the embedding
    map by phenotype class; without it, by cells per well.
    """
    run_dir = Path(run_dir)
    esc = html.escape
    parts = [
        f"<h1>cmcl run {esc(run_dir.name)}</h1>",
        f"<p>Scaffold-held-out test compounds: {esc(json.dumps(result['split']))}. Candidates: compound level "
        f"{esc(json.dumps(result['n_candidates']))}, crop level {esc(json.dumps(result.get('crop_level_n', {})))}. "
        f"Seeds {esc(str(result.get('seeds')))}; ties counted pessimistically; checkpoint {esc(str(result.get('checkpoint')))}.</p>",
    ]
    parts.append(controls_html(store, result))
    curve = training_curves_png(run_dir)
    parts.append("<h2>Training</h2>" + (img_tag(curve, "training curves") if curve else "<p>no metrics.jsonl</p>"))

    parts.append("<h2>Retrieval</h2><p>hit101: MIGA protocol (the positive among 100 random negatives); fullpool: CLOOME "
                 "protocol (whole test pool). Percentages; mean rank 1 = best. Chance rows are exact expectations of a random ranking.</p>")
    rows = [("model", result["model"])] + list(result["baselines"].items()) + [("chance", result["chance"])]
    crop_rows = [("model, crop level", result["crop_level"]), ("chance, crop level", result["crop_level_chance"])] if "crop_level" in result else []
    for proto in PROTOCOLS:
        for d in DIRECTIONS:
            parts.append(retrieval_table(rows, proto, d, f"{proto} · {d} · compound level (n={result['n_candidates'][proto]})"))
            if crop_rows:
                parts.append(retrieval_table(crop_rows, proto, d, f"{proto} · {d} · crop level"))

    if result.get("ci"):
        parts.append(ci_html(result))
    if result.get("activity"):
        parts.append(activity_html(result["activity"]))
    if result.get("consistency"):
        parts.append(consistency_html(result["consistency"]))

    if dataset is not None and embeddings is not None:
        parts.append("<h2>Rank histograms (model, full pool)</h2>" + img_tag(rank_histograms_png(embeddings.graph, embeddings.image), "rank histograms"))
        comp = store.read("compounds").set_index("Metadata_InChIKey")
        ids = {k: str(v[0]) if len(v) else k[:8] for k, v in comp["Metadata_CompoundIDs"].items()}
        parts.append("<h2>Example queries (graph &rarr; image)</h2><p>The best-, median- and worst-ranked test compounds; "
                     "each row shows crops of a retrieved compound (AGP red, ER green, DNA blue).</p>"
                     + examples_html(dataset, embeddings, comp["Metadata_SMILES"], ids))
        png, what = embedding_map_png(dataset, embeddings.image, ground_truth)
        parts.append(f"<h2>Embedding map</h2><p>Coloured by {esc(what)}.</p>" + img_tag(png, "embedding map"))
    qc = plate_qc_png(store)
    if qc:
        parts.append("<h2>Plate QC</h2>" + img_tag(qc, "plate QC"))
    if "probe" in result:
        parts.append(probe_html(result["probe"]))
    parts.append(finetune_section(store.report_dir(run_dir.name)))  # '' until `cmcl finetune --init <run>`
    style = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin-bottom:1em}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}tr.chance{color:#777;font-style:italic}"
             "img{max-width:100%;display:block;margin:0.5em 0}")
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>cmcl {esc(run_dir.name)}</title><style>{style}</style></head>"
            f"<body>{''.join(parts)}</body></html>")
    out = store.report_dir(run_dir.name) / "report.html"
    write_text_atomic(text, out)
    return out
