"""The transfer benchmark's accumulating results: ``docs/transfer.json`` and ``docs/transfer.md``.

One record per finished (dataset, method, seed) cell, written as soon as the cell ends, so a
benchmark that runs for days in pieces keeps everything it finished; a rerun skips the cells
already recorded (same dataset, method, seed, epochs, protocol and featurizer; records written
before the featurizer was recorded used the OGB features). The Markdown table is
regenerated from the JSON alone. Schema: ``schemas/reports/transfer.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.store.atomic import write_text_atomic

__all__ = [
    "HU2020_NO_PRETRAIN",
    "RECORD_FIELDS",
    "transfer_schema",
    "empty_document",
    "load_records",
    "save_records",
    "featurizer_of",
    "precision_of",
    "cell_key",
    "add_record",
    "finished_keys",
    "leakage",
    "render_markdown",
]

#: Hu et al. (ICLR 2020), Table 1, GIN without pre-training, test ROC-AUC % (10 seeds), each seed's
#: test score at its best-validation epoch: their ``chem/parse_result.py`` takes
#: ``test_auc_list[np.argmax(val_auc_list)]`` over the 100 epochs ``finetune.py`` logs.
HU2020_NO_PRETRAIN: dict[str, float] = {"bbbp": 65.8, "clintox": 58.0, "bace": 70.1, "sider": 57.3, "tox21": 74.0}

#: Fields every record holds (schema: ``schemas/reports/transfer.json``).
RECORD_FIELDS: tuple[str, ...] = (
    "dataset", "method", "seed", "epochs", "protocol", "metric", "test_last", "test_best_val", "best_epoch", "wall_s",
    "commit", "command",
)


def transfer_schema() -> dict[str, Any]:
    """``schemas/reports/transfer.json``."""
    return json.loads(files("schemas").joinpath("reports/transfer.json").read_text())


def empty_document() -> dict[str, Any]:
    """``{"records": [], "encoders": {}}``."""
    return {"records": [], "encoders": {}}


def load_records(path: str | os.PathLike) -> dict[str, Any]:
    """The document at ``path``, or an empty one when the file does not exist.

    Raises
    ------
    ValueError
        If the file is not valid JSON or does not match the schema (the message names it).
    """
    p = Path(path)
    if not p.is_file():
        return empty_document()
    from cmcl_model.reports.validation import validate_json

    try:
        doc = json.loads(p.read_text())
        validate_json(doc, transfer_schema())
    except (json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"{p}: not a transfer results file: {str(exc).splitlines()[0]}") from None
    return doc


def save_records(doc: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Validate and write ``doc`` atomically (temporary file + rename); returns the path."""
    from cmcl_model.reports.validation import validate_json

    validate_json(doc, transfer_schema())
    return write_text_atomic(json.dumps(doc, indent=1) + "\n", path)


def featurizer_of(record: Mapping[str, Any]) -> str:
    """The record's featurizer: ``'ogb'`` for records written before it was recorded (and
    for fingerprint models, which have none)."""
    return record.get("featurizer") or "ogb"


def precision_of(record: Mapping[str, Any]) -> str:
    """The record's training precision: ``'fp32'`` for records written before it was recorded
    (and for fingerprint models)."""
    return record.get("precision") or "fp32"


def cell_key(record: Mapping[str, Any]) -> tuple:
    """(dataset, method, seed, epochs, protocol, featurizer, precision): what makes two records
    the same cell (a bf16 run is a cell of its own beside the fp32 one it is compared with)."""
    return (record["dataset"], record["method"], int(record["seed"]), record.get("epochs"), record["protocol"],
            featurizer_of(record), precision_of(record) if record.get("epochs") is not None else "fp32")


def add_record(doc: dict[str, Any], record: Mapping[str, Any]) -> None:
    """Append ``record`` (replacing a record of the same cell) in place."""
    missing = [f for f in RECORD_FIELDS if f not in record]
    if missing:
        raise ValueError(f"transfer record lacks {missing}")
    key = cell_key(record)
    doc["records"] = [r for r in doc["records"] if cell_key(r) != key] + [dict(record)]


def finished_keys(doc: Mapping[str, Any]) -> set[tuple]:
    """Cell keys already recorded."""
    return {cell_key(r) for r in doc["records"]}


def leakage(test_keys: Sequence[str], test_scaffolds: Sequence[str], pretrain_keys: Iterable[str],
            pretrain_scaffolds: Iterable[str]) -> dict[str, int]:
    """How many downstream test molecules (InChIKeys) and their distinct non-empty scaffolds
    were in a pre-training set.

    Returns ``{"test_molecules", "molecules_in_pretraining", "test_scaffolds",
    "scaffolds_in_pretraining"}``.
    """
    pk, ps = set(pretrain_keys), {s for s in pretrain_scaffolds if s}
    scaf = {s for s in test_scaffolds if s}
    return {
        "test_molecules": len(test_keys),
        "molecules_in_pretraining": int(sum(k in pk for k in test_keys)),
        "test_scaffolds": len(scaf),
        "scaffolds_in_pretraining": len(scaf & ps),
    }


def _cell(values: Sequence[float], expected: int) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64) * 100.0
    if not v.size:
        return "–"
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    tail = "" if v.size >= expected else f" ({v.size}/{expected})"
    return f"{v.mean():.1f} ± {sd:.1f}{tail}"


def _rows(records: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> list[tuple[str, str | None]]:
    """(method, featurizer) rows: one per featurizer a GIN method was recorded with (the
    protocol's own first), one (method, None) for fingerprint models and unrecorded methods."""
    rows: list[tuple[str, str | None]] = []
    for m in methods:
        feats = sorted({featurizer_of(r) for r in records if r["method"] == m and r.get("epochs") is not None},
                       key=lambda f: (f == "ogb", f))
        rows += [(m, f) for f in feats] if feats else [(m, None)]
    return rows


def _table(records: Sequence[Mapping[str, Any]], datasets: Sequence[str], methods: Sequence[str], field: str,
           seeds: Mapping[str, int]) -> list[str]:
    head = "| method | features | " + " | ".join(datasets) + " |"
    lines = [head, "|---" * (len(datasets) + 2) + "|"]
    if field == "test_best_val":  # what Hu et al. report (HU2020_NO_PRETRAIN)
        lines.append("| Hu et al. 2020, no pre-training | hu2020 | " + " | ".join(
            f"{HU2020_NO_PRETRAIN[d]:.1f}" if d in HU2020_NO_PRETRAIN else "–" for d in datasets) + " |")
    for m, feat in _rows(records, methods):
        mine = [r for r in records if r["method"] == m and (feat is None or featurizer_of(r) == feat)]
        cells = [_cell([r[field] for r in mine if r["dataset"] == d], seeds.get(m, 3)) for d in datasets]
        lines.append(f"| {m} | {feat or '–'} | " + " | ".join(cells) + " |")
    return lines


def _precision_comparison(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Lines comparing each bf16-autocast cell with the fp32 cell of the same dataset, method,
    features and seed: test ROC-AUC % at the last and best-validation epochs, seconds per epoch."""
    fp32 = {cell_key(r)[:6]: r for r in records if precision_of(r) == "fp32" and r.get("epochs")}
    pairs = [(fp32.get(cell_key(r)[:6]), r) for r in records if precision_of(r) != "fp32"]
    if not pairs:
        return []
    out = ["", "## bf16 autocast against fp32 (same cell otherwise)", "",
           "| dataset | method | features | seed | fp32 last / best-val | bf16 last / best-val | s/epoch fp32 / bf16 |",
           "|---|---|---|---|---|---|---|"]
    def auc(r):
        return f"{100 * r['test_last']:.1f} / {100 * r['test_best_val']:.1f}" if r else "–"

    def per_epoch(r):
        return f"{r['wall_s'] / r['epochs']:.1f}" if r else "–"

    for ref, r in sorted(pairs, key=lambda p: cell_key(p[1])):
        out.append(f"| {r['dataset']} | {r['method']} | {featurizer_of(r)} | {r['seed']} | {auc(ref)} | {auc(r)} | "
                   f"{per_epoch(ref)} / {per_epoch(r)} |")
    return out


def render_markdown(
    doc: Mapping[str, Any],
    *,
    datasets: Sequence[str],
    methods: Sequence[str],
    protocol: str,
    epochs: int,
    seeds: Mapping[str, int],
    descriptions: Mapping[str, str],
    preamble: str = "",
    featurizer: str = "ogb",
) -> str:
    """``docs/transfer.md``: test ROC-AUC % (mean ± sd over seeds; ``(k/n)`` when only k of
    the n seeds are done) at the best-validation epoch beside Hu et al. (what they report), at the last epoch,
    the methods, the leakage of every pre-trained encoder, the missing cells and the command
    of each recorded cell. GIN methods get one row per featurizer recorded; a GIN cell counts
    as missing until it is recorded with ``featurizer``."""
    mine = [r for r in doc["records"] if r["protocol"] == protocol and r.get("epochs") in (epochs, None)]
    recs = [r for r in mine if precision_of(r) == "fp32"]  # the tables; bf16 cells get their own comparison
    out = [preamble.rstrip(), ""] if preamble else []
    setting = f"protocol `{protocol}`, {epochs} epochs, scaffold split 80/10/10"
    out += [f"## Test ROC-AUC % at the best-validation epoch ({setting})", "",
            "Each seed's test score at the first epoch of highest validation ROC-AUC: what Hu et al. report "
            "(their `chem/parse_result.py`), so their row stands in this table.", ""]
    out += _table(recs, datasets, methods, "test_best_val", seeds)
    out += ["", f"## Test ROC-AUC % at the last epoch ({setting})", ""]
    out += _table(recs, datasets, methods, "test_last", seeds)
    out += ["", "## Methods", ""] + [f"- `{m}`: {descriptions.get(m, '')}" for m in methods]
    enc = doc.get("encoders", {})
    if enc:
        out += ["", "## Pre-training sets and leakage", ""]
        for name, e in enc.items():
            out.append(f"- `{name}`: {e['description']} ({e['n_molecules']} molecules).")
            for d, lk in sorted(e.get("leakage", {}).items()):
                out.append(f"  - {d}: {lk['molecules_in_pretraining']} of {lk['test_molecules']} test molecules and "
                           f"{lk['scaffolds_in_pretraining']} of {lk['test_scaffolds']} test scaffolds in the pre-training set")
    out += _precision_comparison(mine)
    done = {(r["dataset"], r["method"]) for r in recs if r.get("epochs") is None or featurizer_of(r) == featurizer}
    missing = [f"{m} on {d}" for d in datasets for m in methods if (d, m) not in done]
    out += ["", "## Missing cells", "", ", ".join(missing) if missing else "none"]
    out += ["", "## Commands (one per recorded cell)", "",
            "| dataset | method | features | seed | wall s | commit | command |", "|---|---|---|---|---|---|---|"]
    for r in sorted(mine, key=lambda r: (r["dataset"], r["method"], featurizer_of(r), precision_of(r), r["seed"])):
        feat = featurizer_of(r) if r.get("epochs") is not None else "–"
        out.append(f"| {r['dataset']} | {r['method']} | {feat} | {r['seed']} | {r['wall_s']:.0f} | {r['commit'][:10]} | "
                   f"`{r['command']}` |")
    return "\n".join(out) + "\n"
