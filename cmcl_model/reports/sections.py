"""The HTML sections of a run's evaluation report, one function each.

Each returns an HTML fragment from the ``metrics.json`` dictionary (or the store), which
:func:`cmcl_model.reports.evaluation.write_report` places in order. To add a section: a function
here returning its fragment ('' when it has nothing to show), and one line in ``write_report``.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from cmcl_model.evaluation.metrics import DIRECTIONS, ranks_fullpool
from cmcl_model.reports.figures import compound_crops, crop_grid_png, img_tag, molecules_png, normalize_rows
from pipeline.profiles import plates_normalized_to_all
from pipeline.store.paths import Store

__all__ = [
    "retrieval_table",
    "examples_html",
    "probe_html",
    "ci_html",
    "activity_html",
    "consistency_html",
    "controls_html",
]


def retrieval_table(rows: list[tuple[str, dict]], proto: str, d: str, title: str) -> str:
    metrics = list(rows[0][1][proto][d])
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    body = ""
    for name, r in rows:
        cells = "".join(
            f"<td>{r[proto][d][m]:.2f}</td>" if m == "mean_rank" else f"<td>{100 * r[proto][d][m]:.1f}%</td>" for m in metrics
        )
        cls = " class='chance'" if "chance" in name else ""
        body += f"<tr{cls}><td>{html.escape(name)}</td>{cells}</tr>"
    return f"<h3>{html.escape(title)}</h3><table><tr><th></th>{head}</tr>{body}</table>"


def examples_html(dataset, embeddings, smiles: pd.Series, ids: dict[str, str], *, n_queries: int = 3, top: int = 5) -> str:
    g, i = normalize_rows(embeddings.graph), normalize_rows(embeddings.image)
    sim = g @ i.T
    ranks = ranks_fullpool(sim)
    n = len(dataset)
    # the best-, the median- and the worst-ranked test compounds, so the examples are not cherry-picked
    order = np.argsort(ranks, kind="stable")
    picks = sorted({int(order[0]), int(order[n // 2]), int(order[-1])})[:n_queries]
    parts = []
    for q in picks:
        key = dataset.keys[q]
        best = np.argsort(-sim[q], kind="stable")[:top]
        crops = [compound_crops(dataset, int(b), 6) for b in best]
        labels = [f"#{r + 1} {ids.get(dataset.keys[b], dataset.keys[b][:8])}{' (true)' if b == q else ''} {sim[q, b]:.2f}" for r, b in enumerate(best)]
        mol = molecules_png([smiles[key]], [f"{ids.get(key, key[:8])}: true match at rank {ranks[q]}"])
        parts.append(
            f"<div class='example'><h3>query {html.escape(ids.get(key, key))}</h3>{img_tag(mol, 'query molecule')}"
            f"{img_tag(crop_grid_png(crops, labels), 'retrieved crops')}</div>"
        )
    return "".join(parts)


def probe_html(p: dict[str, Any]) -> str:
    best = min(p["results"], key=lambda k: p["results"][k]["mean"])
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['mean']:.3f} &plusmn; {v['std']:.3f}</td><td>{', '.join(f'{x:.2f}' for x in v['per_fold'])}</td></tr>"
        for k, v in sorted(p["results"].items(), key=lambda kv: kv[1]["mean"])
    )
    return (
        f"<h2>Downstream probe: {html.escape(p['dataset'])}</h2><p>{html.escape(p.get('split', ''))}; "
        f"{p['n_molecules']} molecules, {p['folds']} folds; {p['metric'].upper()} (lower is better), mean &plusmn; std over folds; "
        f"best: {html.escape(best)}</p><table><tr><th>features</th><th>{p['metric'].upper()}</th><th>per fold</th></tr>{rows}</table>"
    )


def _fmt_map(v: float | None) -> str:
    return "&ndash;" if v is None else f"{v:.3f}"


def ci_html(result: dict[str, Any]) -> str:
    """Point estimates with their bootstrap intervals, Hit@10 / Recall@10 / MRR, both ways."""
    ci, level, esc = result["ci"], result.get("ci_level", 0.95), html.escape
    metrics = {"hit101": ("hit@10", "mrr"), "fullpool": ("recall@1", "recall@10", "mrr")}
    point = {"model": result["model"], **result["baselines"]}
    head = "".join(f"<th>{esc(p)} {esc(d)} {esc(m)}</th>" for p, ms in metrics.items() for d in DIRECTIONS for m in ms)
    body = ""
    for name in [n for n in point if n in ci] + ["chance"]:
        r = result["chance"] if name == "chance" else point[name]
        cells = ""
        for p, ms in metrics.items():
            for d in DIRECTIONS:
                for m in ms:
                    lo_hi = "" if name == "chance" else " [{:.1f}, {:.1f}]".format(*(100 * v for v in ci[name][p][d][m]))
                    cells += f"<td>{100 * r[p][d][m]:.1f}{lo_hi}</td>"
        body += f"<tr{' class=chance' if name == 'chance' else ''}><td>{esc(name)}</td>{cells}</tr>"
    return (f"<h2>Held-out retrieval with {100 * level:.0f}% bootstrap intervals</h2><p>Percent; the "
            f"{result['split']['test_evaluated']} test compounds resampled {result.get('n_bootstrap', '')} times "
            f"(each keeps its rank in the full pool). hit101 has {result['n_candidates']['hit101']} candidates "
            f"(1 + 100 where the pool allows, else the whole pool); negatives: {esc(str(result.get('negatives', 'any')))}.</p>"
            f"<table><tr><th></th>{head}</tr>{body}</table>")


def activity_html(activity: dict[str, Any]) -> str:
    """Phenotypic activity (copairs mAP vs plate-matched DMSO) per representation, with
    precision / recall against the generator's truth where known."""
    names = {"cellprofiler": "CellProfiler profiles (cp_measure + pycytominer)", "model": "trained image encoder",
             "untrained": "untrained image encoder"}
    has_truth = any("precision" in a or "n_truly_active" in a for a in activity.values())

    def pct(v):
        return "&ndash;" if v is None else f"{100 * v:.1f}"

    head = ("<tr><th>representation</th><th>compounds scored</th><th>retrieved (q &lt; 0.05)</th><th>fraction %</th>"
            "<th>mean mAP</th>" + ("<th>truly active</th><th>precision %</th><th>recall %</th>" if has_truth else "") + "</tr>")
    rows = []
    for k, a in activity.items():
        cells = (f"<td style='text-align:left'>{html.escape(names.get(k, k))}</td><td>{a['n_compounds']}</td>"
                 f"<td>{a['n_retrieved']}</td><td>{pct(a.get('fraction_retrieved'))}</td>"
                 f"<td>{_fmt_map(a.get('mean_map'))}</td>")
        if has_truth:
            cells += f"<td>{a.get('n_truly_active', '&ndash;')}</td><td>{pct(a.get('precision'))}</td><td>{pct(a.get('recall'))}</td>"
        rows.append(f"<tr>{cells}</tr>")
    return ("<h2>Phenotypic activity (mAP vs DMSO)</h2><p>copairs mean average precision of each compound's replicate "
            "wells against the DMSO wells of the same plates (cosine similarity), permutation p-values with "
            "Benjamini&ndash;Hochberg correction; a compound is retrieved (called active) at corrected p &lt; 0.05. "
            "Compounds need two or more wells."
            + (" Precision and recall: the calls against the generator's truth of which compounds are active." if has_truth else "")
            + f"</p><table>{head}{''.join(rows)}</table>")


def consistency_html(consistency: dict[str, Any]) -> str:
    """MOA consistency per profile source (copairs mAP of compounds of one mechanism against
    other mechanisms' compounds), from ``metrics['consistency']``."""
    rows = []
    for source, c in consistency.items():
        frac = c.get("fraction_consistent")
        named = ", ".join(c.get("consistent_moas", [])) or "&ndash;"
        rows.append(f"<tr><td style='text-align:left'>{html.escape(source)}</td><td>{c['n_moas']}</td><td>{c['n_consistent']}</td>"
                    f"<td>{'&ndash;' if frac is None else f'{100 * frac:.1f}'}</td><td>{_fmt_map(c.get('mean_map'))}</td>"
                    f"<td style='text-align:left'>{html.escape(named) if named != '&ndash;' else named}</td></tr>")
    return ("<h2>MOA consistency</h2><p>Per profile source with mechanism labels: do compounds of one mechanism "
            "retrieve each other among compounds of other mechanisms (copairs mAP of per-compound median profiles, "
            "cosine similarity, Benjamini&ndash;Hochberg-corrected permutation p-values; mechanisms with two or more "
            "compounds)?</p><table><tr><th>source</th><th>mechanisms scored</th><th>consistent (q &lt; 0.05)</th>"
            "<th>fraction %</th><th>mean mAP</th><th>consistent mechanisms</th></tr>" + "".join(rows) + "</table>")


def controls_html(store: Store, result: dict[str, Any]) -> str:
    """One visible line naming the plates without a negative-control well ('' when none): their
    profiles were normalized against all their wells and their activity was not scored."""
    plates = set(plates_normalized_to_all(store))
    for a in (result.get("activity") or {}).values():
        plates |= set(a.get("plates_not_scored", []))
    if not plates:
        return ""
    names = ", ".join(html.escape(p) for p in sorted(plates))
    return (f"<p class='warn' style='border-left:4px solid #c60;padding:4px 8px;background:#fff4e5'><b>No negative "
            f"control on plate(s) {names}</b>: their well profiles are normalized against all their wells "
            f"(not DMSO; see <code>cmcl profile --negcon</code>) and their compounds' phenotypic activity is not "
            f"scored.</p>")
