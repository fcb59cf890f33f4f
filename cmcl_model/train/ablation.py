"""Objective ablation from one call: GIC alone, GIC + each registered objective, all of them.

The variants come from the objective registry (:data:`cmcl_model.train.objectives.OBJECTIVES`):
``gic``, ``gic+<name>`` per objective (``gic+mgm``, ``gic+ggim``) and ``all``. Every variant trains
from the same base configuration (same split, same data, the same list of seeds) and differs
only in the objectives' weights (a ``<name>_weight`` column each); each run is then evaluated on
the test split with :func:`cmcl_model.evaluation.run.evaluate` (which writes ``reports/<run>/``).
One row per (variant, seed) goes to ``reports/ablation-<timestamp>.csv``; the ``.md`` beside
it also has the mean and standard deviation over seeds per variant (:func:`summarize`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cmcl_model.train.config import TrainConfig
from cmcl_model.train.loop import train
from cmcl_model.train.objectives import OBJECTIVES
from cmcl_model.train.rundir import new_run_id, read_metrics
from pipeline.store.atomic import write_text_atomic
from pipeline.store.paths import Store

__all__ = ["ablation_variants", "columns", "variant_config", "run_ablation", "summarize"]


def ablation_variants() -> dict[str, tuple[str, ...]]:
    """Variant name -> the registered objectives it switches on: ``gic`` (none), ``gic+<name>``
    for each objective of the registry, ``all``."""
    names = tuple(OBJECTIVES)
    return {"gic": (), **{f"gic+{n}": (n,) for n in names}, "all": names}


_RESULT_COLUMNS = [
    "epochs", "final_val_loss", "val_g2i_hit@10", "val_i2g_hit@10", "val_mrr",
    "test_g2i_hit@10", "test_i2g_hit@10", "test_g2i_mrr", "test_i2g_mrr", "test_mrr",
    "test_chance_hit@10", "test_n_candidates", "train_seconds",
]


def columns() -> list[str]:
    """The ablation table's columns: variant, seed, run id, one ``<name>_weight`` per registered
    objective, then the validation and test results."""
    return ["variant", "seed", "run_id", *(f"{n}_weight" for n in OBJECTIVES), *_RESULT_COLUMNS]


def variant_config(base: TrainConfig, variant: str, *, weights: Mapping[str, float] | None = None) -> TrainConfig:
    """``base`` with the objectives of ``variant`` switched on or off.

    An objective that is on keeps the base's weight when it is > 0, else gets ``weights[name]``
    (default: the objective's ``default_weight``, 0.5 for MGM and GGIM); an objective that is off
    gets weight 0.

    Raises
    ------
    ValueError
        On an unknown variant name (the message lists :func:`ablation_variants`).
    """
    table = ablation_variants()
    if variant not in table:
        raise ValueError(f"unknown ablation variant {variant!r}; choose from {list(table)}")
    weights = dict(weights or {})
    cfg = base
    for name, objective in OBJECTIVES.items():
        on = name in table[variant]
        current = objective.weight(base)
        weight = (current if current > 0 else weights.get(name, objective.default_weight)) if on else 0.0
        cfg = objective.with_weight(cfg, weight)
    return cfg


def _val_row(run_dir: Path) -> dict[str, Any]:
    rows = read_metrics(run_dir)
    if not rows:
        return {"epochs": 0}
    last = rows[-1]
    return {
        "epochs": int(last["epoch"]),
        "final_val_loss": last.get("val_loss"),
        "val_g2i_hit@10": last.get("val_graph_to_image_hit@10"),
        "val_i2g_hit@10": last.get("val_image_to_graph_hit@10"),
        "val_mrr": last.get("val_mrr"),
    }


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                cells.append("" if pd.isna(v) else (f"{v:.1f}" if c == "train_seconds" else f"{v:.3f}"))
            else:
                cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


#: columns averaged by :func:`summarize`
SUMMARY_METRICS = ["final_val_loss", "val_mrr", "test_g2i_hit@10", "test_i2g_hit@10", "test_mrr", "train_seconds"]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each variant (order of first appearance).

    Columns: ``variant``, ``n_seeds``, ``test_chance_hit@10`` and, for each of
    :data:`SUMMARY_METRICS` present, ``<metric>`` (mean) and ``<metric>_sd`` (sample sd; NaN
    with one seed).
    """
    rows = []
    for v in dict.fromkeys(df["variant"]):
        part = df[df["variant"] == v]
        row: dict[str, Any] = {"variant": v, "n_seeds": len(part)}
        for m in SUMMARY_METRICS:
            if m in part and part[m].notna().any():
                vals = part[m].astype(float)
                row[m], row[f"{m}_sd"] = vals.mean(), (vals.std(ddof=1) if len(vals) > 1 else float("nan"))
        if "test_chance_hit@10" in part:
            row["test_chance_hit@10"] = part["test_chance_hit@10"].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def _run_variant(store: Store, variant: str, cfg: TrainConfig, *, progress: bool, evaluate_test: bool) -> dict[str, Any]:
    run_id = new_run_id(f"ablation-{variant}-{cfg.seed}")
    t = time.monotonic()
    run_dir = train(store, cfg, run_id=run_id, progress=progress)
    seconds = time.monotonic() - t
    row: dict[str, Any] = {
        "variant": variant, "seed": cfg.seed, "run_id": run_id,
        **{f"{n}_weight": o.weight(cfg) for n, o in OBJECTIVES.items()}, **_val_row(run_dir), "train_seconds": seconds,
    }
    if evaluate_test:
        from cmcl_model.evaluation.run import evaluate

        res = evaluate(store.root, run_dir)
        h = res["model"]["hit101"]
        g2i, i2g = h["graph_to_image"], h["image_to_graph"]
        row.update({
            "test_g2i_hit@10": g2i["hit@10"], "test_i2g_hit@10": i2g["hit@10"],
            "test_g2i_mrr": g2i["mrr"], "test_i2g_mrr": i2g["mrr"],
            "test_mrr": 0.5 * (g2i["mrr"] + i2g["mrr"]),
            "test_chance_hit@10": res["chance"]["hit101"]["graph_to_image"]["hit@10"],
            "test_n_candidates": res["n_candidates"]["hit101"],
        })
    return row


def run_ablation(
    store: Store,
    base_config: TrainConfig,
    *,
    variants: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    weights: Mapping[str, float] | None = None,
    progress: bool = False,
    evaluate_test: bool = True,
    on_variant: Callable[[str, dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Train and evaluate one run per objective variant; return the comparison table.

    Parameters
    ----------
    store : Store
        The cmcl store (its split table is created by the first run if absent and shared by all).
    base_config : TrainConfig
        Everything but the objective weights (see :func:`variant_config`).
    variants : names from :func:`ablation_variants`, optional
        Default: all of them (``gic``, ``gic+<name>`` per registered objective, ``all``).
    seeds : ints, optional
        Train every variant once per seed (``TrainConfig.seed``: initialisation, sampling,
        augmentation; the split is fixed). Default: the base config's seed only.
    weights : {objective name: float}, optional
        Weights used when an objective is on and the base config has it at 0 (default: each
        objective's ``default_weight``).
    progress : bool
        Progress bar of each training run.
    evaluate_test : bool
        Also evaluate each run's best checkpoint on the test split (hit101 protocol).
    on_variant : callable, optional
        Called as ``on_variant(variant, row)`` after each variant (e.g. to print).

    Returns
    -------
    DataFrame with columns :func:`columns`, one row per (variant, seed), values are fractions.
    Also written to ``reports/ablation-<timestamp>.csv``, and with the per-variant summary to
    ``.md``; the CSV path is in ``df.attrs["csv"]``.

    Raises
    ------
    ValueError
        On an unknown or repeated variant name (before anything is trained).
    """
    chosen = list(variants) if variants is not None else list(ablation_variants())
    for v in chosen:
        variant_config(base_config, v)  # validate names up front
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"repeated ablation variants in {chosen}")
    seeds = [base_config.seed] if seeds is None else [int(x) for x in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"ablation seeds must be distinct and at least one, got {seeds}")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    rows = []
    for v in chosen:
        for seed in seeds:
            cfg = dataclasses.replace(variant_config(base_config, v, weights=weights), seed=seed)
            row = _run_variant(store, v, cfg, progress=progress, evaluate_test=evaluate_test)
            rows.append(row)
            if on_variant is not None:
                on_variant(v, row)
    df = pd.DataFrame(rows).reindex(columns=columns())
    out = store.root / "reports"
    csv = out / f"ablation-{stamp}.csv"
    write_text_atomic(df.to_csv(index=False), csv)
    weight_fields = {o.weight_field or "objective_weights" for o in OBJECTIVES.values()}
    header = (
        f"# Objective ablation {stamp}\n\nStore `{store.root}`; base config: "
        f"`{json.dumps({k: v for k, v in base_config.to_dict().items() if k not in weight_fields})}`\n\n"
        "Validation columns: last epoch; test columns: best checkpoint, hit101 protocol (1 true + up to 100 "
        "candidates, mean over candidate draws).\n\n"
    )
    body = "## Per run\n\n" + _markdown(df)
    if len(seeds) > 1:
        body = f"## Mean and sd over seeds {seeds}\n\n" + _markdown(summarize(df)) + "\n" + body
    write_text_atomic(header + body, out / f"ablation-{stamp}.md")
    df.attrs["csv"] = str(csv)
    return df
