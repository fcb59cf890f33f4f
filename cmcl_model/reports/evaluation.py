"""The evaluation report of a run: ``reports/<run>/report.html``, one self-contained file.

Every figure is a PNG embedded as base64, so the file can be mailed or archived alone.
Sections: training curves (``runs/<run>/metrics.jsonl``), retrieval tables (model, baselines
and chance, compound and crop level), rank histograms, example queries with crop grids, a 2-D
PCA map of the test compounds' image embeddings (coloured by ground-truth phenotype class when
the caller passes the plates' ground truth, else by cells per well), per-plate QC
heatmaps of cells per well, the downstream probe and the fine-tuning results (``cmcl finetune``).
Also holds the small JSON-Schema
validator used for ``metrics.json``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmcl_model.evaluation.metrics import DIRECTIONS, ranks_fullpool
from pipeline.store.paths import CHANNELS, Store

__all__ = [
    "metrics_schema",
    "validate_json",
    "crop_rgb",
    "crop_grid_png",
    "phenotype_classes",
    "write_report",
]


# --------------------------------------------------------------------------------------------
# metrics.json declaration
# --------------------------------------------------------------------------------------------
def metrics_schema() -> dict[str, Any]:
    """``schemas/reports/metrics.json``."""
    return json.loads(files("schemas").joinpath("reports/metrics.json").read_text())


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


def validate_json(value: Any, schema: dict[str, Any], *, root: dict[str, Any] | None = None, path: str = "$") -> None:
    """Validate ``value`` against a JSON-Schema subset: ``type`` (object, array, string,
    number, integer, boolean), ``properties``, ``required``, ``additionalProperties`` (bool or
    schema), ``items``, ``enum``, ``minimum``, ``maximum`` and local ``$ref`` (``#/$defs/...``).

    Raises
    ------
    ValueError
        Naming the path (``$.model.hit101...``) and the offending value.
    """
    root = schema if root is None else root
    if "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        validate_json(value, node, root=root, path=path)
    t = schema.get("type")
    if t in ("number", "integer"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (t == "number" or float(value).is_integer())
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"{path}: expected a finite {t}, got {value!r}")
        if "minimum" in schema and value < schema["minimum"] - 1e-12:
            raise ValueError(f"{path}: {value!r} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"] + 1e-12:
            raise ValueError(f"{path}: {value!r} is above the maximum {schema['maximum']}")
    elif t is not None and not isinstance(value, _TYPES[t]):
        raise ValueError(f"{path}: expected {t}, got {type(value).__name__} {str(value)[:80]!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            raise ValueError(f"{path}: missing keys {missing}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                validate_json(v, props[k], root=root, path=f"{path}.{k}")
            elif extra is False:
                raise ValueError(f"{path}: undeclared key {k!r}")
            elif isinstance(extra, dict):
                validate_json(v, extra, root=root, path=f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for j, v in enumerate(value):
            validate_json(v, schema["items"], root=root, path=f"{path}[{j}]")


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _plt().close(fig)
    return buf.getvalue()


def crop_rgb(crops: np.ndarray, *, channels: Sequence[str] = ("AGP", "ER", "DNA")) -> np.ndarray:
    """RGB composite of raw crops: (k, C, S, S) uint16 -> (k, S, S, 3) float in [0, 1].

    ``channels`` name the red, green and blue sources (of :data:`pipeline.store.paths.CHANNELS`);
    each is ``log1p``-scaled and stretched between its 1st and 99.5th percentile over all
    ``k`` crops, so crops in one call are comparable.

    Raises
    ------
    ValueError
        If ``crops`` is not 4-D with one plane per channel, or a channel name is unknown.
    """
    x = np.asarray(crops)
    if x.ndim != 4 or x.shape[1] != len(CHANNELS):
        raise ValueError(f"expected crops of shape (k, {len(CHANNELS)}, S, S), got {x.shape}")
    bad = [c for c in channels if c not in CHANNELS]
    if bad:
        raise ValueError(f"unknown channels {bad}; known: {list(CHANNELS)}")
    out = np.zeros((x.shape[0], x.shape[2], x.shape[3], 3))
    for j, name in enumerate(channels):
        v = np.log1p(x[:, CHANNELS.index(name)].astype(np.float64))
        lo, hi = np.percentile(v, [1, 99.5]) if v.size else (0.0, 1.0)
        out[..., j] = np.clip((v - lo) / max(hi - lo, 1e-9), 0, 1)
    return out


def crop_grid_png(rows: Sequence[np.ndarray], labels: Sequence[str], *, tile: int = 64, label_width: int = 180) -> bytes:
    """PNG of a grid: one row per entry of ``rows`` ((k, C, S, S) uint16 raw crops, shown as
    :func:`crop_rgb` composites stretched jointly over all rows, each scaled to ``tile`` px),
    labelled on the left with ``labels``.

    Raises
    ------
    ValueError
        If ``rows`` and ``labels`` differ in length or ``rows`` is empty.
    """
    from PIL import Image, ImageDraw

    if len(rows) != len(labels) or not rows:
        raise ValueError(f"need one label per row of crops and at least one row, got {len(rows)} rows, {len(labels)} labels")
    rgb = crop_rgb(np.concatenate(rows))
    ncol = max(r.shape[0] for r in rows)
    gap = 2
    canvas = Image.new("RGB", (label_width + ncol * (tile + gap), len(rows) * (tile + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    at = 0
    for r, crops in enumerate(rows):
        y = gap + r * (tile + gap)
        draw.text((4, y + tile // 2 - 6), str(labels[r])[:44], fill="black")
        for c in range(crops.shape[0]):
            im = Image.fromarray((rgb[at + c] * 255).astype(np.uint8)).resize((tile, tile), Image.NEAREST)
            canvas.paste(im, (label_width + c * (tile + gap), y))
        at += crops.shape[0]
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


# --------------------------------------------------------------------------------------------
# ground truth
# --------------------------------------------------------------------------------------------
_SCALES = ("nuclear_area", "dna_intensity", "er_intensity", "rna_intensity", "agp_intensity", "mito_intensity", "cell_size")
_SHIFTS = ("toxicity", "texture", "mito_fragmentation")


def phenotype_classes(phenotypes: pd.DataFrame) -> pd.DataFrame:
    """Ground-truth phenotype class per well from a per-well phenotype table.

    Parameters
    ----------
    phenotypes : DataFrame
        ``Metadata_Plate``, ``Metadata_Well``, ``active`` and any of the morphology fields of
        :class:`pipeline.synthetic.Phenotype` (the generator's ``ground_truth/phenotypes.csv``).

    Returns
    -------
    DataFrame
        Columns ``Metadata_Plate``, ``Metadata_Well``, ``Phenotype_Class``: 'inactive' when the
        well's ``active`` flag is false, else the morphology field with the largest effect
        (``|log|`` of a multiplier, or a shift).

    Raises
    ------
    ValueError
        If a required column is missing.
    """
    missing = [c for c in ("Metadata_Plate", "Metadata_Well", "active") if c not in phenotypes.columns]
    if missing:
        raise ValueError(f"ground-truth phenotype table lacks columns {missing}; has {list(phenotypes.columns)}")
    df = phenotypes.reset_index(drop=True)
    eff = pd.DataFrame({f: np.abs(np.log(df[f].clip(lower=1e-9))) for f in _SCALES if f in df} | {f: df[f].abs() for f in _SHIFTS if f in df})
    active = df["active"].astype(bool)
    cls = np.where(active, eff.idxmax(axis=1), "inactive") if not eff.empty else np.where(active, "active", "inactive")
    return pd.DataFrame({"Metadata_Plate": df["Metadata_Plate"].astype(str), "Metadata_Well": df["Metadata_Well"], "Phenotype_Class": cls})


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------
def _curve_png(run_dir: Path) -> bytes | None:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    plt = _plt()
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(df["epoch"], df["train_loss"], label="train")
    if "val_loss" in df:
        ax[0].plot(df["epoch"], df["val_loss"], label="val")
    ax[0].set_xlabel("epoch"), ax[0].set_ylabel("loss"), ax[0].legend()
    for col in ("val_hit@10", "val_mrr"):
        if col in df:
            ax[1].plot(df["epoch"], df[col], label=col.replace("_", " "))
    ax[1].set_xlabel("epoch"), ax[1].set_ylim(0, 1), ax[1].legend()
    fig.tight_layout()
    return _png(fig)


def _table(rows: list[tuple[str, dict]], proto: str, d: str, title: str) -> str:
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


def _norm(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _rank_hist_png(graph: np.ndarray, image: np.ndarray) -> bytes:
    plt = _plt()
    sim = _norm(graph) @ _norm(image).T
    n = sim.shape[0]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
    for a, (d, s) in zip(ax, (("graph_to_image", sim), ("image_to_graph", sim.T))):
        r = ranks_fullpool(s)
        a.hist(r, bins=np.arange(0.5, n + 1.5, max(1, n // 30)), color="#4477aa")
        a.axhline(len(r) / n * max(1, n // 30), color="grey", ls="--", label="chance (uniform)")
        a.set_title(f"{d}: rank of the positive among {n}", fontsize=9)
        a.set_xlabel("rank (1 = best)")
        a.legend(fontsize=7)
    ax[0].set_ylabel("queries")
    fig.tight_layout()
    return _png(fig)


def _mol_png(smiles: Sequence[str], legends: Sequence[str]) -> bytes:
    from rdkit import Chem
    from rdkit.Chem import Draw

    img = Draw.MolsToGridImage([Chem.MolFromSmiles(s) for s in smiles], molsPerRow=len(smiles), subImgSize=(200, 160), legends=list(legends))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _raw_compound_crops(dataset, idx: int, k: int) -> np.ndarray:
    pairs = dataset.crops[idx][:k]
    out = []
    for code, row in pairs:
        out.append(dataset.readers[dataset.plates[int(code)]].read(np.array([row])))
    return np.concatenate(out)


def _examples(dataset, embeddings, smiles: pd.Series, ids: dict[str, str], *, n_queries: int = 3, top: int = 5) -> str:
    g, i = _norm(embeddings.graph), _norm(embeddings.image)
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
        crops = [_raw_compound_crops(dataset, int(b), 6) for b in best]
        labels = [f"#{r + 1} {ids.get(dataset.keys[b], dataset.keys[b][:8])}{' (true)' if b == q else ''} {sim[q, b]:.2f}" for r, b in enumerate(best)]
        mol = _mol_png([smiles[key]], [f"{ids.get(key, key[:8])}: true match at rank {ranks[q]}"])
        parts.append(
            f"<div class='example'><h3>query {html.escape(ids.get(key, key))}</h3>{_img(mol, 'query molecule')}"
            f"{_img(crop_grid_png(crops, labels), 'retrieved crops')}</div>"
        )
    return "".join(parts)


def _embedding_map_png(dataset, image: np.ndarray, ground_truth: pd.DataFrame | None) -> tuple[bytes, str]:
    from sklearn.decomposition import PCA

    plt = _plt()
    xy = PCA(n_components=2, random_state=0).fit_transform(_norm(image)) if image.shape[0] > 2 else np.zeros((image.shape[0], 2))
    gt = phenotype_classes(ground_truth) if ground_truth is not None else None
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    if gt is not None:
        wells = [(w.split("/")[0], w.split("/")[1]) for w in (ws[0] for ws in dataset.wells)]
        look = gt.set_index(["Metadata_Plate", "Metadata_Well"])["Phenotype_Class"]
        cls = np.array([look.get(w, "unknown") for w in wells])
        for name in sorted(set(cls)):
            m = cls == name
            ax.scatter(xy[m, 0], xy[m, 1], s=14, label=f"{name} ({m.sum()})", alpha=0.8)
        ax.legend(fontsize=7, loc="best")
        what = "ground-truth phenotype class (first well of each compound)"
    else:
        counts = np.array([len(c) / max(1, len(set(w))) for c, w in zip(dataset.crops, dataset.wells)])
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=counts, s=14, cmap="viridis")
        fig.colorbar(sc, ax=ax, label="cells per well")
        what = "cells per well (no ground truth given)"
    ax.set_xlabel("PC 1"), ax.set_ylabel("PC 2")
    ax.set_title(f"test compounds' image embeddings (PCA), n={image.shape[0]}", fontsize=9)
    fig.tight_layout()
    return _png(fig), what


def _plate_qc_png(store: Store) -> bytes | None:
    cells = store.read("cells", ["Metadata_Plate", "Metadata_Well"])
    if cells.empty:
        return None
    plt = _plt()
    plates = sorted(cells["Metadata_Plate"].unique())
    counts = cells.groupby(["Metadata_Plate", "Metadata_Well"]).size()
    rows = [ord(w[0]) - 65 for w in counts.index.get_level_values(1)]
    cols = [int(w[1:]) - 1 for w in counts.index.get_level_values(1)]
    nr, nc = (16, 24) if max(rows) >= 8 or max(cols) >= 12 else (8, 12)
    ncols = min(3, len(plates))
    nrows = -(-len(plates) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.0 * nrows), squeeze=False)
    vmax = float(counts.max())
    for ax, plate in zip(axes.ravel(), plates):
        grid = np.full((nr, nc), np.nan)
        for w, v in counts.loc[plate].items():
            grid[ord(w[0]) - 65, int(w[1:]) - 1] = v
        im = ax.imshow(grid, cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(f"{plate}: cells per well (blank = none)", fontsize=8)
        ax.set_xticks(range(0, nc, 4), [str(c + 1) for c in range(0, nc, 4)], fontsize=6)
        ax.set_yticks(range(nr), [chr(65 + r) for r in range(nr)], fontsize=6)
        fig.colorbar(im, ax=ax, shrink=0.8)
    for ax in axes.ravel()[len(plates):]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def _probe_html(p: dict[str, Any]) -> str:
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


def _ci_html(result: dict[str, Any]) -> str:
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


def _activity_html(activity: dict[str, Any]) -> str:
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


def _consistency_html(consistency: dict[str, Any]) -> str:
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


def _controls_html(store: Store, result: dict[str, Any]) -> str:
    """One visible line naming the plates without a negative-control well ('' when none): their
    profiles were normalized against all their wells and their activity was not scored."""
    from pipeline.profiles.controls import plates_normalized_to_all

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


def write_report(store: Store, run_dir: Path, result: dict[str, Any], *, dataset=None, embeddings=None,
                 ground_truth: pd.DataFrame | None = None) -> Path:
    """Write ``reports/<run>/report.html`` and return its path.

    ``dataset`` (the test :class:`~cmcl_model.data.pairs.PairDataset`) and ``embeddings``
    (:class:`~cmcl_model.evaluation.run.TestEmbeddings`) enable the rank histograms, example
    queries and embedding map; without them only tables, curves, QC and probe are written.
    ``ground_truth`` (a per-well phenotype table, see :func:`phenotype_classes`; the synthetic
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
    parts.append(_controls_html(store, result))
    curve = _curve_png(run_dir)
    parts.append("<h2>Training</h2>" + (_img(curve, "training curves") if curve else "<p>no metrics.jsonl</p>"))

    parts.append("<h2>Retrieval</h2><p>hit101: MIGA protocol (the positive among 100 random negatives); fullpool: CLOOME "
                 "protocol (whole test pool). Percentages; mean rank 1 = best. Chance rows are exact expectations of a random ranking.</p>")
    rows = [("model", result["model"])] + list(result["baselines"].items()) + [("chance", result["chance"])]
    crop_rows = [("model, crop level", result["crop_level"]), ("chance, crop level", result["crop_level_chance"])] if "crop_level" in result else []
    for proto in ("hit101", "fullpool"):
        for d in DIRECTIONS:
            parts.append(_table(rows, proto, d, f"{proto} · {d} · compound level (n={result['n_candidates'][proto]})"))
            if crop_rows:
                parts.append(_table(crop_rows, proto, d, f"{proto} · {d} · crop level"))

    if result.get("ci"):
        parts.append(_ci_html(result))
    if result.get("activity"):
        parts.append(_activity_html(result["activity"]))
    if result.get("consistency"):
        parts.append(_consistency_html(result["consistency"]))

    if dataset is not None and embeddings is not None:
        parts.append("<h2>Rank histograms (model, full pool)</h2>" + _img(_rank_hist_png(embeddings.graph, embeddings.image), "rank histograms"))
        comp = store.read("compounds").set_index("Metadata_InChIKey")
        ids = {k: str(v[0]) if len(v) else k[:8] for k, v in comp["Metadata_CompoundIDs"].items()}
        parts.append("<h2>Example queries (graph &rarr; image)</h2><p>The best-, median- and worst-ranked test compounds; "
                     "each row shows crops of a retrieved compound (AGP red, ER green, DNA blue).</p>"
                     + _examples(dataset, embeddings, comp["Metadata_SMILES"], ids))
        png, what = _embedding_map_png(dataset, embeddings.image, ground_truth)
        parts.append(f"<h2>Embedding map</h2><p>Coloured by {esc(what)}.</p>" + _img(png, "embedding map"))
    qc = _plate_qc_png(store)
    if qc:
        parts.append("<h2>Plate QC</h2>" + _img(qc, "plate QC"))
    if "probe" in result:
        parts.append(_probe_html(result["probe"]))
    from cmcl_model.reports.finetune import finetune_section

    parts.append(finetune_section(store.report_dir(run_dir.name)))  # '' until `cmcl finetune --init <run>`
    style = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin-bottom:1em}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}tr.chance{color:#777;font-style:italic}"
             "img{max-width:100%;display:block;margin:0.5em 0}")
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>cmcl {esc(run_dir.name)}</title><style>{style}</style></head>"
            f"<body>{''.join(parts)}</body></html>")
    from pipeline.store.atomic import write_text_atomic

    out = store.report_dir(run_dir.name) / "report.html"
    write_text_atomic(text, out)
    return out
