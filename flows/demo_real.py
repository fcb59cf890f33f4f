"""``cmcl demo --real``: profile-mode pre-training on the real profiles cmcl ships.

Imports the IDR0133 cell-injury well profiles (Dahlin et al. 2023, CC BY 4.0) and the LINCS
plate SQ00015054 (with the Drug Repurposing Hub rows it needs) from
``cmcl_model/datasets/profiles/``, standardizes their compounds, trains in profile mode twice
(negatives drawn from any source, then within one source) and evaluates both on the held-out
scaffolds beside baselines and chance.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.compounds import compounds_flow
from flows.model import evaluate_flow, train_flow
from flows.profiles import import_profiles_flow

__all__ = ["shipped_profiles", "real_demo_flow", "REAL_DEMO_PRESETS"]

#: Training settings of the real-data demo (TrainConfig overrides on the ``quick`` preset).
REAL_DEMO_PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(image_source="profiles", epochs=40, batch_size=32, crops_per_sample=4, lr=1e-3,
                    gin_layers=3, gin_hidden=128, gin_dropout=0.1, mlp_widths=[256, 128], mlp_dropout=0.2,
                    proj_dim=64, jitter=0.1, patience=10, max_minutes=3.5, split_fractions=[0.7, 0.1, 0.2]),
    "quick": dict(image_source="profiles", epochs=2, batch_size=32, crops_per_sample=2, gin_layers=2, gin_hidden=32,
                  mlp_widths=[64, 32], proj_dim=32, split_fractions=[0.7, 0.1, 0.2]),
}


def shipped_profiles() -> dict[str, Path]:
    """Paths of the shipped real profile files (see ``cmcl_model/datasets/README.md``)."""
    root = Path(str(files("cmcl_model.datasets").joinpath("profiles")))
    return {"idr0133": root / "idr0133_cell_injury.parquet",
            "lincs": root / "SQ00015054_normalized_feature_select.csv.gz",
            "hub_samples": root / "repurposing_samples_SQ00015054.txt",
            "hub_drugs": root / "repurposing_drugs_SQ00015054.tsv"}


@flow(name="cmcl-demo-real", flow_run_name="demo-real", log_prints=True)
def real_demo_flow(store: str, *, quick: bool = False, seeds: list[int] | None = None) -> dict[str, Any]:
    """Import the shipped real profiles, standardize their compounds, train in profile mode with
    both negative settings, evaluate; returns {'imported', 'compounds', 'runs': {negatives: {run,
    metrics, report}}}."""
    logger = get_run_logger()
    paths = shipped_profiles()
    out: dict[str, Any] = {"imported": {
        "idr0133": import_profiles_flow([str(paths["idr0133"])], store),
        "lincs": import_profiles_flow([str(paths["lincs"])], store, samples=str(paths["hub_samples"]),
                                      drugs=str(paths["hub_drugs"]))}}
    out["compounds"] = compounds_flow(store)  # the imported profiles' structures
    overrides = REAL_DEMO_PRESETS["quick" if quick else "default"]
    out["runs"] = {}
    for negatives in ("any", "within_source"):
        run = train_flow(store, preset="quick", overrides={**overrides, "negatives": negatives})
        metrics = evaluate_flow(store, run, seeds=seeds)
        out["runs"][negatives] = {"run": run, "metrics": metrics,
                                  "report": str(Path(store) / "reports" / run / "report.html")}
        logger.info("negatives=%s: run %s", negatives, run)
    return out
