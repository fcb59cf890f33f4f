"""Objective ablation from one call: GIC alone, + MGM, + GGIM, all three.

Every variant trains from the same base configuration (same split, same data, the same list
of seeds) and differs only in ``mgm_weight`` / ``ggim_weight``; each run is then evaluated on
the test split with :func:`cmcl_model.evaluation.run.evaluate` (which writes ``reports/<run>/``).
One row per (variant, seed) goes to ``reports/ablation-<timestamp>.csv``; the ``.md`` beside
it also has the mean and standard deviation over seeds per variant (:func:`summarize`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cmcl_model.train.loop import TrainConfig, new_run_id, train
from pipeline.store.atomic import write_text_atomic
from pipeline.store.paths import Store

__all__ = ["VARIANTS", "variant_config", "run_ablation", "summarize"]

#: variant name -> (MGM on, GGIM on)
VARIANTS: dict[str, tuple[bool, bool]] = {
    "gic": (False, False),
    "gic+mgm": (True, False),
    "gic+ggim": (False, True),
    "all": (True, True),
}

COLUMNS = [
    "variant", "seed", "run_id", "mgm_weight", "ggim_weight", "epochs", "final_val_loss",
    "val_g2i_hit@10", "val_i2g_hit@10", "val_mrr",
    "test_g2i_hit@10", "test_i2g_hit@10", "test_g2i_mrr", "test_i2g_mrr", "test_mrr",
    "test_chance_hit@10", "test_n_candidates", "train_seconds",
]


def variant_config(base: TrainConfig, variant: str, *, mgm_weight: float = 0.5, ggim_weight: float = 0.5) -> TrainConfig:
    """``base`` with the objectives of ``variant`` switched on or off.

    An objective that is on keeps the base's weight when it is > 0, else gets the default
    weight given here; an objective that is off gets weight 0.

    Raises
    ------
    ValueError
        On an unknown variant name.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown ablation variant {variant!r}; choose from {list(VARIANTS)}")
    mgm, ggim = VARIANTS[variant]
    return dataclasses.replace(
        base,
        mgm_weight=(base.mgm_weight if base.mgm_weight > 0 else mgm_weight) if mgm else 0.0,
        ggim_weight=(base.ggim_weight if base.ggim_weight > 0 else ggim_weight) if ggim else 0.0,
    )


def _val_row(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []
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
    run_dir = train(store.root, cfg, run_id=run_id, progress=progress)
    seconds = time.monotonic() - t
    row: dict[str, Any] = {
        "variant": variant, "seed": cfg.seed, "run_id": run_id, "mgm_weight": cfg.mgm_weight,
        "ggim_weight": cfg.ggim_weight, **_val_row(run_dir), "train_seconds": seconds,
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
    store_root: str | os.PathLike,
    base_config: TrainConfig,
    *,
    variants: Sequence[str] = ("gic", "gic+mgm", "gic+ggim", "all"),
    seeds: Sequence[int] | None = None,
    mgm_weight: float = 0.5,
    ggim_weight: float = 0.5,
    progress: bool = False,
    evaluate_test: bool = True,
    on_variant: Callable[[str, dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Train and evaluate one run per objective variant; return the comparison table.

    Parameters
    ----------
    store_root : path
        The cmcl store (its split table is created by the first run if absent and shared by all).
    base_config : TrainConfig
        Everything but the objective weights (see :func:`variant_config`).
    variants : names from :data:`VARIANTS`
    seeds : ints, optional
        Train every variant once per seed (``TrainConfig.seed``: initialisation, sampling,
        augmentation; the split is fixed). Default: the base config's seed only.
    mgm_weight, ggim_weight : float
        Weights used when an objective is on and the base config has it at 0.
    progress : bool
        Progress bar of each training run.
    evaluate_test : bool
        Also evaluate each run's best checkpoint on the test split (hit101 protocol).
    on_variant : callable, optional
        Called as ``on_variant(variant, row)`` after each variant (e.g. to print).

    Returns
    -------
    DataFrame with columns :data:`COLUMNS`, one row per (variant, seed), values are fractions.
    Also written to ``reports/ablation-<timestamp>.csv``, and with the per-variant summary to
    ``.md``; the CSV path is in ``df.attrs["csv"]``.

    Raises
    ------
    ValueError
        On an unknown or repeated variant name (before anything is trained).
    """
    variants = list(variants)
    for v in variants:
        variant_config(base_config, v)  # validate names up front
    if len(set(variants)) != len(variants):
        raise ValueError(f"repeated ablation variants in {variants}")
    seeds = [base_config.seed] if seeds is None else [int(x) for x in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"ablation seeds must be distinct and at least one, got {seeds}")
    store = Store(Path(store_root))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    rows = []
    for v in variants:
        for seed in seeds:
            cfg = dataclasses.replace(variant_config(base_config, v, mgm_weight=mgm_weight, ggim_weight=ggim_weight), seed=seed)
            row = _run_variant(store, v, cfg, progress=progress, evaluate_test=evaluate_test)
            rows.append(row)
            if on_variant is not None:
                on_variant(v, row)
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    out = store.root / "reports"
    csv = out / f"ablation-{stamp}.csv"
    write_text_atomic(df.to_csv(index=False), csv)
    header = (
        f"# Objective ablation {stamp}\n\nStore `{store.root}`; base config: "
        f"`{json.dumps({k: v for k, v in base_config.to_dict().items() if k not in ('mgm_weight', 'ggim_weight')})}`\n\n"
        "Validation columns: last epoch; test columns: best checkpoint, hit101 protocol (1 true + up to 100 "
        "candidates, mean over candidate draws).\n\n"
    )
    body = "## Per run\n\n" + _markdown(df)
    if len(seeds) > 1:
        body = f"## Mean and sd over seeds {seeds}\n\n" + _markdown(summarize(df)) + "\n" + body
    write_text_atomic(header + body, out / f"ablation-{stamp}.md")
    df.attrs["csv"] = str(csv)
    return df
