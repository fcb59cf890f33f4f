"""MoleculeNet transfer benchmark that accumulates: one record per (dataset, method, seed) cell.

Every finished cell is written at once to ``--out`` (default ``docs/transfer.json``, schema
``schemas/reports/transfer.json``) and ``docs/transfer.md`` is regenerated beside it; a rerun
skips recorded cells, and ``--budget-minutes N`` stops cleanly between cells, so the table
can be filled over several runs. Several runs may share ``--out`` and ``--partial-dir`` (one per
core): a run holds a lock on the cell it is computing, so another skips that cell, and writes the
file under a lock of its own (``<out>.lock``). Cells run most important first: random-init GIN on the
first three datasets, the Morgan models on them, the pre-trained encoders on them, then the
remaining datasets in the same order.

Methods (``--methods``):

``gin_random``        GIN 5 x 300 at random init, Hu et al.'s settings (batch 32, Adam 1e-3, dropout 0.5)
``morgan_lr`` / ``morgan_rf``  Morgan fingerprints (r=2, 2048 bits) + logistic regression / random
                      forest tuned per task on validation (``morgan_lr`` is deterministic: seed 0 only)
``gin_demo``          the graph encoder of a ``cmcl demo`` run (generated images), fine-tuned; the demo
                      store is created in ``--demo-store`` when missing (``cmcl demo``, minutes)
``gin_random_demo``   the demo run's GIN architecture at random init (``gin_demo``'s peer)
``gin_ssl``           the demo run's GIN architecture pre-trained by attribute masking (Hu et al.) on the
                      demo store's training compounds with the demo run's budget: structure only, same
                      molecules as ``gin_demo``
``gin_profiles``      the graph encoder of any run directory given with ``--profile-run`` (e.g. a
                      profile-mode run on real profiles)

Speed (``--speed``): this machine's matmul peak (fp32, bf16), then BBBP epochs of the fine-tuning
step (fp32 and bf16, and the previous step as the peer: plain Adam, validation and test in
separate passes), alternating, with GFLOP/s counted by ``torch.utils.flop_counter``.

    PYTHONPATH=. python benchmarks/finetune.py [--datasets bbbp,clintox,bace,sider,tox21]
        [--methods gin_random,morgan_lr,morgan_rf,gin_ssl,gin_demo,gin_random_demo] [--seeds 0,1,2]
        [--epochs 100] [--protocol hu2020|cmcl] [--featurizer ogb|hu2020] [--budget-minutes N] [--threads N]
        [--out docs/transfer.json]

``--protocol hu2020`` is the reproduction of Hu et al.: the SMILES as given, their featurizer
(atom type + chirality, bond type + direction) and their self-loop GIN layer; it runs
``gin_random`` and the Morgan models only (pre-trained cmcl encoders read OGB features: their
rows run under ``--protocol cmcl``). ``--featurizer`` overrides the protocol's featurizer (the
GIN layer follows it: ``hu2020`` features -> self-loop GIN, ``ogb`` -> GINE); the featurizer is
part of each record's key, so cells of both are kept apart.
    PYTHONPATH=. python benchmarks/finetune.py --speed [--speed-epochs 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cmcl_model.finetune.featurizers import PROTOCOL_MODEL  # noqa: E402

DEFAULT_METHODS = "gin_random,morgan_lr,morgan_rf,gin_ssl,gin_demo,gin_random_demo"
HU2020_METHODS = "gin_random,morgan_lr,morgan_rf"  # pre-trained cmcl encoders read OGB features
DESCRIPTIONS = {
    "gin_random": "GIN 5 x 300, random init, fine-tuned with Hu et al.'s settings; features `hu2020` (Hu et al.'s "
                  "featurizer and self-loop GIN layer) or `ogb` (cmcl's OGB features and GINE layer)",
    "morgan_lr": "Morgan fingerprints (radius 2, 2048 bits) + logistic regression, C tuned per task on validation "
                 "(deterministic: one seed)",
    "morgan_rf": "Morgan fingerprints + random forest (200 trees), min_samples_leaf tuned per task on validation",
    "gin_demo": "the graph encoder of a `cmcl demo` run (contrastive pre-training on the demo's generated images), "
                "fine-tuned",
    "gin_random_demo": "the demo run's GIN architecture at random init (gin_demo's peer)",
    "gin_ssl": "the demo run's GIN architecture pre-trained by attribute masking on the demo store's training "
               "compounds (structure only), fine-tuned",
    "gin_profiles": "the graph encoder of --profile-run, fine-tuned",
}


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=40"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def plan_cells(datasets: list[str], methods: list[str], seeds: list[int]) -> list[tuple[str, str, int]]:
    """(dataset, method, seed) in run order: the first three datasets before the rest; within
    each group random-init GIN, then the Morgan models, then the pre-trained encoders."""
    rank = {"gin_random": 0, "morgan_lr": 1, "morgan_rf": 1}
    cells = []
    for di, d in enumerate(datasets):
        for mi, m in enumerate(methods):
            for s in (seeds[:1] if m == "morgan_lr" else seeds):
                cells.append(((di >= 3, rank.get(m, 2), di, mi, s), (d, m, s)))
    return [c for _, c in sorted(cells)]


class Encoders:
    """Initial encoders, built the first time a cell needs them (the demo store only then)."""

    def __init__(self, args, config, device) -> None:
        self.args, self.config, self.device = args, config, device
        self._made: dict = {}
        self.info: dict = {}

    def _demo(self):
        from cmcl_model.finetune.run import run_encoder
        from pipeline.store.paths import Store

        store = Path(self.args.demo_store)
        st = Store(store)
        runs = st.runs() if (store / "runs").is_dir() else []
        if not runs:
            print(f"creating the demo store {store} (cmcl demo) ...", flush=True)
            subprocess.run([sys.executable, "-m", "flows.cli", "-q", "demo", "--store", str(store)], cwd=ROOT, check=True)
            runs = st.runs()
        run = sorted(runs)[-1]
        make, run_config = run_encoder(st.run_dir(run))
        arch = f"GIN {run_config.gin_layers} x {run_config.gin_hidden}"
        self.info["demo"] = {"description": f"`cmcl demo` run {run} in {_shown(store, 'DEMO_STORE')}: contrastive "
                                            f"pre-training on the demo's generated images ({arch})", "store": store,
                             "arch": arch, "source": f"{store}/runs/{run}",
                             "shown": f"{_shown(store, 'DEMO_STORE')}/runs/{run}"}
        return make, run_config

    def get(self, init: str):
        if init in self._made:
            return self._made[init]
        from cmcl_model.finetune.run import FinetuneConfig, random_encoder, run_encoder, ssl_encoder, store_train_graphs

        if init == "random":
            make = random_encoder(self.config, featurizer=self.args.featurizer)
        elif init == "demo":
            make = self._demo()[0]
        elif init == "random_demo":
            rc = self._demo()[1]
            make = random_encoder(FinetuneConfig(layers=rc.gin_layers, hidden=rc.gin_hidden, jk=rc.gin_jk,
                                                 pooling=rc.gin_pooling))
        elif init == "ssl":
            rc = self._demo()[1]
            store = self.info["demo"]["store"]
            make, log = ssl_encoder(store_train_graphs(store), rc, device=self.device)
            self.info["ssl"] = {"description": f"attribute masking (Hu et al.) on the training compounds of "
                                               f"{_shown(store, 'DEMO_STORE')} ({self.info['demo']['arch']}, "
                                               f"{log['epochs']} epochs, {log['wall_s']:.0f} s)", "store": store,
                                "arch": self.info["demo"]["arch"], "source": str(store),
                                "shown": _shown(store, "DEMO_STORE")}
        elif init == "profiles":
            if not self.args.profile_run:
                raise SystemExit("gin_profiles needs --profile-run RUN_DIR")
            run_dir = Path(self.args.profile_run)
            make, rc = run_encoder(run_dir)
            self.info["profiles"] = {"description": f"run {run_dir.name} of {_shown(run_dir.parents[1], 'PROFILE_STORE')}",
                                     "store": run_dir.parents[1], "arch": f"GIN {rc.gin_layers} x {rc.gin_hidden}",
                                     "source": str(run_dir), "shown": _shown(run_dir, "PROFILE_RUN")}
        else:
            raise SystemExit(f"unknown method gin_{init}; valid: {', '.join(DESCRIPTIONS)}")
        self._made[init] = make
        return make


def _store_training_set(store: Path) -> tuple[set[str], set[str]]:
    """InChIKeys and scaffolds of a store's training-split compounds."""
    from cmcl_model.finetune.labelled import scaffold_of
    from pipeline.store.paths import Store

    st = Store(store)
    split = st.read("split")
    graphs = st.read("graphs", columns=["Metadata_InChIKey", "Metadata_SMILES"])
    train = set(split.loc[split["Split"].astype(str) == "train", "Metadata_InChIKey"].astype(str))
    smiles = graphs.loc[graphs["Metadata_InChIKey"].astype(str).isin(train), "Metadata_SMILES"].astype(str)
    return train, {scaffold_of(s) for s in smiles}


def _record_leakage(doc: dict, encoders: Encoders, init: str, dataset: str, data, split) -> None:
    """Fill ``doc['encoders'][init]`` with the pre-training set's leakage into ``dataset``'s test set."""
    import numpy as np

    from cmcl_model.finetune.labelled import scaffold_of
    from cmcl_model.finetune.records import leakage
    from pipeline.chem.standardize import standardize_smiles

    info = encoders.info.get(init)
    if info is None:
        return
    entry = doc["encoders"].setdefault(init, {"description": info["description"], "n_molecules": 0,
                                              "source": info["shown"], "architecture": info["arch"], "leakage": {}})
    if dataset in entry["leakage"]:
        return
    keys, scaffolds = _store_training_set(info["store"])
    entry["n_molecules"] = len(keys)
    test = np.flatnonzero(np.asarray(split) == "test")
    parents = [standardize_smiles(data.input_smiles[i]) for i in test]
    entry["leakage"][dataset] = leakage([p.inchikey or "" for p in parents],
                                        [scaffold_of(p.smiles) if p.smiles else "" for p in parents], keys, scaffolds)


def run_cell(dataset: str, method: str, seed: int, *, prepared, encoders: Encoders, config, device,
             state: tuple[Path, str] | None = None) -> dict:
    """One cell's record fields (without commit, command); a GIN cell with ``state`` (path, key)
    writes its state after every epoch there and continues from it when started again
    (:mod:`cmcl_model.finetune.resume`)."""
    from cmcl_model.finetune.run import finetune_once, morgan_baseline

    data, split, graphs = prepared
    make = encoders.get(method.removeprefix("gin_")) if method.startswith("gin_") else None  # pre-training not timed
    t0 = time.perf_counter()
    if make is not None:
        last = [time.perf_counter()]

        def tick(epoch: int, epochs: int, val: float) -> None:
            if epoch % 10 == 0 or epoch == epochs:
                now = time.perf_counter()
                print(f"  {dataset} {method} seed {seed}: epoch {epoch}/{epochs} val {val:.3f} "
                      f"({now - t0:.0f} s, {now - last[0]:.0f} s for the last 10 or fewer)", flush=True)
                last[0] = now

        def log(line: str) -> None:  # "epoch k: loss .. val .. test ..": every 5th epoch (a shorter run's last)
            if int(line.split(":", 1)[0].split()[1]) % 5 == 0:
                print(f"    {dataset} {method} seed {seed} {line}", flush=True)

        enc = make(seed).to(device)
        path, key = state if state else (None, "")
        if path is not None and path.is_file():
            print(f"  {dataset} {method} seed {seed}: continuing from {path}", flush=True)
        r = finetune_once(enc, data, split, config=config, seed=seed, device=device, graphs=graphs, on_epoch=tick,
                          log=log, state_path=path, state_key=key)
        return {"epochs": config.epochs, "test_last": r["test_last"], "test_best_val": r["test_best_val"],
                "best_epoch": r["best_epoch"], "val_last": r["curve"]["val"][-1],
                "per_task_test_last": r["per_task_test"] if config.select == "last" else None,
                "wall_s": r["wall_s"]}  # over every run of the cell, when it was continued
    r = morgan_baseline(data, split, model="linear" if method == "morgan_lr" else "forest", seed=seed)
    return {"epochs": None, "test_last": r["test"], "test_best_val": r["test"], "best_epoch": None, "val_last": r["val"],
            "per_task_test_last": r["per_task_test"], "wall_s": time.perf_counter() - t0}


def _cell_state(args, key: tuple, encoders: Encoders) -> tuple[Path, str]:
    """Where a GIN cell keeps its state between runs (``--partial-dir``), and the key that state
    must match: the cell, its initial encoder's source and the fine-tuning code."""
    from pipeline.store.provenance import code_fingerprint

    init = key[1].removeprefix("gin_")
    encoders.get(init)  # builds it now if needed, so that its source is known (and the same) on every run
    source = encoders.info.get({"random_demo": "demo"}.get(init, init), {}).get("source", "")
    name = "-".join(str(k) for k in key) + ".pt"
    return Path(args.partial_dir) / name, json.dumps([list(key), str(source), code_fingerprint(
        "cmcl_model.finetune.run", "cmcl_model.finetune.featurizers")])


@contextlib.contextmanager
def _locked(path: Path, *, wait: bool):
    """An exclusive ``flock`` on ``path`` for the block; with ``wait=False`` yields False at once
    when another process holds it. The kernel drops the lock when its process ends, however it
    ends, so a killed run leaves no stale lock."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cell_lock(args, key: tuple) -> Path:
    """The lock a run holds while it runs one cell (``<partial-dir>/<cell>.lock``), so that two runs
    sharing ``--out`` and ``--partial-dir`` never train the same cell, and write its one partial
    state, at once."""
    return Path(args.partial_dir) / ("-".join(str(k) for k in key) + ".lock")


def _finish_record(rec: dict, args, d: str, m: str, s: int, *, commit: str, threads: int) -> dict:
    """A cell's result with what identifies it: dataset, method, seed, protocol, commit, command."""
    rec.update(dataset=d, method=m, seed=s, protocol=args.protocol, metric="roc_auc", commit=commit,
               command=_cell_command(args, d, m, s), threads=threads, precision=args.precision,
               finished=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    if m.startswith("gin_"):
        rec.update(featurizer=args.featurizer, conv="selfloop" if args.featurizer == "hu2020" else "gine")
    if rec["per_task_test_last"] is None:
        rec.pop("per_task_test_last")
    return rec


def _merged(on_disk: dict, mine: dict) -> dict:
    """``on_disk`` plus the records and encoders of ``mine`` it lacks (a cell in both: the disk's)."""
    from cmcl_model.finetune.records import add_record, cell_key, finished_keys

    have = finished_keys(on_disk)
    for r in mine["records"]:
        if cell_key(r) not in have:
            add_record(on_disk, r)
    for name, e in mine.get("encoders", {}).items():
        on_disk.setdefault("encoders", {}).setdefault(name, e)
    return on_disk


def _cell_command(args, dataset: str, method: str, seed: int) -> str:
    cmd = (f"PYTHONPATH=. python benchmarks/finetune.py --datasets {dataset} --methods {method} --seeds {seed} "
           f"--epochs {args.epochs} --protocol {args.protocol} --threads {args.threads}")
    if args.featurizer != PROTOCOL_MODEL[args.protocol][0]:
        cmd += f" --featurizer {args.featurizer}"
    if args.precision != "fp32":
        cmd += f" --precision {args.precision}"
    if method in ("gin_demo", "gin_random_demo", "gin_ssl"):
        cmd += f" --demo-store {_shown(args.demo_store, 'DEMO_STORE')}"
    if method == "gin_profiles":
        cmd += f" --profile-run {_shown(args.profile_run, 'PROFILE_RUN')}"
    return cmd


def _shown(path, placeholder: str) -> str:
    """``path`` as a record shows it: relative to the repository when inside it, else ``placeholder``
    (records carry no machine's folders; DEMO_STORE is any folder, where the benchmark runs `cmcl
    demo` when it holds no run; PROFILE_RUN a run directory of `cmcl demo --real --store PROFILE_STORE`)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(ROOT.resolve()))
    except ValueError:
        return placeholder


def _write_markdown(doc: dict, args, datasets: list[str], methods: list[str], seeds: list[int]) -> None:
    from cmcl_model.finetune.records import render_markdown

    md = Path(args.out).with_suffix(".md")
    pre = (Path(ROOT / "docs" / "transfer_intro.md").read_text() if (ROOT / "docs" / "transfer_intro.md").is_file()
           else "# MoleculeNet transfer")
    # every protocol recorded gets its tables: hu2020 (the reproduction) first, then cmcl (the
    # comparison rows, which need OGB features); the run's own protocol uses the run's methods
    parts = []
    for protocol in ("hu2020", "cmcl"):
        if protocol != args.protocol and not any(r["protocol"] == protocol for r in doc["records"]):
            continue
        featurizer = args.featurizer if protocol == args.protocol else PROTOCOL_MODEL[protocol][0]
        ms = methods if protocol == args.protocol else (DEFAULT_METHODS if featurizer == "ogb" else HU2020_METHODS).split(",")
        recorded = {r["method"] for r in doc["records"] if r["protocol"] == protocol}
        ms = [*ms, *(m for m in DESCRIPTIONS if m in recorded and m not in ms)]  # e.g. gin_profiles, run on its own
        parts.append(render_markdown(doc, datasets=datasets, methods=ms, protocol=protocol, epochs=args.epochs,
                                     seeds={m: (1 if m == "morgan_lr" else len(seeds)) for m in ms},
                                     descriptions=DESCRIPTIONS, preamble=pre if not parts else "",
                                     featurizer=featurizer))
    md.write_text("\n".join(parts))


def accumulate(args) -> int:
    import torch

    from cmcl_model.finetune.run import FinetuneConfig, GraphTensors
    from cmcl_model.finetune.labelled import load_shipped, prepare_labelled, split_molecules
    from cmcl_model.finetune.records import add_record, cell_key, finished_keys, load_records, save_records

    datasets = [d for d in args.datasets.split(",") if d]
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    conv = "selfloop" if args.featurizer == "hu2020" else "gine"
    config = FinetuneConfig(epochs=args.epochs, precision=args.precision, conv=conv)
    device = torch.device("cpu")
    doc = load_records(args.out)
    done = finished_keys(doc)
    encoders = Encoders(args, config, device)
    prepared: dict = {}
    deadline = time.monotonic() + 60 * args.budget_minutes if args.budget_minutes is not None else None
    commit = _commit()
    ran = 0
    for d, m, s in plan_cells(datasets, methods, seeds):
        gin = m.startswith("gin_")
        key = cell_key({"dataset": d, "method": m, "seed": s, "epochs": args.epochs if gin else None,
                        "protocol": args.protocol, "featurizer": args.featurizer if gin else None,
                        "precision": args.precision})
        if key in done or key in finished_keys(load_records(args.out)):  # this run's, or another's since it started
            continue
        if deadline is not None and time.monotonic() > deadline:
            print(f"budget of {args.budget_minutes} min spent: stopping before {d} {m} seed {s}", flush=True)
            break
        if d not in prepared:
            frame, spec = load_shipped(d)
            data = prepare_labelled(frame, smiles_col=spec.smiles_col, tasks=spec.tasks, kind=spec.kind, name=d,
                                    protocol=args.protocol, featurizer=args.featurizer)
            split = split_molecules(data.smiles, mode="scaffold")
            prepared[d] = (data, split, GraphTensors(data.graphs, device))
        with _locked(_cell_lock(args, key), wait=False) as mine:
            if not mine:
                print(f"{d} {m} seed {s}: another run is on this cell; skipping it", flush=True)
                continue
            if key in finished_keys(load_records(args.out)):  # finished while this run waited
                continue
            rec = run_cell(d, m, s, prepared=prepared[d], encoders=encoders, config=config, device=device,
                           state=_cell_state(args, key, encoders) if gin else None)
            rec = _finish_record(rec, args, d, m, s, commit=commit, threads=torch.get_num_threads())
            # read the file again just before writing it, under its lock: another run (another protocol,
            # another method list, another seed) may have recorded cells in it since this one started
            with _locked(Path(f"{args.out}.lock"), wait=True):
                doc = _merged(load_records(args.out), doc)
                add_record(doc, rec)
                init = m.removeprefix("gin_")
                if init in ("demo", "ssl", "profiles"):
                    _record_leakage(doc, encoders, init, d, prepared[d][0], prepared[d][1])
                save_records(doc, args.out)
        _write_markdown(doc, args, datasets, methods, seeds)
        ran += 1
        print(f"{d} {m} seed {s}: test {100 * rec['test_last']:.1f} (last) {100 * rec['test_best_val']:.1f} "
              f"(best val, epoch {rec['best_epoch']}) in {rec['wall_s']:.0f} s", flush=True)
    _write_markdown(doc, args, datasets, methods, seeds)
    print(f"{ran} cell(s) run, {len(doc['records'])} recorded in {args.out}; threads {torch.get_num_threads()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="bbbp,clintox,bace,sider,tox21")
    ap.add_argument("--methods", default=None,
                    help=f"default: {DEFAULT_METHODS} (protocol cmcl), {HU2020_METHODS} (protocol hu2020)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--protocol", default="hu2020", choices=("hu2020", "cmcl"))
    ap.add_argument("--featurizer", default=None, choices=("ogb", "hu2020"),
                    help="GIN features (default: the protocol's, hu2020 -> hu2020, cmcl -> ogb)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--budget-minutes", type=float, default=None, help="stop between cells after this long")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (intra-op); inter-op is set to 1")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "transfer.json")
    ap.add_argument("--demo-store", type=Path, default=ROOT / "transfer-demo-store",
                    help="store holding (or receiving) the `cmcl demo` run of gin_demo / gin_ssl / gin_random_demo")
    ap.add_argument("--profile-run", type=Path, default=None, help="run directory of gin_profiles")
    ap.add_argument("--speed", action="store_true", help="measure the step against the matmul peak and exit")
    ap.add_argument("--speed-epochs", type=int, default=2)
    ap.add_argument("--partial-dir", default=None,
                    help="where GIN cells keep their state after every epoch, so that a stopped run continues "
                         "them (default: beside --out, <out>.partial/)")
    ap.add_argument("--render", action="store_true", help="only regenerate the .md beside --out from its JSON")
    args = ap.parse_args(argv)
    args.featurizer = args.featurizer or PROTOCOL_MODEL[args.protocol][0]
    args.partial_dir = args.partial_dir or f"{args.out}.partial"
    args.methods = args.methods or (DEFAULT_METHODS if args.featurizer == "ogb" else HU2020_METHODS)
    pretrained = [m for m in args.methods.split(",") if m.startswith("gin_") and m != "gin_random"]
    if args.featurizer != "ogb" and pretrained and not args.render:
        ap.error(f"{', '.join(pretrained)} read OGB features (cmcl's pre-trained encoders): run them with "
                 "--protocol cmcl, or leave them out of --methods")
    if args.render:
        from cmcl_model.finetune.records import load_records

        _write_markdown(load_records(args.out), args, [d for d in args.datasets.split(",") if d],
                        [m for m in args.methods.split(",") if m], [int(s) for s in args.seeds.split(",") if s])
        return 0

    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process (a second call from the tests)
        pass
    if args.speed:
        from finetune_speed import speed  # benchmarks/ is the script's directory

        return speed(epochs=args.speed_epochs, protocol=args.protocol, featurizer=args.featurizer)
    return accumulate(args)


if __name__ == "__main__":
    raise SystemExit(main())
