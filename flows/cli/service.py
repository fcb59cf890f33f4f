"""Verbs that run everything or keep running: run, demo, serve, server."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

import typer

from flows.cli.app import (ChannelsOpt, CellposeCellOpt, CellposeOpt, CropOpt, DarkOpt, FeaturesOpt, IllumOpt,
                           LayoutOpt, NegconOpt, OutsideOpt, PlatemapOpt, SegmenterOpt, StoreOpt, TileOpt, call,
                           check_compound_files, console, fail, ingest_settings, need_dirs, negcon_labels,
                           parse_overrides, store_root, use_running_server)
from flows.cli.printing import print_metrics, print_negcon, print_plates

__all__ = ["run", "demo", "serve", "server", "DEMO_SIZES", "DEMO_INGEST"]


# -------------------------------------------------------------------------------------------- run
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
    need_dirs([inbox], "inbox")
    settings = ingest_settings(layout=layout, channels=channels, crop_size=crop_size, illumination=illumination, dark=dark,
                         segmenter=segmenter, cellpose_model=cellpose_model, cellpose_cell_model=cellpose_cell_model,
                         field_tile_size=field_tile_size, allow_outside=allow_outside, platemap=platemap,
                         features=features)
    overrides = parse_overrides(set_) or None
    labels = negcon_labels(negcon)
    check_compound_files(compound_file, "smiles", None)
    from flows.pipeline import run_flow

    t0 = time.perf_counter()
    out = call(run_flow, str(inbox), str(store_root(store)), ingest_settings=settings,
               compound_files=[str(f) for f in compound_file], preset=preset, train_overrides=overrides,
               train=not no_train, workers=workers, dask_address=dask_address, negcon=labels)
    _report_run(out, time.perf_counter() - t0)


def _report_run(out: dict[str, Any], seconds: float) -> None:
    print_plates(out["plates"])
    c = out["compounds"]
    console.print(f"compounds: {c['read']} records -> {c['unique_parents']} parents, {c['failed']} failed")
    print_negcon(out.get("profiles", {}))
    if "metrics" in out:
        print_metrics(out["metrics"])
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
    st = Store(store_root(store))
    t0 = time.perf_counter()
    existing = sorted(p.name for p in st.inbox.glob("DEMO-*")) if st.inbox.is_dir() else []
    if len(existing) < cfg["n_plates"]:
        with console.status("generating synthetic plates"):
            call(generate_demo, st.inbox, n_plates=cfg["n_plates"], plate_format=cfg["plate_format"],
                 n_compounds=cfg["n_compounds"], sites=cfg["sites"], size=cfg["size"],
                 nucleus_radius=cfg["nucleus_radius"], seed=seed)
        console.print(f"generated {cfg['n_plates']} plate(s) in {time.perf_counter() - t0:.0f} s into {st.inbox}")
    plates = sorted(str(p) for p in st.inbox.glob("DEMO-*"))[: cfg["n_plates"]]
    out = call(run_flow, str(st.inbox), str(st.root), ingest_settings={**DEMO_INGEST, "crop_size": cfg["crop"]},
               preset=cfg["preset"], train_overrides=cfg["overrides"], train=True, ground_truth=plates)
    _report_run(out, time.perf_counter() - t0)


def _demo_real(store: Optional[Path], *, quick: bool) -> None:
    from flows.demo_real import real_demo_flow

    t0 = time.perf_counter()
    root = store_root(store)
    out = call(real_demo_flow, str(root), quick=quick)
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
    need_dirs([inbox], "inbox")
    settings = ingest_settings(layout=layout, channels=channels, crop_size=crop_size, illumination=illumination, dark=dark,
                         segmenter=segmenter, cellpose_model=cellpose_model, cellpose_cell_model=cellpose_cell_model,
                         field_tile_size=field_tile_size, allow_outside=allow_outside)
    from flows.serve import serve_ingest

    use_running_server()
    call(serve_ingest, inbox, store_root(store), interval=interval, cron=cron, retrain_after=retrain_after,
         preset=preset, settings=settings, settle_seconds=settle_seconds, workers=workers)


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
        from flows.warm import stop_helpers

        state = call(stop_server)
        console.print("no `cmcl server` is running" if not state else f"stopped the `cmcl server` at {state['api_url']}"
                      if state["api_url"] else f"stopped the background `cmcl server` that was starting (pid {state['pid']})")
        n = stop_helpers()
        if n:
            console.print(f"stopped {n} warm cmcl helper{'s' if n > 1 else ''}")
        return
    if action is not None:
        fail(typer.BadParameter(f"unknown action {action!r}; `cmcl server` starts one, `cmcl server stop` stops it"))
    if idle_timeout is not None and not idle_timeout > 0:
        fail(typer.BadParameter(f"--idle-timeout must be a positive number of seconds, got {idle_timeout:g}"))
    from flows.api import client_url, forget_server, record_server
    from flows.serve import start_server, wait_healthy

    srv = call(start_server, host, port or None, home=home)
    try:
        call(wait_healthy, srv.api_url, timeout=120, process=srv.process)
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
