"""``cmcl``: the command line. Every verb calls a flow (or a pipeline reader) and prints."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import importlib

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from pipeline.chem.choices import ID_COLUMNS
from pipeline.plates.vendors import LAYOUTS
from pipeline.profiles.choices import DEFAULT_NEGCON
from pipeline.features.choices import FEATURE_SETS
from pipeline.images.choices import ILLUMINATION_METHODS, SEGMENTERS


#: click's exceptions, wherever typer takes click from (it may vendor its own copy)
_click = importlib.import_module(typer.BadParameter.__module__)


class _OneLineUsageErrors(TyperGroup):
    """A mistyped verb, flag or value is one line on stderr (exit 2), naming it and where help is."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from flows.signals import install

        restore = install()  # Ctrl-C / SIGTERM stop any verb within seconds, leaving no process behind
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                              **extra)
        except _click.NoArgsIsHelpError as exc:
            if not standalone_mode:
                raise
            exc.show()
            sys.exit(exc.exit_code)
        except _click.ClickException as exc:
            if not standalone_mode:
                raise
            where = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "cmcl"
            msg = " ".join(exc.format_message().split())
            typer.echo(f"error: {msg}{_store_hint(msg, args)} (see `{where} --help`)", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        finally:
            restore()
            _report_unused_server()
        if not standalone_mode:
            return rv
        code = rv if isinstance(rv, int) else 0
        if args is None and "prefect" in sys.modules and sys.getprofile() is None and sys.gettrace() is None:
            _exit_without_teardown(code)  # the `cmcl` process itself (tests pass args), not profiled or traced
        sys.exit(code)


def _exit_without_teardown(code: int) -> None:
    """End the process after its exit handlers (Prefect sends its last logs and events, logging
    flushes), skipping the interpreter's teardown of every imported module: 0.5-0.7 s after a
    Prefect flow on the project's 2-core machine, for nothing (the OS frees the memory)."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _store_hint(msg: str, args: Optional[list[str]]) -> str:
    """``'; did you mean --store DIR?'`` when an unexpected extra argument is an existing folder."""
    if "unexpected extra argument" not in msg:
        return ""
    for a in (sys.argv[1:] if args is None else args):
        if not str(a).startswith("-") and f"{a}" in msg and Path(a).is_dir():
            return f"; did you mean --store {a}?"
    return ""


app = typer.Typer(cls=_OneLineUsageErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="cmcl: Cell Painting plates + compound lists -> a molecule <-> cell-image contrastive model.")
console = Console()
err = Console(stderr=True)

StoreOpt = typer.Option(None, "--store", "-s", help="Store directory (default: $CMCL_STORE, else ./cmcl-store).")

# Ingestion options, shared by `ingest` and `run` (they build pipeline.ingest.settings.IngestSettings).
LayoutOpt = typer.Option("auto", help=" | ".join(("auto", *LAYOUTS)))
ChannelsOpt = typer.Option(None, help="Channel map 'DNA=1,ER=2,RNA=3,AGP=4,Mito=5' or a TOML/YAML file.")
CropOpt = typer.Option(64, help="Single-cell crop edge in pixels.")
IllumOpt = typer.Option("background", help=f"Illumination function: {' | '.join(ILLUMINATION_METHODS)} (default background; "
                        "mean is CellProfiler's).")
DarkOpt = typer.Option(None, help="Camera dark offset (ADU) subtracted before illumination correction "
                       "(default: estimated per channel from the plate's fields).")
SegmenterOpt = typer.Option("classical", help=" | ".join(SEGMENTERS))
CellposeOpt = typer.Option(None, help="Local cellpose weights for nuclei (never downloaded).")
CellposeCellOpt = typer.Option(None, help="Local cellpose weights for cells (default: cells grown classically).")
TileOpt = typer.Option(None, help="Also write field tiles of this size (e.g. 128).")
OutsideOpt = typer.Option(False, "--allow-outside", help="LoadData: accept image paths outside the plate folder.")
PlatemapOpt = typer.Option(None, "--platemap", help="A JUMP/LINCS plate map (well_position, broad_sample) or a TOML "
                           "config naming it, its compound metadata and barcode_platemap.csv (pipeline/plates/platemaps.py).")
FeaturesOpt = typer.Option("default", help=f"CellProfiler features per cell (cp_measure): {' | '.join((*FEATURE_SETS, 'none'))}.")
NegconOpt = typer.Option(None, "--negcon", help="Negative-control labels, matched without case against the plate map's "
                         f"control type and compound ID (default: {','.join(DEFAULT_NEGCON)}). A plate without any is "
                         "normalized against all its wells and flagged.")


def _settings(*, layout, channels, crop_size, illumination, dark, segmenter, cellpose_model, cellpose_cell_model,
              field_tile_size, allow_outside, platemap=None, features="default") -> dict[str, Any]:
    from pipeline.ingest.settings import IngestSettings

    settings = dict(layout=layout, channel_map=str(channels) if channels else None, crop_size=crop_size,
                    illumination_method=illumination, illumination_dark=dark, segmenter=segmenter,
                    cellpose_model=str(cellpose_model) if cellpose_model else None,
                    cellpose_cell_model=str(cellpose_cell_model) if cellpose_cell_model else None,
                    field_tile_size=field_tile_size, allow_outside=allow_outside,
                    platemap=str(platemap) if platemap else None, features=features)
    _run(IngestSettings, **settings)  # bad values fail here, as one line
    return settings


class _State:
    debug = False
    quiet = False
    api_checked = False
    early_server = None  # flows.background.EarlyStart, begun by main() for verbs that run flows


#: Verbs that run Prefect flows (and so want the background `cmcl server`, started by main() at once).
_FLOW_VERBS = frozenset({"ingest", "compounds", "profile", "train", "evaluate", "run", "demo", "finetune", "serve"})


@app.callback()
def main(ctx: typer.Context,
         quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars, Prefect warnings only."),
         debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors, and library warnings.")) -> None:
    """Set logging before Prefect is imported (verbs import flows lazily)."""
    _State.debug = debug
    _State.quiet = quiet
    _State.api_checked = False
    _library_warnings(show=debug)
    _State.early_server = None
    if quiet:
        os.environ["CMCL_PROGRESS"] = "0"
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    if ctx.invoked_subcommand in _FLOW_VERBS and "--help" not in sys.argv[1:]:
        from flows.background import EarlyStart, may_need_server

        if may_need_server():  # start (or find) the server while the verb imports Prefect and checks its inputs
            _State.early_server = EarlyStart()


def _library_warnings(*, show: bool) -> None:
    """Library warnings (pandas, torch, zarr, ...) reach the user only with --debug: otherwise they are
    ignored in this process, the workers it forks and, unless PYTHONWARNINGS says otherwise, the
    processes it starts."""
    import warnings

    if show:
        warnings.simplefilter("default")
        return
    warnings.simplefilter("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")


def _store(store: Optional[Path]) -> Path:
    from pipeline.store.paths import default_store_path

    return Path(store) if store is not None else default_store_path()


def _fail(exc: BaseException) -> None:
    """Report ``exc`` as one line (never wrapped, markup-free) and exit 1; with --debug, raise it."""
    if _State.debug:
        raise exc
    msg = " ".join(str(exc).split())
    err.print(Text.assemble(("error: ", "bold red"), f"{type(exc).__name__}: {msg}"), soft_wrap=True)
    raise typer.Exit(1)


def _interrupted() -> None:
    from flows.signals import INTERRUPTED_HINT, kill_descendants

    kill_descendants()
    err.print(Text.assemble(("error: ", "bold red"), INTERRUPTED_HINT), soft_wrap=True)
    raise typer.Exit(130)


class _OneLineLogs(logging.Filter):
    """Without --debug, log records carry no traceback: the first line of the message only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (not _State.debug and record.levelno >= logging.ERROR
                and record.name.startswith(("prefect.flow_runs", "prefect.task_runs"))):
            return False  # a failed or crashed run: the CLI prints its cause once, as one line
        if not _State.debug and (record.exc_info or "\n" in str(record.msg)):
            record.msg = record.getMessage().splitlines()[0]
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def _tame_logs() -> None:
    one_line = _OneLineLogs()
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                                      if n.startswith("prefect"))]
    for lg in loggers:
        for h in lg.handlers:
            if not any(isinstance(f, _OneLineLogs) for f in h.filters):
                h.addFilter(one_line)


def _use_running_server() -> None:
    """Before this process's first flow: use the recorded `cmcl server`, or start one in the background
    (Prefect's temporary API costs 8-13 s per verb), unless the user configured an API or set
    CMCL_REUSE_SERVER=0 (:func:`flows.background.connect`). A server that cannot start leaves Prefect's
    own choice, with one line saying why."""
    if _State.api_checked:
        return
    _State.api_checked = True
    from flows.background import ServerStartError, connect, idle_timeout

    try:
        url, started = connect(early=_State.early_server)
    except (ServerStartError, ValueError) as exc:
        if _State.debug:
            raise
        err.print(f"warning: {exc}; using Prefect's temporary server", soft_wrap=True, markup=False, highlight=False)
        return
    except Exception:  # noqa: BLE001 - never worse than before: Prefect's own choice of API
        if _State.debug:
            raise
        return
    early = _State.early_server
    if url is None and early is not None and early.spawned:  # the guess before Prefect's import was wrong
        err.print(f"Prefect API: the one you configured; a background `cmcl server` was started meanwhile and stops "
                  f"after {idle_timeout() / 60:g} min (`cmcl server stop` ends it now)",
                  soft_wrap=True, markup=False, highlight=False)
    elif url and started:
        err.print(f"Prefect API: started a background `cmcl server` at {url} for this and later cmcl commands "
                  f"(it stops after {idle_timeout() / 60:g} min without one; `cmcl server stop` ends it now)",
                  soft_wrap=True, markup=False, highlight=False)
    elif url and not _State.quiet:
        err.print(f"Prefect API: the running `cmcl server` at {url}", soft_wrap=True, markup=False, highlight=False)


def _report_unused_server() -> None:
    """A verb that ended before its flow (bad input, say) may have started the background server
    already (:func:`main`): it still says so, once."""
    early = _State.early_server
    if early is not None and early.spawned and not _State.api_checked:
        _State.api_checked = True
        from flows.background import idle_timeout

        err.print(f"Prefect API: started a background `cmcl server` for later cmcl commands (it stops after "
                  f"{idle_timeout() / 60:g} min without one; `cmcl server stop` ends it now)",
                  soft_wrap=True, markup=False, highlight=False)


def _is_flow(fn: Any) -> bool:
    flows_module = sys.modules.get("prefect.flows")
    return flows_module is not None and isinstance(fn, flows_module.Flow)


def _run(fn, *args, **kwargs) -> Any:
    _tame_logs()
    is_flow = _is_flow(fn)
    if is_flow:
        _use_running_server()
    try:
        if is_flow:
            from flows.api import no_flow_heartbeats

            with no_flow_heartbeats():  # each flow run would wait up to 1 s for its heartbeat thread
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _interrupted()
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: one-line cause unless --debug
        _fail(exc)
    except BaseException as exc:
        if type(exc).__name__ == "TerminationSignal":  # Prefect's SIGTERM inside a flow run
            _interrupted()
        raise


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as typed TrainConfig overrides; a bad key or value fails here, as one line."""
    from cmcl_model.train.config import TrainConfig

    return _run(TrainConfig.parse_overrides, items) if items else {}


def _need_dirs(paths: list[Path], what: str) -> None:
    """Fail (one line, before Prefect starts) unless every path is an existing folder."""
    from flows.inspect import looks_like_store

    for p in paths:
        if not Path(p).is_dir():
            _fail(FileNotFoundError(f"{what} {p} does not exist or is not a folder"))
        if looks_like_store(p):  # `cmcl run STORE`: the store where the inbox is meant
            _fail(ValueError(f"{p} is a cmcl store, not {'an' if what[0] in 'aeiou' else 'a'} {what}; give the {what} "
                             f"and the store as --store {p}"))


def _check_compound_files(files: list[Path], smiles_col: str, id_col: Optional[str]) -> None:
    from pipeline.chem.io import check_compound_file

    for f in files:
        console.print(_run(check_compound_file, f, smiles_col=smiles_col, id_col=id_col), soft_wrap=True,
                      markup=False, highlight=False)  # which column gave the IDs, or how records are named


def _check_plate_sources(plate_dirs: list[Path], root: Path, settings: dict[str, Any], *, replace: bool,
                         plate_id: Optional[str]) -> dict[str, Any]:
    """Before Prefect starts: the preflight of every folder (:func:`pipeline.ingest.plan.preflight`:
    writable store, layout and channel map, plate map; a malformed LoadData CSV or a folder
    mixing layouts fails here) and refuse one whose plate ID the store holds from another folder.
    Returns each folder's plan (by ``str`` of the folder), passed on so the preflight runs once."""
    from pipeline.ingest.plan import check_plate_source, preflight
    from pipeline.ingest.settings import IngestSettings
    from pipeline.store.paths import Store

    st = Store(root)
    cfg = IngestSettings(**settings)
    plans = {}
    for p in plate_dirs:
        plan = plans[str(p)] = _run(preflight, p, st, cfg, plate_id=plate_id)
        if not replace and st.table_path("ledger").is_file():
            _run(check_plate_source, plan, st)
    return plans


def _need_compounds(root: Path) -> None:
    """``cmcl train``/``--ablation``: fail with what to run when the store has no plates or compounds yet."""
    from pipeline.store.paths import Store

    st = Store(root)
    if not st.table_path("ledger").is_file() and not st.table_files("cells"):  # (a built store may have no ledger)
        _fail(FileNotFoundError(f"store {root} holds no ingested plate; run `cmcl ingest PLATE_DIR --store {root}` first"))
    if not st.table_path("graphs").is_file():
        _fail(FileNotFoundError(f"store {root} has no compounds yet ({st.table_path('graphs')} is missing); "
                                f"run `cmcl compounds --store {root}` first"))
    from pipeline.chem.parents import CompoundsOutOfDate, wells_without_compounds

    stale = wells_without_compounds(st.read("platemap"), st.read("well_compounds"))
    if len(stale):
        plates = ", ".join(sorted(set(stale["Metadata_Plate"])))
        _fail(CompoundsOutOfDate(f"{len(stale)} plate-map well(s) of plate(s) {plates} have no compound identity yet "
                                 f"(ingested after the compound table was built): run `cmcl compounds --store {root}` "
                                 f"first (`cmcl run` runs it for you)"))


# ------------------------------------------------------------------------------------------ synth
@app.command()
def synth(out_dir: Path = typer.Argument(..., help="Folder to write the plate folder into."),
          layout: str = typer.Option("imagexpress", help=" | ".join(LAYOUTS)),
          plate_id: str = typer.Option("P1", help="Plate identifier."),
          plate_format: int = typer.Option(96, "--format", help="96 or 384 wells."),
          wells: int = typer.Option(96, help="Number of wells to image (row-major from A01)."),
          sites: int = typer.Option(1, help="Fields per well."),
          size: int = typer.Option(256, help="Field edge in pixels (real instruments: 1080)."),
          seed: int = typer.Option(0, help="Random seed (same seed -> identical files)."),
          faults: bool = typer.Option(False, "--faults", help="Inject faulty files (truncated, zero-byte, ...).")) -> None:
    """Generate a synthetic Cell Painting plate whose phenotypes depend on compound structure."""
    from pipeline.synthetic import generate

    t0 = time.perf_counter()
    path = _run(generate, out_dir, layout=layout, plate_id=plate_id, plate_format=plate_format, n_wells=wells,
                sites=sites, size=size, seed=seed, faults=faults)
    n = wells * sites
    console.print(f"wrote plate [bold]{plate_id}[/] ({wells} wells x {sites} sites, {layout}) to {path} "
                  f"in {time.perf_counter() - t0:.1f} s ({n / (time.perf_counter() - t0):.1f} fields/s)")


# ----------------------------------------------------------------------------------------- ingest
@app.command()
def ingest(plate_dirs: list[Path] = typer.Argument(..., help="Plate folders."),
           store: Optional[Path] = StoreOpt, layout: str = LayoutOpt, channels: Optional[str] = ChannelsOpt,
           crop_size: int = CropOpt, illumination: str = IllumOpt, dark: Optional[float] = DarkOpt,
           segmenter: str = SegmenterOpt, cellpose_model: Optional[Path] = CellposeOpt,
           cellpose_cell_model: Optional[Path] = CellposeCellOpt, field_tile_size: Optional[int] = TileOpt,
           allow_outside: bool = OutsideOpt, platemap: Optional[Path] = PlatemapOpt,
           features: str = FeaturesOpt,
           workers: int = typer.Option(1, help="Ingest plates in parallel on a local Dask cluster of N workers."),
           force: bool = typer.Option(False, "--force", help="Re-ingest even unchanged plates."),
           replace: bool = typer.Option(False, "--replace", help="Let this folder replace a plate of the same ID ingested from another folder."),
           plate_id: Optional[str] = typer.Option(None, "--plate-id", help="Ingest the (one) folder under this plate ID instead of its own.")) -> None:
    """Ingest plate folders: validate, OME-Zarr, illumination correction, segmentation, crops, features."""
    _need_dirs(plate_dirs, "plate folder")
    if plate_id is not None and len(plate_dirs) > 1:
        _fail(ValueError(f"--plate-id names one plate; got {len(plate_dirs)} folders"))
    settings = _settings(layout=layout, channels=channels, crop_size=crop_size, illumination=illumination, dark=dark,
                         segmenter=segmenter, cellpose_model=cellpose_model, cellpose_cell_model=cellpose_cell_model,
                         field_tile_size=field_tile_size, allow_outside=allow_outside, platemap=platemap,
                         features=features)
    if workers == 1:  # the workers' fork server warms up while this process plans and imports Prefect
        from pipeline.ingest.run import start_workers
        from pipeline.ingest.settings import IngestSettings

        _run(start_workers, IngestSettings(**settings))
    plans = _check_plate_sources(plate_dirs, _store(store), settings, replace=replace, plate_id=plate_id)
    from flows.parallel import ingest_flow

    results = _run(ingest_flow, [str(p) for p in plate_dirs], str(_store(store)), settings=settings, force=force,
                   workers=workers, replace=replace, plate_id=plate_id, plans=plans)
    _print_plates(results)
    if any(r["n_quarantined"] for r in results):
        console.print("[yellow]some fields were quarantined:[/] see `cmcl inspect quarantine --store STORE`")
    empty = [r["nothing_stored"] for r in results if r.get("nothing_stored")]
    if empty:  # nothing stored is a failure: a script or an inbox must not read it as success
        for line in empty:
            err.print(Text.assemble(("error: ", "bold red"), line), soft_wrap=True)
        raise typer.Exit(1)


def _print_plates(results: list[dict]) -> None:
    t = Table(title="plates")
    for c in ("plate", "status", "layout", "fields", "cells", "quarantined", "seconds"):
        t.add_column(c)
    for r in results:
        t.add_row(r["plate"], r["status"], r["layout"], str(r["n_fields"]), str(r["n_cells"]), str(r["n_quarantined"]),
                  f"{sum(r['seconds'].values()):.1f}" if r["seconds"] else "-")
    console.print(t)
    for r in results:
        if r.get("channel_map"):
            ignored = f" ({r['n_ignored']} file(s) ignored)" if r.get("n_ignored") else ""
            console.print(f"{r['plate']} channels: {r['channel_map']}{ignored}", soft_wrap=True, markup=False)
        for note in r.get("notes") or []:  # where the map came from, paths re-rooted, a map the pixels doubt
            console.print(f"{r['plate']}: {note}", soft_wrap=True, markup=False)
    for r in results:  # one line per plate: what was kept, what was refused and why
        if r.get("summary"):
            console.print(r["summary"], soft_wrap=True)


# -------------------------------------------------------------------------------------- compounds
@app.command()
def compounds(files: list[Path] = typer.Argument(None, help="CSV/TSV/.smi/SDF/Parquet compound files (plate maps in the store are always included)."),
              store: Optional[Path] = StoreOpt,
              smiles_col: str = typer.Option("smiles", help="SMILES column of CSV/TSV/Parquet inputs."),
              id_col: Optional[str] = typer.Option(None, help=f"Identifier column (default: the first of {', '.join(ID_COLUMNS)} "
                                                   "present, compared without case or punctuation: pipeline.chem.choices.ID_COLUMNS)."),
              tautomers: bool = typer.Option(False, "--tautomers", help="Canonicalize tautomers."),
              fresh: bool = typer.Option(False, "--fresh", help="Forget compound files read by earlier runs (they accumulate otherwise)."),
              jobs: int = typer.Option(2, help="Worker processes.")) -> None:
    """Standardize compounds (parents, salts, charges), merge duplicates, build OGB graphs."""
    _check_compound_files(files or [], smiles_col, id_col)
    from flows.compounds import compounds_flow

    s = _run(compounds_flow, str(_store(store)), files=[str(f) for f in files or []], smiles_col=smiles_col, id_col=id_col,
             n_jobs=jobs, canonicalize_tautomer=tautomers, fresh=fresh)
    if s.get("nothing_to_do"):
        console.print(f"compounds: nothing to do: {s['nothing_to_do']}")
        return
    console.print(f"compounds: {s['read']} read, {s['standardized']} standardized, {s['merged']} merged into "
                  f"existing parents, {s['failed']} failed -> {s['unique_parents']} parents"
                  + (" (unchanged: nothing to do)" if s["skipped"] else ""))
    for name, path in s["tables"].items():
        console.print(f"  {name}: {path}")


# ------------------------------------------------------------------------------------------ train
@app.command()
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
    overrides = {**_parse_overrides(set_), "device": device}
    if nproc < 1 or (nproc > 1 and ablation):
        _fail(ValueError(f"--nproc must be >= 1 and is for one run, not --ablation (got --nproc {nproc})"))
    _need_compounds(_store(store))
    from flows.model import ablation_flow, train_flow

    if ablation:
        try:
            seeds = [int(x) for x in ablation_seeds.split(",")] if ablation_seeds else None
        except ValueError:
            _fail(ValueError(f"--ablation-seeds must be comma-separated integers, got {ablation_seeds!r}"))
        rows = _run(ablation_flow, str(_store(store)), preset=preset, overrides=overrides, seeds=seeds)
        _print_ablation(rows)
        return
    run = _run(train_flow, str(_store(store)), preset=preset, overrides=overrides, run_id=run_id, resume=resume,
               force=force, nproc=nproc)
    console.print(f"run [bold]{run}[/]: {_store(store) / 'runs' / run}")


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
@app.command()
def evaluate(store: Optional[Path] = StoreOpt,
             run: Optional[str] = typer.Option(None, help="Run id (default: the latest)."),
             force: bool = typer.Option(False, "--force", help="Re-evaluate even if metrics exist."),
             ground_truth: list[Path] = typer.Option([], "--ground-truth", help="A generated plate folder whose ground truth colours the report (repeatable).")) -> None:
    """Evaluate a run: retrieval both ways (MIGA 1+100 and whole pool), baselines, report."""
    from flows.model import evaluate_flow
    from pipeline.store.paths import Store

    st = Store(_store(store))
    run = run or (st.runs()[-1] if st.runs() else None)
    if run is None:
        _fail(FileNotFoundError(f"no training run in {st.root / 'runs'}; run `cmcl train` first"))
    metrics = _run(evaluate_flow, str(st.root), run, force=force,
                   ground_truth=[str(p) for p in ground_truth] or None)
    _print_metrics(metrics)
    console.print(f"report: {st.report_dir(run) / 'report.html'}\nmetrics: {st.report_dir(run) / 'metrics.json'}")


def _pct(x: Any) -> str:
    return f"{100 * x:.1f} %" if isinstance(x, (int, float)) else "-"


def _print_metrics(m: dict[str, Any]) -> None:
    ncand = m.get("n_candidates", {})
    n101 = ncand.get("hit101", 101) if isinstance(ncand, dict) else 101
    rows = [("cmcl", m["model"]), *[(k.replace("_", " "), v) for k, v in m.get("baselines", {}).items()],
            ("chance", m["chance"])]
    for d, arrow in (("graph_to_image", "molecule → images"), ("image_to_graph", "images → molecule")):
        t = Table(title=f"held-out retrieval, {arrow}: 1 positive among {n101} candidates (MIGA) | whole pool")
        t.add_column("model", no_wrap=True)
        for k in ("Hit@1", "Hit@5", "Hit@10", "MRR", "mean rank", "pool R@10"):
            t.add_column(k, justify="right", no_wrap=True)
        for name, r in rows:
            hr = r.get("hit101", {}).get(d, {})
            fp = r.get("fullpool", {}).get(d, {})
            t.add_row(name, _pct(hr.get("hit@1")), _pct(hr.get("hit@5")), _pct(hr.get("hit@10")),
                      f"{hr.get('mrr', float('nan')):.3f}", f"{hr.get('mean_rank', float('nan')):.1f}",
                      _pct(fp.get("recall@10")), style="dim" if name == "chance" else None)
        console.print(t)
    split = m.get("split", {})
    if split:
        console.print("compounds by scaffold split: " + ", ".join(f"{k} {v}" for k, v in split.items()))
    unscored = sorted({p for a in (m.get("activity") or {}).values() for p in a.get("plates_not_scored", [])})
    if unscored:
        console.print(f"[yellow]phenotypic activity: plate(s) {', '.join(unscored)} not scored[/] (no negative-control "
                      f"well; see `cmcl profile --negcon`)", soft_wrap=True)


# --------------------------------------------------------------------------------------- profiles
@app.command()
def profile(store: Optional[Path] = StoreOpt,
            null_size: int = typer.Option(10000, help="Random rankings per mAP p-value (copairs null distribution)."),
            negcon: Optional[str] = NegconOpt) -> None:
    """Well profiles (pycytominer: median, plate map, mad_robustize vs DMSO, feature selection), consensus
    profiles and per-compound phenotypic activity (copairs mAP); only plates whose inputs changed are redone."""
    from flows.profiles import profile_flow

    labels = _negcon_labels(negcon)
    out = _run(profile_flow, str(_store(store)), null_size, labels)
    console.print(f"profiles: {len(out['plates_profiled'])} plate(s) profiled, {len(out['plates_unchanged'])} unchanged")
    if isinstance(out["sources"], dict):
        for source, s in out["sources"].items():
            console.print(f"  {source}: {s['wells']} wells x {s['features']} features; {s['retrieved']} of "
                          f"{s['compounds']} compounds retrieved (phenotypically active) at corrected p < 0.05"
                          + (f"; {s['moas_consistent']} of {s['moas']} mechanisms consistent" if s.get("moas") else ""))
            if s.get("selection_skipped"):
                console.print(f"  {source}: {s['selection_skipped']}")
    _print_negcon(out)
    st = _store(store)
    console.print(f"activity: {st / 'tables' / 'profiles' / 'activity.parquet'}")


def _negcon_labels(negcon: Optional[str]) -> Optional[list[str]]:
    """``--negcon A,B`` as a list of labels (None: the defaults); a list naming nothing fails here, as one line."""
    from pipeline.profiles.controls import parse_negcon

    return None if negcon is None else list(_run(parse_negcon, negcon))


def _print_negcon(profiles: dict[str, Any]) -> None:
    """One line per plate without a negative-control well (normalized against all its wells, activity not scored)."""
    for plate in profiles.get("plates_without_negcon", []):
        console.print(f"[yellow]plate {plate!r} has no negative-control well[/] ({', '.join(profiles['negcon'])}; "
                      f"see --negcon): normalized against all its wells; its activity is not scored", soft_wrap=True)


@app.command("import-profiles")
def import_profiles(files: list[Path] = typer.Argument(..., help="Profile tables (.csv[.gz], .tsv, .parquet): pycytominer, JUMP, IDR0133-style."),
                    store: Optional[Path] = StoreOpt,
                    compound_map: Optional[Path] = typer.Option(None, "--compound-map", help="Identifier -> SMILES table joined on a column both share (JUMP: Metadata_JCP2022)."),
                    columns: Optional[Path] = typer.Option(None, "--columns", help="TOML: \"file column\" = \"role\" (plate, well, smiles, inchi, inchikey, compound, name, dose, control, moa, batch)."),
                    feature_names: Optional[Path] = typer.Option(None, "--feature-names", help="Names of numbered features (X_1...): column,name pairs or one name per line."),
                    samples: Optional[Path] = typer.Option(None, help="Drug Repurposing Hub sample file (broad_id, smiles, InChIKey): a compound map joined by pert_id."),
                    drugs: Optional[Path] = typer.Option(None, help="Drug Repurposing Hub drug file (pert_id, moa).")) -> None:
    """Import profile tables from elsewhere into the store (compounds joined to parent InChIKeys); `cmcl profile` scores them."""
    for f in [*files, compound_map, columns, feature_names, samples, drugs]:
        if f is not None and not f.is_file():
            _fail(FileNotFoundError(f"{f} does not exist"))
    if samples and compound_map:
        _fail(ValueError("--samples is the Drug Repurposing Hub form of --compound-map: give one of them"))
    if columns:  # a bad column map fails here, before Prefect starts
        from pipeline.profiles.io import read_column_map

        try:
            read_column_map(columns)
        except ValueError as exc:
            _fail(exc)
    from flows.profiles import import_profiles_flow

    out = _run(import_profiles_flow, [str(f) for f in files], str(_store(store)), str(samples) if samples else None,
               str(drugs) if drugs else None, compound_map=str(compound_map) if compound_map else None,
               columns=str(columns) if columns else None, feature_names=str(feature_names) if feature_names else None)
    for r in out["files"]:
        if r["status"] == "unchanged":
            console.print(f"{r['file']}: already imported (same bytes and settings), nothing to do")
            continue
        console.print(f"imported {r['rows']} wells x {r['features']} features of {len(r['plates'])} plate(s) as {r['source']}; "
                      f"{r['joined']} of {r['compounds']} compounds joined to a parent InChIKey")
        for u in r["unjoined"][:20]:
            console.print(f"  not joined: {u['Metadata_CompoundID']} ({u['rows']} rows): {u['reason']}", soft_wrap=True, markup=False)
        if len(r["unjoined"]) > 20:
            console.print(f"  ... {len(r['unjoined']) - 20} more in {_store(store) / 'tables' / 'profiles' / 'imports.json'}")


# -------------------------------------------------------------------------------------------- run
@app.command()
def run(inbox: Path = typer.Argument(..., help="Folder of plate folders."),
        store: Optional[Path] = StoreOpt,
        preset: str = typer.Option("default", help="Training preset: quick | demo | default."),
        set_: list[str] = typer.Option([], "--set", help="Override a TrainConfig field, e.g. --set epochs=10."),
        compound_file: list[Path] = typer.Option([], "--compounds", help="Extra compound files."),
        no_train: bool = typer.Option(False, "--no-train", help="Stop after ingestion and compounds."),
        workers: int = typer.Option(1, help="Ingest plates in parallel on a local Dask cluster of N workers."),
        dask_address: Optional[str] = typer.Option(None, help="Ingest on a running Dask scheduler (tcp://host:port)."),
        layout: str = LayoutOpt, channels: Optional[str] = ChannelsOpt, crop_size: int = CropOpt,
        illumination: str = IllumOpt, dark: Optional[float] = DarkOpt, segmenter: str = SegmenterOpt,
        cellpose_model: Optional[Path] = CellposeOpt, cellpose_cell_model: Optional[Path] = CellposeCellOpt,
        field_tile_size: Optional[int] = TileOpt, allow_outside: bool = OutsideOpt,
        platemap: Optional[Path] = PlatemapOpt, features: str = FeaturesOpt,
        negcon: Optional[str] = NegconOpt) -> None:
    """Everything: ingest new/changed plates, compounds, profiles, train, evaluate."""
    _need_dirs([inbox], "inbox")
    settings = _settings(layout=layout, channels=channels, crop_size=crop_size, illumination=illumination, dark=dark,
                         segmenter=segmenter, cellpose_model=cellpose_model, cellpose_cell_model=cellpose_cell_model,
                         field_tile_size=field_tile_size, allow_outside=allow_outside, platemap=platemap,
                         features=features)
    overrides = _parse_overrides(set_) or None
    labels = _negcon_labels(negcon)
    _check_compound_files(compound_file, "smiles", None)
    from flows.pipeline import run_flow

    t0 = time.perf_counter()
    out = _run(run_flow, str(inbox), str(_store(store)), ingest_settings=settings,
               compound_files=[str(f) for f in compound_file], preset=preset, train_overrides=overrides,
               train=not no_train, workers=workers, dask_address=dask_address, negcon=labels)
    _report_run(out, time.perf_counter() - t0)


def _report_run(out: dict[str, Any], seconds: float) -> None:
    _print_plates(out["plates"])
    c = out["compounds"]
    console.print(f"compounds: {c['read']} records -> {c['unique_parents']} parents, {c['failed']} failed")
    _print_negcon(out.get("profiles", {}))
    if "metrics" in out:
        _print_metrics(out["metrics"])
        console.print(f"run: {out['run']}\nreport: {out['report']}\nmetrics: {Path(out['report']).with_name('metrics.json')}")
    console.print(f"finished in {seconds:.0f} s")


# ------------------------------------------------------------------------------------------- demo
DEMO_SIZES = {
    # plates, format, compounds, sites, field px, nucleus radius, crop px, training preset + overrides.
    # The default demo holds out 20 % of ~700 compounds by scaffold so that the MIGA protocol
    # (1 positive among 101 candidates) has more than 101 test compounds.
    "quick": dict(n_plates=1, plate_format=96, n_compounds=None, sites=1, size=256, nucleus_radius=8.0, crop=32,
                  preset="quick", overrides={}),
    "default": dict(n_plates=2, plate_format=384, n_compounds=690, sites=1, size=256, nucleus_radius=8.0, crop=32,
                    preset="demo", overrides={"split_fractions": [0.7, 0.1, 0.2]}),
}
#: The generator's camera adds a 100 ADU dark offset; knowing it, the background illumination
#: method recovers the true flat field to 1-3 % (tests/pipeline/test_illumination.py).
DEMO_INGEST = dict(illumination_method="background", illumination_dark=100.0, features="default")


@app.command()
def demo(store: Optional[Path] = StoreOpt,
         quick: bool = typer.Option(False, "--quick", help="One small plate and a tiny model (< 3 minutes)."),
         seed: int = typer.Option(0, help="Seed of the generated plates."),
         real: bool = typer.Option(False, "--real", help="Real profiles instead: the shipped IDR0133 and LINCS "
                                   "profiles, profile-mode training (both negative settings), held-out retrieval.")) -> None:
    """Generate synthetic plates into the store's inbox, then run everything on them (or, with --real,
    pre-train on the real CellProfiler profiles cmcl ships)."""
    if real:
        _demo_real(store, quick=quick)
        return
    from flows.pipeline import run_flow
    from pipeline.store.paths import Store
    from pipeline.synthetic import generate_demo

    cfg = DEMO_SIZES["quick" if quick else "default"]
    st = Store(_store(store))
    t0 = time.perf_counter()
    existing = sorted(p.name for p in st.inbox.glob("DEMO-*")) if st.inbox.is_dir() else []
    if len(existing) < cfg["n_plates"]:
        with console.status("generating synthetic plates"):
            _run(generate_demo, st.inbox, n_plates=cfg["n_plates"], plate_format=cfg["plate_format"],
                 n_compounds=cfg["n_compounds"], sites=cfg["sites"], size=cfg["size"],
                 nucleus_radius=cfg["nucleus_radius"], seed=seed)
        console.print(f"generated {cfg['n_plates']} plate(s) in {time.perf_counter() - t0:.0f} s into {st.inbox}")
    plates = sorted(str(p) for p in st.inbox.glob("DEMO-*"))[: cfg["n_plates"]]
    out = _run(run_flow, str(st.inbox), str(st.root), ingest_settings={**DEMO_INGEST, "crop_size": cfg["crop"]},
               preset=cfg["preset"], train_overrides=cfg["overrides"], train=True, ground_truth=plates)
    _report_run(out, time.perf_counter() - t0)


def _demo_real(store: Optional[Path], *, quick: bool) -> None:
    from flows.demo_real import real_demo_flow

    t0 = time.perf_counter()
    root = _store(store)
    out = _run(real_demo_flow, str(root), quick=quick)
    imp, comp = out["imported"], out["compounds"]
    console.print(f"imported IDR0133 ({imp['idr0133']['wells']} wells, {imp['idr0133']['compounds']} compounds) and "
                  f"LINCS SQ00015054 ({imp['lincs']['wells']} wells, {imp['lincs']['compounds']} compounds); "
                  f"{comp['unique_parents']} parent structures")
    first = next(iter(out["runs"].values()))["metrics"]
    split, n = first["split"], first["n_candidates"]
    console.print(f"held-out scaffolds: {split['test_evaluated']} test compounds (train {split['train']}, val "
                  f"{split['val']}); hit101 ranks among {n['hit101']} candidates, fullpool among {n['fullpool']}. "
                  "Percent, [95 % bootstrap interval]:")
    rows = [(f"model (negatives: {neg})", r["metrics"]["model"], r["metrics"]["ci"]["model"]) for neg, r in out["runs"].items()]
    rows += [(name, first["baselines"][name], first["ci"][name]) for name in first["baselines"]]
    rows += [("chance", first["chance"], None)]
    console.print(f"{'':24s} {'mol->profile R@10':20s} {'profile->mol R@10':20s} {'MRR m->p':>8s} {'MRR p->m':>8s}", soft_wrap=True)
    for name, r, ci in rows:
        f = r["fullpool"]
        cells = [f"{100 * f[d]['recall@10']:5.1f}" + (" [{:4.1f},{:5.1f}]".format(*(100 * v for v in ci["fullpool"][d]["recall@10"]))
                                                     if ci else " " * 13) for d in ("graph_to_image", "image_to_graph")]
        console.print(f"{name.replace('negatives: ', ''):24s} {cells[0]:20s} {cells[1]:20s} "
                      f"{100 * f['graph_to_image']['mrr']:8.1f} {100 * f['image_to_graph']['mrr']:8.1f}", soft_wrap=True)
    for neg, r in out["runs"].items():
        console.print(f"report ({neg}): {r['report']}")
    console.print(f"finished in {time.perf_counter() - t0:.0f} s")


# ---------------------------------------------------------------------------------- serve / server
@app.command()
def serve(inbox: Path = typer.Argument(..., help="Folder where plate folders arrive."),
          store: Optional[Path] = StoreOpt,
          interval: Optional[float] = typer.Option(None, help="Check the inbox every N seconds."),
          cron: Optional[str] = typer.Option(None, help="...or on a cron schedule, e.g. '0 * * * *'."),
          retrain_after: Optional[int] = typer.Option(None, help="Train + evaluate once N new plates have landed."),
          preset: str = typer.Option("default", help="Training preset for retraining."),
          settle_seconds: float = typer.Option(30.0, help="Leave folders changed in the last N seconds for a later tick."),
          workers: int = typer.Option(1, help="Ingest plates in parallel on N local Dask workers."),
          layout: str = LayoutOpt, channels: Optional[str] = ChannelsOpt, crop_size: int = CropOpt,
          illumination: str = IllumOpt, dark: Optional[float] = DarkOpt, segmenter: str = SegmenterOpt,
          cellpose_model: Optional[Path] = CellposeOpt, cellpose_cell_model: Optional[Path] = CellposeCellOpt,
          field_tile_size: Optional[int] = TileOpt, allow_outside: bool = OutsideOpt) -> None:
    """Serve a scheduled, incremental ingest deployment against a Prefect server (PREFECT_API_URL)."""
    _need_dirs([inbox], "inbox")
    settings = _settings(layout=layout, channels=channels, crop_size=crop_size, illumination=illumination, dark=dark,
                         segmenter=segmenter, cellpose_model=cellpose_model, cellpose_cell_model=cellpose_cell_model,
                         field_tile_size=field_tile_size, allow_outside=allow_outside)
    from flows.serve import serve_ingest

    _use_running_server()
    _run(serve_ingest, inbox, _store(store), interval=interval, cron=cron, retrain_after=retrain_after,
         preset=preset, settings=settings, settle_seconds=settle_seconds, workers=workers)


@app.command()
def server(action: Optional[str] = typer.Argument(None, help="stop: stop the running `cmcl server` (background or not)."),
           host: str = typer.Option("127.0.0.1", help="Address to bind (loopback unless told otherwise)."),
           port: Optional[int] = typer.Option(4200, help="Port (0 or none: a free one)."),
           home: Optional[Path] = typer.Option(None, help="PREFECT_HOME for the server's database."),
           idle_timeout: Optional[float] = typer.Option(None, "--idle-timeout", help="Stop after this many seconds "
                                                        "without a cmcl command using it (default: never).")) -> None:
    """Start a Prefect server for `cmcl serve` and every other verb (they find it), and print its URL;
    `cmcl server stop` stops it. (Verbs start one in the background by themselves when none runs.)"""
    from flows.background import stop_server, wait_or_idle

    if action == "stop":
        state = _run(stop_server)
        console.print("no `cmcl server` is running" if not state else f"stopped the `cmcl server` at {state['api_url']}"
                      if state["api_url"] else f"stopped the background `cmcl server` that was starting (pid {state['pid']})")
        return
    if action is not None:
        _fail(typer.BadParameter(f"unknown action {action!r}; `cmcl server` starts one, `cmcl server stop` stops it"))
    if idle_timeout is not None and not idle_timeout > 0:
        _fail(typer.BadParameter(f"--idle-timeout must be a positive number of seconds, got {idle_timeout:g}"))
    from flows.api import client_url, forget_server, record_server
    from flows.serve import start_server, wait_healthy

    srv = _run(start_server, host, port or None, home=home)
    try:
        _run(wait_healthy, srv.api_url, timeout=120, process=srv.process)
        url = client_url(host, srv.port)
        if url is not None:  # other cmcl processes of this PREFECT_HOME reuse it (flows.api)
            state = record_server(url, srv.process.pid, owner=os.getpid())
            console.print(f"Prefect server ready: {url}\ncmcl commands with this PREFECT_HOME use it while it runs "
                          f"(recorded in {state}; CMCL_REUSE_SERVER=0 turns that off). Other Prefect clients:\n"
                          f"  export PREFECT_API_URL={url}")
        else:
            console.print(f"Prefect server ready. In another shell:\n  export PREFECT_API_URL={srv.api_url}")
        if wait_or_idle(srv.process, idle_s=idle_timeout) == "idle":
            console.print(f"no cmcl command for {idle_timeout:g} s: stopping")
    except KeyboardInterrupt:
        pass
    finally:
        forget_server(srv.process.pid)
        srv.stop()


# ----------------------------------------------------------------------------------------- verify
@app.command()
def verify(store_dir: Optional[Path] = typer.Argument(None, metavar="[STORE]", help="The store (same as --store)."),
           store: Optional[Path] = StoreOpt,
           deep: bool = typer.Option(False, "--deep", help="Also decode every chunk (checksums) and name each damaged one."),
           repair: bool = typer.Option(False, "--repair", help="Remove half-written leftovers so the next run redoes them; "
                                       "with --deep, re-derive damaged crops and labels from the plate.")) -> None:
    """Check a whole store against schemas/ and itself; exit 1 listing the problems."""
    from flows.inspect import store_argument
    from pipeline.store.verify import format_problems, verify_store

    store = _store(_run(store_argument, store_dir, store) if store_dir is not None else store)
    rederive = None
    if repair and deep:  # damaged chunks are re-derived from the plate's images
        from pipeline.ingest.repair import repair_plate as rederive
    problems = _run(verify_store, store, repair=repair, deep=deep, rederive=rederive)
    if problems:
        err.print(f"[bold red]{len(problems)} problem(s)[/] in {store}" + (" left after repair" if repair else ""))
        err.print(format_problems(problems), soft_wrap=True, markup=False)
        raise typer.Exit(1)
    console.print(f"store {store}: OK" + (" (every chunk decoded)" if deep else "") + (" (repaired)" if repair else ""))


# --------------------------------------------------------------------------------------- finetune
@app.command()
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
             layers: int = typer.Option(5, help="GIN layers of a random init."),
             hidden: int = typer.Option(300, help="GIN width of a random init."),
             device: str = typer.Option("auto", help="auto (CUDA when available) | cpu | cuda.")) -> None:
    """Fine-tune the molecule encoder on a labelled set (scaffold split): ROC-AUC or RMSE per task, mean ± sd."""
    from cmcl_model.finetune.labelled import check_labelled_csv
    from cmcl_model.reports.finetune import check_protocol_init
    from flows.model import finetune_flow

    tasks = [t.strip() for item in task for t in item.split(",") if t.strip()] or None
    if (dataset is None) == (csv is None):
        _fail(typer.BadParameter("give exactly one of --dataset NAME or --csv FILE"))
    if protocol not in ("cmcl", "hu2020") or precision not in ("fp32", "bf16"):
        _fail(typer.BadParameter(f"--protocol must be cmcl or hu2020 and --precision fp32 or bf16, got {protocol!r}, {precision!r}"))
    _run(check_protocol_init, protocol, init)  # one line, before Prefect starts
    if csv is not None:  # bad input fails here, as one line, before Prefect starts
        _run(check_labelled_csv, csv, smiles_col=smiles_col, tasks=tasks, kind=kind)
    options = dict(dataset=dataset, csv=str(csv) if csv else None, smiles_col=smiles_col, tasks=tasks, kind=kind, init=init,
                   store=str(_store(store)) if init != "random" or baselines else None, seeds=seeds,
                   out=str(out) if out else None, linear_probe=linear_probe, baselines=baselines, split_mode=split,
                   split_seed=split_seed, device=device, protocol=protocol)
    config = dict(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, layers=layers, hidden=hidden,
                  precision=precision)
    doc = _run(finetune_flow, options, config)
    _print_finetune(doc)


def _print_finetune(doc: dict[str, Any]) -> None:
    pct = doc["metric"] == "roc_auc"
    scale, unit = (100.0, "ROC-AUC %") if pct else (1.0, "RMSE")
    sp = doc["split"]
    t = Table(title=f"{doc['dataset']}: test {unit}, {sp['mode']} split {sp['sizes']['train']}/{sp['sizes']['val']}/"
                    f"{sp['sizes']['test']}, mean ± sd over {len(doc['seeds'])} seed(s)")
    for c in ("method", "mean ± sd", *doc["tasks"][:6], "wall s"):
        t.add_column(c, justify="left" if c == "method" else "right", no_wrap=True)
    f = lambda m: "-" if m is None or m.get("mean") is None else f"{m['mean'] * scale:.1f} ± {(m.get('sd') or 0) * scale:.1f}"
    for name, m in doc["methods"].items():
        t.add_row(name, f(m["test"]), *[f(m["per_task_test"][k]) for k in doc["tasks"][:6]], f"{m['wall_s']:.0f}")
    console.print(t)
    console.print(f"{doc['n_molecules']} of {doc['n_input']} molecules kept ({len(doc['invalid'])} invalid SMILES, "
                  f"{doc['standardization']['n_changed']} changed by standardization); protocol "
                  f"{doc.get('protocol', 'cmcl')}, {doc.get('featurizer', 'ogb')} features; device {doc['device']}")
    for r in doc["invalid"][:5]:
        console.print(f"  row {r['row']}: {r['smiles']!r}: {r['reason']}")
    console.print(f"results: {doc['_path']}\nsplit: {Path(doc['_path']).with_name(doc['split']['file'])}")


# ------------------------------------------------------------------------------------------ query
@app.command()
def query(store: Optional[Path] = StoreOpt,
          smiles: Optional[str] = typer.Option(None, help="A molecule (any SMILES; standardized first)."),
          well: Optional[str] = typer.Option(None, help="A well as PLATE:WELL, e.g. DEMO-1:B07."),
          top: int = typer.Option(10, help="How many results."),
          run: Optional[str] = typer.Option(None, help="Run id (default: the latest)."),
          out: Optional[Path] = typer.Option(None, help="Folder for the HTML/PNG results.")) -> None:
    """Zero-shot retrieval: wells nearest a molecule (--smiles), or molecules nearest a well (--well)."""
    from pipeline.store.paths import Store

    if (smiles is None) == (well is None):
        _fail(ValueError("give exactly one of --smiles or --well"))
    st = Store(_store(store))
    run = run or (st.runs()[-1] if st.runs() else None)
    if run is None:
        _fail(FileNotFoundError(f"no training run in {st.root / 'runs'}; run `cmcl train` first"))
    from cmcl_model.evaluation.query import query_smiles, query_well

    if smiles is not None:
        df = _run(query_smiles, st.root, st.run_dir(run), smiles, top=top, out_dir=out)
        what = "compounds whose profiles are nearest" if "profiles" in df.attrs else "wells nearest"
        console.print(f"{what} [bold]{df.attrs.get('query_smiles', smiles)}[/] (run {run}):")
    else:
        if ":" not in well:
            _fail(ValueError(f"--well {well!r} is not PLATE:WELL (e.g. DEMO-1:B07)"))
        plate, w = well.split(":", 1)
        df = _run(query_well, st.root, st.run_dir(run), plate, w, top=top, out_dir=out)
        console.print(f"compounds nearest well [bold]{plate}:{w}[/] (run {run}):")
    console.print(df.to_string(index=False))
    console.print(f"pictures: {df.attrs.get('out_dir')}")


# ------------------------------------------------------------------------------- embed / export
def _run_dir(store: Optional[Path], run: Optional[str]) -> Path:
    """The directory of ``--run`` (default: the store's newest run); one-line failure if absent."""
    from pipeline.store.paths import Store

    st = Store(_store(store))
    run = run or (st.runs()[-1] if st.runs() else None)
    if run is None:
        _fail(FileNotFoundError(f"no training run in {st.root / 'runs'}; run `cmcl train` first"))
    if not (st.run_dir(run) / "checkpoints").is_dir():
        _fail(FileNotFoundError(f"run {run!r} not found in {st.root / 'runs'} (runs: {', '.join(st.runs()) or 'none'})"))
    return st.run_dir(run)


@app.command()
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
        _fail(FileNotFoundError(f"compound file {file} does not exist"))
    _check_compound_files([file], smiles_col, id_col)
    source = model if model is not None else _run_dir(store, run)
    net, _ = _run(load_encoder, source)
    table = _run(embed_file, net, file, smiles_col=smiles_col, id_col=id_col, device=_run(resolve_device, device))
    path = _run(write_embeddings, table, out)
    failed = table[table["Status"] != "ok"]
    console.print(f"{len(table) - len(failed)} of {len(table)} records embedded ({source}): {path}")
    for row in failed.head(10).itertuples(index=False):
        console.print(f"  failed {row.Metadata_CompoundID}: {row.Error}")
    if len(failed) > 10:
        console.print(f"  ... and {len(failed) - 10} more (Status == 'failed' in {path})")


@app.command()
def export(out: Path = typer.Argument(..., help="File to write, e.g. cmcl_encoder.pt."),
           store: Optional[Path] = StoreOpt,
           run: Optional[str] = typer.Option(None, help="Run id of --store (default: the newest run)."),
           which: str = typer.Option("best", help="best | last checkpoint.")) -> None:
    """One self-contained model file (weights, config, featurizer) that loads without the store."""
    from cmcl_model.deploy.export import export_run

    if which not in ("best", "last"):
        _fail(ValueError(f"--which must be best or last, got {which!r}"))
    run_dir = _run_dir(store, run)
    path = _run(export_run, run_dir, out, which=which)
    console.print(f"run [bold]{run_dir.name}[/] ({which}) exported: {path}")
    console.print("load it with: from cmcl_model.deploy.export import load_exported; model, config, meta = load_exported(PATH)")


# ---------------------------------------------------------------------------------------- inspect
@app.command()
def inspect(what: str = typer.Argument("summary", help="summary | plates | plate ID | cells | quarantine | compounds | runs | profiles"),
            arg: Optional[str] = typer.Argument(None, help="Plate id for `plate`."),
            store: Optional[Path] = StoreOpt,
            as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")) -> None:
    """Show what a store holds; `plate ID` also writes heatmaps and a field with outlines."""
    from flows.inspect import VIEWS, VIEWS_WITH_ARG, store_argument

    if what not in VIEWS and what not in VIEWS_WITH_ARG and Path(what).is_dir():  # `cmcl inspect STORE [VIEW]`
        store = _run(store_argument, Path(what), store)
        what, arg = (arg or "summary"), None
    store = _store(store)
    if what not in VIEWS and what not in VIEWS_WITH_ARG:
        _fail(ValueError(f"unknown view {what!r}; choose one of {', '.join([*VIEWS, *VIEWS_WITH_ARG])}"))
    if not store.is_dir():
        _fail(FileNotFoundError(f"store {store} does not exist"))
    if what in VIEWS_WITH_ARG:
        if arg is None:
            _fail(ValueError(f"`cmcl inspect {what} ID` needs an argument (e.g. a plate id)"))
        title, frame = _run(VIEWS_WITH_ARG[what], store, arg)
    else:
        title, frame = _run(VIEWS[what], store)
    if as_json:
        print(frame.to_json(orient="records", indent=2))
        return
    from flows.inspect import for_terminal

    frame = for_terminal(what, frame)  # fewer, shorter columns; one line per row (--json has them all)
    cells = [[("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row]
             for row in frame.itertuples(index=False)]
    widths = [max([len(str(c)), *(len(r[k]) for r in cells)]) for k, c in enumerate(frame.columns)]
    short = [w <= 12 for w in widths]
    # short columns keep their width; the long ones share the rest of the terminal, cut with '…'
    room = console.width - 3 * len(widths) - 1 - sum(w for w, s in zip(widths, short) if s)
    share = max(8, room // max(1, short.count(False)))
    t = Table(title=title)
    for c, w, s in zip(frame.columns, widths, short):
        t.add_column(str(c), no_wrap=True, overflow="ellipsis", min_width=w if s else None,
                     max_width=None if s else share)
    for row in cells:
        t.add_row(*row)
    console.print(t)
    for f in frame.attrs.get("files", []):
        console.print(f"  {f}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
