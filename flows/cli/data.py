"""Verbs on plates, compounds, profiles and the store: synth, ingest, compounds, profile,
import-profiles, verify, inspect."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from flows.cli.app import (ChannelsOpt, CellposeCellOpt, CellposeOpt, CropOpt, DarkOpt, FeaturesOpt, IllumOpt,
                           LayoutOpt, NegconOpt, OutsideOpt, PlatemapOpt, SegmenterOpt, StoreOpt, TileOpt, call,
                           check_compound_files, check_plate_sources, console, err, fail, ingest_settings,
                           need_dirs, negcon_labels, store_root)
from flows.cli.printing import print_negcon, print_plates
from pipeline.chem.choices import ID_COLUMNS
from pipeline.plates.vendors import LAYOUTS

__all__ = ["synth", "ingest", "compounds", "profile", "import_profiles", "verify", "inspect"]


# ------------------------------------------------------------------------------------------ synth
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
    path = call(generate, out_dir, layout=layout, plate_id=plate_id, plate_format=plate_format, n_wells=wells,
                sites=sites, size=size, seed=seed, faults=faults)
    n = wells * sites
    console.print(f"wrote plate [bold]{plate_id}[/] ({wells} wells x {sites} sites, {layout}) to {path} "
                  f"in {time.perf_counter() - t0:.1f} s ({n / (time.perf_counter() - t0):.1f} fields/s)")


# ----------------------------------------------------------------------------------------- ingest
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
    need_dirs(plate_dirs, "plate folder")
    if plate_id is not None and len(plate_dirs) > 1:
        fail(ValueError(f"--plate-id names one plate; got {len(plate_dirs)} folders"))
    if workers == 1:  # the workers' fork server warms up while this process plans and imports Prefect
        from pipeline.ingest.pool import INGEST_PRELOAD, start_pool_server

        start_pool_server(INGEST_PRELOAD)
    settings = ingest_settings(layout=layout, channels=channels, crop_size=crop_size, illumination=illumination, dark=dark,
                         segmenter=segmenter, cellpose_model=cellpose_model, cellpose_cell_model=cellpose_cell_model,
                         field_tile_size=field_tile_size, allow_outside=allow_outside, platemap=platemap,
                         features=features)
    plans = check_plate_sources(plate_dirs, store_root(store), settings, replace=replace, plate_id=plate_id)
    from flows.parallel import ingest_flow

    results = call(ingest_flow, [str(p) for p in plate_dirs], str(store_root(store)), settings=settings, force=force,
                   workers=workers, replace=replace, plate_id=plate_id, plans=plans)
    print_plates(results)
    if any(r["n_quarantined"] for r in results):
        console.print("[yellow]some fields were quarantined:[/] see `cmcl inspect quarantine --store STORE`")
    empty = [r["nothing_stored"] for r in results if r.get("nothing_stored")]
    if empty:  # nothing stored is a failure: a script or an inbox must not read it as success
        for line in empty:
            err.print(Text.assemble(("error: ", "bold red"), line), soft_wrap=True)
        raise typer.Exit(1)


# -------------------------------------------------------------------------------------- compounds
def compounds(files: list[Path] = typer.Argument(None, help="CSV/TSV/.smi/SDF/Parquet compound files (plate maps in the store are always included)."),
              store: Optional[Path] = StoreOpt,
              smiles_col: str = typer.Option("smiles", help="SMILES column of CSV/TSV/Parquet inputs."),
              id_col: Optional[str] = typer.Option(None, help=f"Identifier column (default: the first of {', '.join(ID_COLUMNS)} "
                                                   "present, compared without case or punctuation: pipeline.chem.choices.ID_COLUMNS)."),
              tautomers: bool = typer.Option(False, "--tautomers", help="Canonicalize tautomers."),
              fresh: bool = typer.Option(False, "--fresh", help="Forget compound files read by earlier runs (they accumulate otherwise)."),
              jobs: int = typer.Option(2, help="Worker processes.")) -> None:
    """Standardize compounds (parents, salts, charges), merge duplicates, build OGB graphs."""
    check_compound_files(files or [], smiles_col, id_col)
    from flows.compounds import compounds_flow

    s = call(compounds_flow, str(store_root(store)), files=[str(f) for f in files or []], smiles_col=smiles_col, id_col=id_col,
             n_jobs=jobs, canonicalize_tautomer=tautomers, fresh=fresh)
    if s.get("nothing_to_do"):
        console.print(f"compounds: nothing to do: {s['nothing_to_do']}")
        return
    console.print(f"compounds: {s['read']} read, {s['standardized']} standardized, {s['merged']} merged into "
                  f"existing parents, {s['failed']} failed -> {s['unique_parents']} parents"
                  + (" (unchanged: nothing to do)" if s["skipped"] else ""))
    for name, path in s["tables"].items():
        console.print(f"  {name}: {path}")


# --------------------------------------------------------------------------------------- profiles
def profile(store: Optional[Path] = StoreOpt,
            null_size: int = typer.Option(10000, help="Random rankings per mAP p-value (copairs null distribution)."),
            negcon: Optional[str] = NegconOpt) -> None:
    """Well profiles (pycytominer: median, plate map, mad_robustize vs DMSO, feature selection), consensus
    profiles and per-compound phenotypic activity (copairs mAP); only plates whose inputs changed are redone."""
    from flows.profiles import profile_flow

    labels = negcon_labels(negcon)
    out = call(profile_flow, str(store_root(store)), null_size, labels)
    console.print(f"profiles: {len(out['plates_profiled'])} plate(s) profiled, {len(out['plates_unchanged'])} unchanged")
    if isinstance(out["sources"], dict):
        for source, s in out["sources"].items():
            console.print(f"  {source}: {s['wells']} wells x {s['features']} features; {s['retrieved']} of "
                          f"{s['compounds']} compounds retrieved (phenotypically active) at corrected p < 0.05"
                          + (f"; {s['moas_consistent']} of {s['moas']} mechanisms consistent" if s.get("moas") else ""))
            if s.get("selection_skipped"):
                console.print(f"  {source}: {s['selection_skipped']}")
    print_negcon(out)
    st = store_root(store)
    console.print(f"activity: {st / 'tables' / 'profiles' / 'activity.parquet'}")


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
            fail(FileNotFoundError(f"{f} does not exist"))
    if samples and compound_map:
        fail(ValueError("--samples is the Drug Repurposing Hub form of --compound-map: give one of them"))
    if columns:  # a bad column map fails here, before Prefect starts
        from pipeline.profiles.io import read_column_map

        try:
            read_column_map(columns)
        except ValueError as exc:
            fail(exc)
    from flows.profiles import import_profiles_flow

    out = call(import_profiles_flow, [str(f) for f in files], str(store_root(store)), str(samples) if samples else None,
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
            console.print(f"  ... {len(r['unjoined']) - 20} more in {store_root(store) / 'tables' / 'profiles' / 'imports.json'}")


# ----------------------------------------------------------------------------------------- verify
def verify(store_dir: Optional[Path] = typer.Argument(None, metavar="[STORE]", help="The store (same as --store)."),
           store: Optional[Path] = StoreOpt,
           deep: bool = typer.Option(False, "--deep", help="Also decode every chunk (checksums) and name each damaged one."),
           repair: bool = typer.Option(False, "--repair", help="Remove half-written leftovers so the next run redoes them; "
                                       "with --deep, re-derive damaged crops and labels from the plate.")) -> None:
    """Check a whole store against schemas/ and itself; exit 1 listing the problems."""
    from flows.inspect import store_argument
    from pipeline.store.verify import format_problems, verify_store

    store = store_root(call(store_argument, store_dir, store) if store_dir is not None else store)
    rederive = None
    if repair and deep:  # damaged chunks are re-derived from the plate's images
        from pipeline.ingest.repair import repair_plate as rederive
    problems = call(verify_store, store, repair=repair, deep=deep, rederive=rederive)
    if problems:
        err.print(f"[bold red]{len(problems)} problem(s)[/] in {store}" + (" left after repair" if repair else ""))
        err.print(format_problems(problems), soft_wrap=True, markup=False)
        raise typer.Exit(1)
    console.print(f"store {store}: OK" + (" (every chunk decoded)" if deep else "") + (" (repaired)" if repair else ""))


# ---------------------------------------------------------------------------------------- inspect
def inspect(what: str = typer.Argument("summary", help="summary | plates | plate ID | cells | quarantine | compounds | runs | profiles"),
            arg: Optional[str] = typer.Argument(None, help="Plate id for `plate`."),
            store: Optional[Path] = StoreOpt,
            as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")) -> None:
    """Show what a store holds; `plate ID` also writes heatmaps and a field with outlines."""
    from flows.inspect import VIEWS, VIEWS_WITH_ARG, store_argument

    if what not in VIEWS and what not in VIEWS_WITH_ARG and Path(what).is_dir():  # `cmcl inspect STORE [VIEW]`
        store = call(store_argument, Path(what), store)
        what, arg = (arg or "summary"), None
    store = store_root(store)
    if what not in VIEWS and what not in VIEWS_WITH_ARG:
        fail(ValueError(f"unknown view {what!r}; choose one of {', '.join([*VIEWS, *VIEWS_WITH_ARG])}"))
    if not store.is_dir():
        fail(FileNotFoundError(f"store {store} does not exist"))
    if what in VIEWS_WITH_ARG:
        if arg is None:
            fail(ValueError(f"`cmcl inspect {what} ID` needs an argument (e.g. a plate id)"))
        title, frame = call(VIEWS_WITH_ARG[what], store, arg)
    else:
        title, frame = call(VIEWS[what], store)
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
