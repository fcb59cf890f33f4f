"""Verbs on the model: train, evaluate, finetune, query, embed, export."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from flows.cli.app import StoreOpt, call, check_compound_files, console, fail, need_compounds, parse_overrides, store_root
from flows.cli.printing import print_metrics

__all__ = ["train", "evaluate", "finetune", "query", "embed", "export"]


# ------------------------------------------------------------------------------------------ train
def train(store: Optional[Path] = StoreOpt,
          preset: str = typer.Option("default", help="quick | demo | default (paper-like sizes)."),
          set_: list[str] = typer.Option([], "--set", help="Override a TrainConfig field, e.g. --set epochs=10."),
          device: str = typer.Option("auto", help="auto | cpu | cuda"),
          run_id: Optional[str] = typer.Option(None, help="Run id (default: new, time-sortable)."),
          resume: bool = typer.Option(False, "--resume", help="Continue --run-id from its last checkpoint."),
          force: bool = typer.Option(False, "--force", help="Train even if a run on the same data exists."),
          ablation: bool = typer.Option(False, "--ablation", help="Train GIC, GIC+MGM, GIC+GGIM and all; print the table."),
          ablation_seeds: Optional[str] = typer.Option(None, help="--ablation: comma-separated seeds, e.g. 0,1,2 (mean and sd per variant)."),
          nproc: int = typer.Option(1, help="Data-parallel processes on this machine (torchrun; one per GPU, or gloo on CPU). The global batch stays --set batch_size.")) -> None:
    """Train the graph <-> image contrastive model on the store."""
    overrides = {**parse_overrides(set_), "device": device}
    if nproc < 1 or (nproc > 1 and ablation):
        fail(ValueError(f"--nproc must be >= 1 and is for one run, not --ablation (got --nproc {nproc})"))
    need_compounds(store_root(store))
    from flows.model import ablation_flow, train_flow

    if ablation:
        try:
            seeds = [int(x) for x in ablation_seeds.split(",")] if ablation_seeds else None
        except ValueError:
            fail(ValueError(f"--ablation-seeds must be comma-separated integers, got {ablation_seeds!r}"))
        rows = call(ablation_flow, str(store_root(store)), preset=preset, overrides=overrides, seeds=seeds)
        _print_ablation(rows)
        return
    run = call(train_flow, str(store_root(store)), preset=preset, overrides=overrides, run_id=run_id, resume=resume,
               force=force, nproc=nproc)
    console.print(f"run [bold]{run}[/]: {store_root(store) / 'runs' / run}")


def _print_ablation(rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    from cmcl_model.train.ablation import summarize

    if not rows:
        return
    df = pd.DataFrame(rows)
    many = df["seed"].nunique() > 1
    table = summarize(df) if many else df
    title = f"ablation (test split, MIGA protocol{f', mean ± sd over {df.seed.nunique()} seeds' if many else ''})"
    t = Table(title=title)
    cols = ["variant", "final_val_loss", "val_mrr", "test_g2i_hit@10", "test_i2g_hit@10", "test_mrr",
            "test_chance_hit@10", "train_seconds"]
    for c in cols:
        t.add_column(c, justify="left" if c == "variant" else "right")
    for _, r in table.iterrows():
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float):
                sd = r.get(f"{c}_sd") if many else None
                cells.append(f"{v:.3f}" + (f" ± {sd:.3f}" if isinstance(sd, float) and sd == sd else ""))
            else:
                cells.append(str(v if v is not None else ""))
        t.add_row(*cells)
    console.print(t)
    console.print(f"table: {rows[0]['_csv']}")


# --------------------------------------------------------------------------------------- evaluate
def evaluate(store: Optional[Path] = StoreOpt,
             run: Optional[str] = typer.Option(None, help="Run id (default: the latest)."),
             force: bool = typer.Option(False, "--force", help="Re-evaluate even if metrics exist."),
             ground_truth: list[Path] = typer.Option([], "--ground-truth", help="A generated plate folder whose ground truth colours the report (repeatable).")) -> None:
    """Evaluate a run: retrieval both ways (MIGA 1+100 and whole pool), baselines, report."""
    from flows.model import evaluate_flow
    from pipeline.store.paths import Store

    st = Store(store_root(store))
    run = run or (st.runs()[-1] if st.runs() else None)
    if run is None:
        fail(FileNotFoundError(f"no training run in {st.root / 'runs'}; run `cmcl train` first"))
    metrics = call(evaluate_flow, str(st.root), run, force=force,
                   ground_truth=[str(p) for p in ground_truth] or None)
    print_metrics(metrics)
    console.print(f"report: {st.report_dir(run) / 'report.html'}\nmetrics: {st.report_dir(run) / 'metrics.json'}")


# --------------------------------------------------------------------------------------- finetune
def finetune(dataset: Optional[str] = typer.Option(None, help="Shipped set: bbbp | clintox | bace | sider | tox21 | esol | freesolv | lipophilicity."),
             csv: Optional[Path] = typer.Option(None, help="Your own labelled CSV (instead of --dataset)."),
             smiles_col: str = typer.Option("smiles", help="SMILES column of --csv."),
             task: list[str] = typer.Option([], help="Label column(s) of --csv (repeat, or comma-separated; default: all other columns)."),
             kind: Optional[str] = typer.Option(None, help="classification | regression (default: inferred from the labels)."),
             init: str = typer.Option("random", help="random, a run id of --store (its pre-trained graph encoder), or a `cmcl export` file (.pt)."),
             store: Optional[Path] = StoreOpt,
             seeds: int = typer.Option(3, help="Seeds (mean ± sd over them)."),
             out: Optional[Path] = typer.Option(None, help="Results JSON (default: reports/<run>/finetune/<dataset>.json for a run, else ./finetune_<dataset>.json)."),
             linear_probe: bool = typer.Option(False, "--linear-probe", help="Linear models on frozen embeddings instead of fine-tuning."),
             baselines: bool = typer.Option(False, "--baselines", help="Also random-init GIN, Morgan + LR / RF and (with a run) the attribute-masking SSL GIN."),
             epochs: int = typer.Option(100, help="Epochs (Hu et al.: 100)."),
             batch_size: int = typer.Option(32, help="Batch size (Hu et al.: 32)."),
             lr: float = typer.Option(1e-3, help="Adam learning rate (Hu et al.: 1e-3)."),
             patience: Optional[int] = typer.Option(None, help="Stop after this many epochs without validation gain; report the best-validation epoch."),
             split: str = typer.Option("scaffold", help="scaffold (Hu et al., deterministic) | scaffold_balanced | random."),
             split_seed: int = typer.Option(0, help="Seed of the random and scaffold_balanced splits."),
             protocol: str = typer.Option("cmcl", help="cmcl: SMILES standardized to parents (salts stripped, charges neutralised), OGB atom/bond features, cmcl's GIN layer; any --init. "
                                                       "hu2020: Hu et al. 2020's reproduction, random init only: SMILES as given (counter-ions, charges kept), their featurizer (atom type + chirality, bond type + direction: no charges, no H counts) and self-loop GIN layer. "
                                                       "On ClinTox they differ most: 65 % of its non-toxic SMILES are written with charged atoms against 2.7 % of the toxic ones, which OGB features on the given SMILES can read (docs/transfer.md)."),
             precision: str = typer.Option("fp32", help="fp32 | bf16 (bfloat16 autocast)."),
             select: Optional[str] = typer.Option(None, help="Which epoch's test score is the result: best_val (the first epoch of highest validation score; what Hu et al.'s parse_result.py reports, the default under --protocol hu2020) | last (the default under cmcl without --patience). Both are recorded."),
             layers: int = typer.Option(5, help="GIN layers of a random init."),
             hidden: int = typer.Option(300, help="GIN width of a random init."),
             device: str = typer.Option("auto", help="auto (CUDA when available) | cpu | cuda.")) -> None:
    """Fine-tune the molecule encoder on a labelled set (scaffold split): ROC-AUC or RMSE per task, mean ± sd."""
    from cmcl_model.finetune.labelled import check_labelled_csv
    from cmcl_model.reports.finetune import check_protocol_init
    from flows.model import finetune_flow

    tasks = [t.strip() for item in task for t in item.split(",") if t.strip()] or None
    if (dataset is None) == (csv is None):
        fail(typer.BadParameter("give exactly one of --dataset NAME or --csv FILE"))
    if protocol not in ("cmcl", "hu2020") or precision not in ("fp32", "bf16"):
        fail(typer.BadParameter(f"--protocol must be cmcl or hu2020 and --precision fp32 or bf16, got {protocol!r}, {precision!r}"))
    if select is not None and select not in ("last", "best_val"):
        fail(typer.BadParameter(f"--select must be last or best_val, got {select!r}"))
    if select == "last" and patience is not None:
        fail(typer.BadParameter("--patience stops training early and reports the best-validation epoch; drop --select last"))
    select = select or ("best_val" if protocol == "hu2020" or patience is not None else "last")
    call(check_protocol_init, protocol, init)  # one line, before Prefect starts
    if csv is not None:  # bad input fails here, as one line, before Prefect starts
        call(check_labelled_csv, csv, smiles_col=smiles_col, tasks=tasks, kind=kind)
    options = dict(dataset=dataset, csv=str(csv) if csv else None, smiles_col=smiles_col, tasks=tasks, kind=kind, init=init,
                   store=str(store_root(store)) if init != "random" or baselines else None, seeds=seeds,
                   out=str(out) if out else None, linear_probe=linear_probe, baselines=baselines, split_mode=split,
                   split_seed=split_seed, device=device, protocol=protocol)
    config = dict(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, layers=layers, hidden=hidden,
                  precision=precision, select=select)
    doc = call(finetune_flow, options, config)
    _print_finetune(doc)


def _print_finetune(doc: dict[str, Any]) -> None:
    pct = doc["metric"] == "roc_auc"
    scale, unit = (100.0, "ROC-AUC %") if pct else (1.0, "RMSE")
    sp = doc["split"]
    epoch = "best-validation" if doc["config"].get("patience") or doc["config"].get("select") == "best_val" else "last"
    t = Table(title=f"{doc['dataset']}: test {unit} at the {epoch} epoch, {sp['mode']} split {sp['sizes']['train']}/{sp['sizes']['val']}/"
                    f"{sp['sizes']['test']}, mean ± sd over {len(doc['seeds'])} seed(s)")
    # a GIN's test at the other epoch too (both are recorded): the last one beside Hu et al.'s selection, and back
    other, other_col = ("test_last", "last epoch") if epoch == "best-validation" else ("test_best_val", "best-val epoch")
    for c in ("method", "mean ± sd", other_col, *doc["tasks"][:6], "wall s"):
        t.add_column(c, justify="left" if c == "method" else "right", no_wrap=True)
    f = lambda m: "-" if m is None or m.get("mean") is None else f"{m['mean'] * scale:.1f} ± {(m.get('sd') or 0) * scale:.1f}"
    for name, m in doc["methods"].items():
        t.add_row(name, f(m["test"]), f(m.get(other)), *[f(m["per_task_test"][k]) for k in doc["tasks"][:6]],
                  f"{m['wall_s']:.0f}")
    console.print(t)
    console.print(f"{doc['n_molecules']} of {doc['n_input']} molecules kept ({len(doc['invalid'])} invalid SMILES, "
                  f"{doc['standardization']['n_changed']} changed by standardization); protocol "
                  f"{doc.get('protocol', 'cmcl')}, {doc.get('featurizer', 'ogb')} features; device {doc['device']}")
    for r in doc["invalid"][:5]:
        console.print(f"  row {r['row']}: {r['smiles']!r}: {r['reason']}")
    console.print(f"results: {doc['_path']}\nsplit: {Path(doc['_path']).with_name(doc['split']['file'])}")


# ------------------------------------------------------------------------------------------ query
def query(store: Optional[Path] = StoreOpt,
          smiles: Optional[str] = typer.Option(None, help="A molecule (any SMILES; standardized first)."),
          well: Optional[str] = typer.Option(None, help="A well as PLATE:WELL, e.g. DEMO-1:B07."),
          top: int = typer.Option(10, help="How many results."),
          run: Optional[str] = typer.Option(None, help="Run id (default: the latest)."),
          out: Optional[Path] = typer.Option(None, help="Folder for the HTML/PNG results.")) -> None:
    """Zero-shot retrieval: wells nearest a molecule (--smiles), or molecules nearest a well (--well)."""
    from pipeline.store.paths import Store

    if (smiles is None) == (well is None):
        fail(ValueError("give exactly one of --smiles or --well"))
    st = Store(store_root(store))
    run = run or (st.runs()[-1] if st.runs() else None)
    if run is None:
        fail(FileNotFoundError(f"no training run in {st.root / 'runs'}; run `cmcl train` first"))
    from cmcl_model.evaluation.query import query_smiles, query_well

    if smiles is not None:
        df = call(query_smiles, st.root, st.run_dir(run), smiles, top=top, out_dir=out)
        what = "compounds whose profiles are nearest" if "profiles" in df.attrs else "wells nearest"
        console.print(f"{what} [bold]{df.attrs.get('query_smiles', smiles)}[/] (run {run}):")
    else:
        if ":" not in well:
            fail(ValueError(f"--well {well!r} is not PLATE:WELL (e.g. DEMO-1:B07)"))
        plate, w = well.split(":", 1)
        df = call(query_well, st.root, st.run_dir(run), plate, w, top=top, out_dir=out)
        console.print(f"compounds nearest well [bold]{plate}:{w}[/] (run {run}):")
    console.print(df.to_string(index=False))
    console.print(f"pictures: {df.attrs.get('out_dir')}")


# ------------------------------------------------------------------------------- embed / export
def _run_dir(store: Optional[Path], run: Optional[str]) -> Path:
    """The directory of ``--run`` (default: the store's newest run); one-line failure if absent."""
    from pipeline.store.paths import Store

    st = Store(store_root(store))
    run = run or (st.runs()[-1] if st.runs() else None)
    if run is None:
        fail(FileNotFoundError(f"no training run in {st.root / 'runs'}; run `cmcl train` first"))
    if not st.has_run(run):
        fail(FileNotFoundError(f"run {run!r} not found in {st.root / 'runs'} (runs: {', '.join(st.runs()) or 'none'})"))
    return st.run_dir(run)


def embed(file: Path = typer.Argument(..., help="CSV/TSV/.smi/SDF/Parquet compound file."),
          out: Path = typer.Option(..., "--out", help="Embeddings Parquet to write (one row per input record)."),
          store: Optional[Path] = StoreOpt,
          run: Optional[str] = typer.Option(None, help="Run id of --store (default: the newest run)."),
          model: Optional[Path] = typer.Option(None, help="A `cmcl export` file instead of a run (no store needed)."),
          smiles_col: str = typer.Option("smiles", help="SMILES column of tables."),
          id_col: Optional[str] = typer.Option(None, help="Identifier column (default: the record number)."),
          device: str = typer.Option("cpu", help="cpu | cuda | auto")) -> None:
    """Molecule embeddings of a trained model for a compound file, standardized as `cmcl compounds` does."""
    from cmcl_model.deploy.embed import embed_file, write_embeddings
    from cmcl_model.deploy.export import load_encoder
    from cmcl_model.train.build import resolve_device

    if not file.is_file():
        fail(FileNotFoundError(f"compound file {file} does not exist"))
    check_compound_files([file], smiles_col, id_col)
    source = model if model is not None else _run_dir(store, run)
    net, _ = call(load_encoder, source)
    table = call(embed_file, net, file, smiles_col=smiles_col, id_col=id_col, device=call(resolve_device, device))
    path = call(write_embeddings, table, out)
    failed = table[table["Status"] != "ok"]
    console.print(f"{len(table) - len(failed)} of {len(table)} records embedded ({source}): {path}")
    for row in failed.head(10).itertuples(index=False):
        console.print(f"  failed {row.Metadata_CompoundID}: {row.Error}")
    if len(failed) > 10:
        console.print(f"  ... and {len(failed) - 10} more (Status == 'failed' in {path})")


def export(out: Path = typer.Argument(..., help="File to write, e.g. cmcl_encoder.pt."),
           store: Optional[Path] = StoreOpt,
           run: Optional[str] = typer.Option(None, help="Run id of --store (default: the newest run)."),
           which: str = typer.Option("best", help="best | last checkpoint.")) -> None:
    """One self-contained model file (weights, config, featurizer) that loads without the store."""
    from cmcl_model.deploy.export import export_run

    if which not in ("best", "last"):
        fail(ValueError(f"--which must be best or last, got {which!r}"))
    run_dir = _run_dir(store, run)
    path = call(export_run, run_dir, out, which=which)
    console.print(f"run [bold]{run_dir.name}[/] ({which}) exported: {path}")
    console.print("load it with: from cmcl_model.deploy.export import load_exported; model, config, meta = load_exported(PATH)")
