"""The ``finetune`` results document (``schemas/reports/finetune.json``), its terminal table
and its section in a run's report."""

from __future__ import annotations

import dataclasses
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cmcl_model.finetune.labelled import LabelledSet
from cmcl_model.finetune.run import FinetuneConfig
from cmcl_model.reports.validation import report_schema, validate_json
from pipeline.store.atomic import write_text_atomic

__all__ = [
    "STANDARDIZATION",
    "AS_GIVEN",
    "finetune_schema",
    "finetune_result",
    "format_table",
    "finetune_html",
    "report_finetune_results",
    "finetune_section",
    "update_report",
    "check_protocol_init",
    "run_finetune",
]

STANDARDIZATION = (
    "pipeline.chem.standardize.standardize_smiles (ChEMBL-style parent: salts and solvents stripped, charges "
    "neutralised, canonical isomeric SMILES); graphs: pipeline.chem.graphs.smiles_to_graph (OGB featurizer)"
)


AS_GIVEN = (
    "protocol hu2020 (Hu et al. 2020, loader.py): the SMILES as given, parsed by RDKit, counter-ions kept; split on "
    "RDKit's canonical SMILES; graphs: pipeline.chem.graphs.smiles_to_graph_hu2020 (Hu et al.'s featurizer: atom "
    "type + chirality, bond type + direction; no charges or hydrogens); GIN layer: Hu et al.'s self-loop GIN"
)


def finetune_schema() -> dict[str, Any]:
    """``schemas/reports/finetune.json``."""
    return report_schema("finetune")


def finetune_result(
    data: LabelledSet,
    split: np.ndarray,
    methods: Mapping[str, Mapping[str, Any]],
    *,
    config: FinetuneConfig,
    split_mode: str,
    split_seed: int,
    split_file: str | None,
    device: str,
    seeds: Sequence[int],
    source: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble one dataset's results document (validated against ``schemas/reports/finetune.json``)."""
    split = np.asarray(split)
    out: dict[str, Any] = {
        "dataset": data.name,
        "source": source,
        "kind": data.kind,
        "metric": "roc_auc" if data.kind == "classification" else "rmse",
        "tasks": list(data.tasks),
        "n_input": int(data.n_input),
        "n_molecules": len(data),
        "invalid": [dict(r) for r in data.invalid],
        "protocol": data.protocol,
        "featurizer": data.featurizer,
        "standardization": {"method": STANDARDIZATION if data.protocol == "cmcl" else AS_GIVEN,
                            "n_changed": int(data.n_changed)},
        "split": {
            "mode": split_mode,
            "fractions": [0.8, 0.1, 0.1],
            "seed": int(split_seed),
            "sizes": {k: int((split == k).sum()) for k in ("train", "val", "test")},
            "file": split_file,
        },
        "config": config.to_dict(),
        "device": device,
        "seeds": [int(s) for s in seeds],
        "methods": {k: dict(v) for k, v in methods.items()},
    }
    if extra:
        out["extra"] = dict(extra)
    validate_json(out, finetune_schema())
    return out


def _fmt(v: Mapping[str, Any] | None, scale: float) -> str:
    if not v or v.get("mean") is None:
        return "-"
    return f"{v['mean'] * scale:.1f} ± {(v.get('sd') or 0.0) * scale:.1f}"


def format_table(results: Sequence[Mapping[str, Any]], *, published: Mapping[str, float] | None = None) -> str:
    """Plain-text table, one row per dataset x method: headline test metric (ROC-AUC % or
    RMSE) mean ± sd over seeds, the GIN's test at the last and at the best-validation epoch,
    wall time, and the published number where given."""
    lines = [f"{'dataset':<14}{'method':<18}{'metric':<8}{'test':>14}{'test@last':>14}{'test@bestval':>14}"
             f"{'seeds':>6}{'wall s':>9}{'published':>11}"]
    for r in results:
        scale = 100.0 if r["metric"] == "roc_auc" else 1.0
        for name, m in r["methods"].items():
            pub = (published or {}).get(r["dataset"]) if name == "gin_random" else None
            lines.append(
                f"{r['dataset']:<14}{name:<18}{r['metric']:<8}{_fmt(m['test'], scale):>14}"
                f"{_fmt(m.get('test_last'), scale):>14}{_fmt(m.get('test_best_val'), scale):>14}"
                f"{len(m['test']['per_seed']):>6}{m['wall_s']:>9.0f}{(f'{pub:.1f}' if pub else '-'):>11}"
            )
    return "\n".join(lines)


def finetune_html(results: Sequence[Mapping[str, Any]]) -> str:
    """The report section: one table per dataset (method, test metric mean ± sd, seeds, wall
    time) and what the numbers do and do not show."""
    parts = ["<h2>Downstream fine-tuning (cmcl finetune)</h2>",
             "<p>GIN fine-tuned end to end with a linear task head (masked BCE / MSE), Morgan-fingerprint "
             "models and linear probes on the same split; test metric mean ± sd over seeds. The pre-trained "
             "encoder learned from this store's images; on a synthetic store its images carry only what the "
             "generator put into them, so a gain or loss here says nothing about real Cell Painting data.</p>"]
    for r in results:
        scale = 100.0 if r["metric"] == "roc_auc" else 1.0
        unit = "ROC-AUC %" if r["metric"] == "roc_auc" else "RMSE"
        sp = r["split"]
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{html.escape(m['mode'])}</td><td>{_fmt(m['test'], scale)}</td>"
            f"<td>{len(m['test']['per_seed'])}</td><td>{m['wall_s']:.0f}</td></tr>"
            for n, m in r["methods"].items()
        )
        parts.append(
            f"<h3>{html.escape(r['dataset'])} ({unit}, {html.escape(sp['mode'])} split "
            f"{sp['sizes']['train']}/{sp['sizes']['val']}/{sp['sizes']['test']}, {len(r['invalid'])} invalid SMILES, "
            f"{r['standardization']['n_changed']} changed by standardization)</h3>"
            f"<table><tr><th>method</th><th>mode</th><th>test</th><th>seeds</th><th>wall s</th></tr>{rows}</table>"
        )
    return "\n".join(parts)


_MARK_START, _MARK_END = "<!-- cmcl-finetune -->", "<!-- /cmcl-finetune -->"


def report_finetune_results(report_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The finetune documents kept with a run's report (``reports/<run>/finetune/*.json``)."""
    d = Path(report_dir) / "finetune"
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []


def finetune_section(report_dir: str | os.PathLike) -> str:
    """The marked report section for a run's finetune documents ('' when there are none)."""
    results = report_finetune_results(report_dir)
    return f"{_MARK_START}{finetune_html(results)}{_MARK_END}" if results else ""


def update_report(report_dir: str | os.PathLike) -> Path | None:
    """Put (or replace) the finetune section in ``report_dir/report.html``; None when the run
    has no report yet (``cmcl evaluate`` writes it, with this section)."""
    path = Path(report_dir) / "report.html"
    if not path.is_file():
        return None
    text = path.read_text()
    section = finetune_section(report_dir)
    if _MARK_START in text and _MARK_END in text:
        a, b = text.index(_MARK_START), text.index(_MARK_END) + len(_MARK_END)
        text = text[:a] + section + text[b:]
    else:
        text = text.replace("</body>", section + "</body>", 1)
    write_text_atomic(text, path)
    return path


def _labelled_input(dataset: str | None, csv: str | os.PathLike | None, *, smiles_col: str,
                    tasks: Sequence[str] | None, kind: str | None, protocol: str) -> tuple[LabelledSet, str, str]:
    """(prepared set, its name, its source) of a shipped set or a user CSV."""
    from cmcl_model.finetune.labelled import load_shipped, prepare_labelled, read_labelled_csv

    if dataset is not None:
        frame, spec = load_shipped(dataset)
        name, source = dataset.lower(), f"cmcl_model/datasets/{spec.file}"
        data = prepare_labelled(frame, smiles_col=spec.smiles_col, tasks=spec.tasks, kind=spec.kind, name=name,
                                protocol=protocol)  # type: ignore[arg-type]
    else:
        p = Path(csv)
        frame = read_labelled_csv(p)
        name, source = p.name.split(".")[0], str(p)
        data = prepare_labelled(frame, smiles_col=smiles_col, tasks=tasks, kind=kind, name=str(p),  # type: ignore[arg-type]
                                protocol=protocol)  # type: ignore[arg-type]
        data.name = name
    return data, name, source


def _encoders(init: str, store: str | os.PathLike | None, config: FinetuneConfig, *, family: str, baselines: bool,
              device, featurizer: str = "ogb") -> tuple[dict[str, Any], list[str], dict[str, Any], Path | None]:
    """(encoders, methods, extra, report_dir) for ``init``: random, a ``cmcl export`` file or a
    run of ``store`` (with its baselines); ``report_dir`` is the run's, else None."""
    from cmcl_model.finetune.run import random_encoder, run_encoder, ssl_encoder, store_train_graphs

    encoders = {"random": random_encoder(config, featurizer=featurizer)}
    extra: dict[str, Any] = {}
    report_dir = None
    if init == "random":
        methods = [f"{family}_random"]
    elif init.endswith(".pt") or Path(init).is_file():  # a `cmcl export` file: no store needed
        from cmcl_model.deploy.export import exported_graph_encoder

        encoders["pretrained"], run_config = exported_graph_encoder(init)
        extra["pretrained_run"] = {"file": str(init), "gin_layers": run_config.gin_layers,
                                   "gin_hidden": run_config.gin_hidden, "epochs": run_config.epochs}
        methods = [f"{family}_pretrained"]
    else:
        if store is None:
            raise ValueError(f"--init {init!r} names a run: give --store")
        from pipeline.store.paths import Store

        st = Store.of(store)
        run_dir = st.run_dir(init)
        if not st.has_run(init):
            raise FileNotFoundError(f"run {init!r} not found in {st.root / 'runs'} (runs: {', '.join(st.runs()) or 'none'})")
        encoders["pretrained"], run_config = run_encoder(run_dir)
        extra["pretrained_run"] = {"run": init, "gin_layers": run_config.gin_layers, "gin_hidden": run_config.gin_hidden,
                                   "epochs": run_config.epochs}
        methods = [f"{family}_pretrained"]
        report_dir = st.report_dir(init)
        if baselines:
            encoders["random_run"] = random_encoder(FinetuneConfig(layers=run_config.gin_layers, hidden=run_config.gin_hidden,
                                                                   dropout=config.dropout, jk=run_config.gin_jk,
                                                                   pooling=run_config.gin_pooling))
            encoders["ssl"], extra["ssl_pretraining"] = ssl_encoder(store_train_graphs(st.root), run_config, device=device)
            methods += [f"{family}_random_run", f"{family}_ssl", f"{family}_random"]
    return encoders, methods, extra, report_dir


def check_protocol_init(protocol: str, init: str) -> None:
    """Raise when a pre-trained encoder is asked for under ``protocol='hu2020'``.

    Raises
    ------
    ValueError
        One line: cmcl's pre-trained encoders read OGB features; fine-tune them with
        ``--protocol cmcl`` (hu2020 is the random-init reproduction of Hu et al.).
    """
    if protocol == "hu2020" and init != "random":
        raise ValueError(f"--init {init} is a pre-trained cmcl encoder, which reads OGB features, not Hu et al.'s: "
                         "use --protocol cmcl (hu2020 reproduces Hu et al.'s random-init GIN)")


def run_finetune(
    *,
    dataset: str | None = None,
    csv: str | os.PathLike | None = None,
    smiles_col: str = "smiles",
    tasks: Sequence[str] | None = None,
    kind: str | None = None,
    init: str = "random",
    store: str | os.PathLike | None = None,
    seeds: int = 3,
    out: str | os.PathLike | None = None,
    linear_probe: bool = False,
    baselines: bool = False,
    config: FinetuneConfig = FinetuneConfig(),
    split_mode: str = "scaffold",
    split_seed: int = 0,
    device: str = "auto",
    protocol: str = "cmcl",
    log=None,
    progress=None,
) -> tuple[dict[str, Any], Path]:
    """Fine-tune on a shipped set (``dataset``) or a user CSV and write the results.

    ``init`` is ``'random'`` (GIN of ``config``'s architecture), a run id in ``store`` (its
    pre-trained graph encoder) or a ``cmcl export`` file (``*.pt``; no store needed). ``linear_probe`` fits linear models on the frozen
    embeddings instead of fine-tuning. ``baselines`` adds, on the same split: the random-init
    GIN (both the run's and ``config``'s architecture when ``init`` is a run), Morgan +
    logistic regression / random forest and, with a run, the attribute-masking SSL GIN
    trained on the store's compounds with the run's budget.

    Writes ``out`` (default ``finetune_<dataset>.json`` in the working directory, or
    ``reports/<run>/finetune/<dataset>.json`` for a run, whose report then gets the
    section) and the split as ``<out stem>.split.csv`` beside it. Returns (document, path).

    ``protocol``: ``'cmcl'`` (SMILES standardized to parents, OGB features, cmcl's GINE layer)
    or ``'hu2020'`` (Hu et al.: the SMILES as given, their featurizer and self-loop GIN layer,
    random init only); recorded in the document with the featurizer.
    ``progress(done, total, text)`` is called after every epoch (see :func:`run_methods`).

    Raises
    ------
    LabelledInputError
        Bad CSV input (one line naming the file and problem).
    ValueError
        Neither or both of ``dataset`` and ``csv``; unknown dataset or split mode; a pre-trained
        ``init`` under ``protocol='hu2020'`` (its encoder reads OGB features).
    FileNotFoundError
        ``init`` names a run that the store does not hold, or a ``.pt`` file that does not exist.
    """
    from cmcl_model.finetune.labelled import split_molecules, split_table
    from cmcl_model.finetune.run import run_methods
    from cmcl_model.train import resolve_device

    if (dataset is None) == (csv is None):
        raise ValueError("give exactly one of --dataset NAME or --csv FILE")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    check_protocol_init(protocol, init)
    if protocol == "hu2020":
        config = dataclasses.replace(config, conv="selfloop")
    data, name, source = _labelled_input(dataset, csv, smiles_col=smiles_col, tasks=tasks, kind=kind, protocol=protocol)
    dev = resolve_device(device)  # type: ignore[arg-type]
    split = split_molecules(data.smiles, mode=split_mode, seed=split_seed)  # type: ignore[arg-type]
    family = "probe" if linear_probe else "gin"
    encoders, methods, extra, report_dir = _encoders(init, store, config, family=family, baselines=baselines, device=dev,
                                                   featurizer=data.featurizer)
    if baselines:
        methods += [m for m in (f"{family}_random", "morgan_lr", "morgan_rf") if m not in methods]
    out_path = Path(out) if out else (report_dir / "finetune" / f"{name}.json" if report_dir else Path(f"finetune_{name}.json"))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    split_path = out_path.with_name(out_path.name.removesuffix(".json") + ".split.csv")
    split_table(data, split).to_csv(split_path, index=False)
    res = run_methods(data, split, methods=methods, seeds=list(range(seeds)), encoders=encoders, config=config,
                      device=dev, log=log, progress=progress)
    doc = finetune_result(data, split, res, config=config, split_mode=split_mode, split_seed=split_seed,
                          split_file=split_path.name, device=str(dev), seeds=list(range(seeds)), source=source,
                          extra=extra or None)
    out_path.write_text(json.dumps(doc, indent=1))
    if report_dir is not None and out_path.parent == report_dir / "finetune":
        update_report(report_dir)
    return doc, out_path
