"""The ``cmcl`` application: the Typer app and its group, the global options, the options verbs
share, and the helpers every verb uses at the CLI boundary (one-line errors, the Prefect server).

Verbs live in :mod:`flows.cli.data`, :mod:`flows.cli.model` and :mod:`flows.cli.service`;
:mod:`flows.cli` registers them on :data:`app` in the order ``cmcl --help`` lists them. Only light
imports here (typer, rich, the choices modules): everything heavy is imported inside a verb.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

import importlib

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from pipeline.plates.vendors import LAYOUTS
from pipeline.profiles.choices import DEFAULT_NEGCON
from pipeline.features.choices import FEATURE_SETS
from pipeline.images.choices import ILLUMINATION_METHODS, SEGMENTERS

__all__ = ["app", "console", "err", "StoreOpt", "LayoutOpt", "ChannelsOpt", "CropOpt", "IllumOpt", "DarkOpt", "SegmenterOpt", "CellposeOpt", "CellposeCellOpt",
           "TileOpt", "OutsideOpt", "PlatemapOpt", "FeaturesOpt", "NegconOpt", "call", "fail", "store_root",
           "ingest_settings", "parse_overrides", "negcon_labels", "need_dirs", "need_compounds",
           "check_compound_files", "check_plate_sources", "use_running_server", "exit_without_teardown"]


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
            exit_without_teardown(code)  # the `cmcl` process itself (tests pass args), not profiled or traced
        sys.exit(code)


def exit_without_teardown(code: int) -> None:
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
                         f"control type and compound ID (default: the store's, else {','.join(DEFAULT_NEGCON)}). The "
                         "store keeps them for later runs and training. A plate without any is normalized against "
                         "all its wells and flagged.")


def ingest_settings(*, layout, channels, crop_size, illumination, dark, segmenter, cellpose_model,
                    cellpose_cell_model, field_tile_size, allow_outside, platemap=None,
                    features="default") -> dict[str, Any]:
    """The ingestion options of ``ingest``/``run``/``serve`` as :class:`IngestSettings` keywords
    (paths as ``str``); a bad value fails here, as one line."""
    from pipeline.ingest.settings import IngestSettings

    settings = dict(layout=layout, channel_map=str(channels) if channels else None, crop_size=crop_size,
                    illumination_method=illumination, illumination_dark=dark, segmenter=segmenter,
                    cellpose_model=str(cellpose_model) if cellpose_model else None,
                    cellpose_cell_model=str(cellpose_cell_model) if cellpose_cell_model else None,
                    field_tile_size=field_tile_size, allow_outside=allow_outside,
                    platemap=str(platemap) if platemap else None, features=features)
    call(IngestSettings, **settings)  # bad values fail here, as one line
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
    warm = sys.modules.get("flows.warm")
    if warm is not None and warm.in_child():  # a warm helper's child: Prefect and the consoles predate this command
        warm.reconfigure()
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


def store_root(store: Optional[Path]) -> Path:
    """``--store``, else the default store (``$CMCL_STORE``, else ``./cmcl-store``)."""
    from pipeline.store.paths import default_store_path

    return Path(store) if store is not None else default_store_path()


def fail(exc: BaseException) -> None:
    """Report ``exc`` as one line (never wrapped, markup-free) and exit 1; with --debug, raise it."""
    if _State.debug:
        raise exc
    msg = " ".join(str(exc).split())
    err.print(Text.assemble(("error: ", "bold red"), f"{type(exc).__name__}: {msg}"), soft_wrap=True)
    raise typer.Exit(1)


def _interrupted() -> None:
    """Ctrl-C / SIGTERM: end the verb's child processes, say how to resume, exit 130."""
    from flows.signals import INTERRUPTED_HINT, kill_descendants

    kill_descendants()
    err.print(Text.assemble(("error: ", "bold red"), INTERRUPTED_HINT), soft_wrap=True)
    raise typer.Exit(130)


class _OneLineLogs(logging.Filter):
    """Without --debug, log records carry no traceback: the first line of the message only; and
    Prefect's own plumbing (its event and log queues draining at exit: "EventsWorker - Still
    processing items: 5 items remaining...") says nothing to the user."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _State.debug and "_internal" in Path(record.pathname).parts and "prefect" in Path(record.pathname).parts:
            return False
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
    """Put :class:`_OneLineLogs` on the root and Prefect loggers' handlers (once each)."""
    one_line = _OneLineLogs()
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                                      if n.startswith("prefect"))]
    for lg in loggers:
        for h in lg.handlers:
            if not any(isinstance(f, _OneLineLogs) for f in h.filters):
                h.addFilter(one_line)


def use_running_server() -> None:
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
    """Whether ``fn`` is a Prefect flow (never imports Prefect to find out)."""
    flows_module = sys.modules.get("prefect.flows")
    return flows_module is not None and isinstance(fn, flows_module.Flow)


def call(fn, *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` at the CLI boundary: a flow uses the running ``cmcl server``; an error
    is one line and exit 1 (:func:`fail`), an interrupt exit 130; with --debug errors are raised."""
    _tame_logs()
    is_flow = _is_flow(fn)
    if is_flow:
        use_running_server()
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
        fail(exc)
    except BaseException as exc:
        if type(exc).__name__ == "TerminationSignal":  # Prefect's SIGTERM inside a flow run
            _interrupted()
        raise


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as typed TrainConfig overrides; a bad key or value fails here, as one line."""
    from cmcl_model.train.config import TrainConfig

    return call(TrainConfig.parse_overrides, items) if items else {}


def need_dirs(paths: list[Path], what: str) -> None:
    """Fail (one line, before Prefect starts) unless every path is an existing folder."""
    from flows.inspect import looks_like_store

    for p in paths:
        if not Path(p).is_dir():
            fail(FileNotFoundError(f"{what} {p} does not exist or is not a folder"))
        if looks_like_store(p):  # `cmcl run STORE`: the store where the inbox is meant
            fail(ValueError(f"{p} is a cmcl store, not {'an' if what[0] in 'aeiou' else 'a'} {what}; give the {what} "
                             f"and the store as --store {p}"))


def check_compound_files(files: list[Path], smiles_col: str, id_col: Optional[str]) -> None:
    """Before Prefect starts: read each compound file's header and print which column names its records."""
    from pipeline.chem.io import check_compound_file

    for f in files:
        console.print(call(check_compound_file, f, smiles_col=smiles_col, id_col=id_col), soft_wrap=True,
                      markup=False, highlight=False)  # which column gave the IDs, or how records are named


def check_plate_sources(plate_dirs: list[Path], root: Path, settings: dict[str, Any], *, replace: bool,
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
        plan = plans[str(p)] = call(preflight, p, st, cfg, plate_id=plate_id)
        if not replace and st.table_path("ledger").is_file():
            call(check_plate_source, plan, st)
    return plans


def need_compounds(root: Path) -> None:
    """``cmcl train``/``--ablation``: fail with what to run when the store has no plates or compounds yet."""
    from pipeline.store.paths import Store

    st = Store(root)
    if not st.table_path("ledger").is_file() and not st.table_files("cells"):  # (a built store may have no ledger)
        fail(FileNotFoundError(f"store {root} holds no ingested plate; run `cmcl ingest PLATE_DIR --store {root}` first"))
    if not st.table_path("graphs").is_file():
        fail(FileNotFoundError(f"store {root} has no compounds yet ({st.table_path('graphs')} is missing); "
                                f"run `cmcl compounds --store {root}` first"))
    from pipeline.chem.parents import CompoundsOutOfDate, wells_without_compounds

    stale = wells_without_compounds(st.read("platemap"), st.read("well_compounds"))
    if len(stale):
        plates = ", ".join(sorted(set(stale["Metadata_Plate"])))
        fail(CompoundsOutOfDate(f"{len(stale)} plate-map well(s) of plate(s) {plates} have no compound identity yet "
                                 f"(ingested after the compound table was built): run `cmcl compounds --store {root}` "
                                 f"first (`cmcl run` runs it for you)"))




def negcon_labels(negcon: Optional[str]) -> Optional[list[str]]:
    """``--negcon A,B`` as a list of labels (None: the defaults); a list naming nothing fails here, as one line."""
    from pipeline.profiles.controls import parse_negcon

    return None if negcon is None else list(call(parse_negcon, negcon))
