"""A verb's fixed start-up, and the whole ``cmcl ingest`` command beside a plain script, in one run.

In a Prefect home of its own (a temporary folder; no API configured, nothing started by hand):

* ``cmcl compounds`` on one molecule, whole command (process start to exit, the ``cmcl`` script users run):
  **ephemeral**: ``CMCL_REUSE_SERVER=0 CMCL_WARM=0``, Prefect's temporary API server started and stopped by
  the verb, all in its own process (what every verb paid before cmcl started a server of its own);
  **first**: no server running: the verb starts the background ``cmcl server`` and uses it, and starts the
  warm helper (:mod:`flows.warm`), which imports once that verb has ended;
  **warm**: later verbs, run by the helper's forked children on the server (``--repeats`` runs: median and
  range), once the helper is ready (the seconds it took are printed).
* ``cmcl -q ingest`` of ``--fields`` real-size fields (the real JUMP field of tests/data repeated, as
  ``benchmarks/ingest.py --real`` builds them) with ``--features none`` and with the default features,
  whole command on the warm server and helper, each beside the plain 2-process script of ``benchmarks/ingest.py``
  (same plate, same run, alternating, medians): ratio = script seconds / cmcl seconds (>= 1: cmcl as
  fast as the script while writing everything it writes). The script is timed both inside its
  process (after its imports, as ``benchmarks/ingest.py`` reports it) and as a whole process (what
  a user running it waits, comparable with the whole ``cmcl`` command).

The background server is stopped at the end (``cmcl server stop``) and the temporary home removed.

Usage: ``python benchmarks/startup.py [--fields 40] [--repeats 3] [--ingest-repeats 3] [--no-ingest] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import ingest as bench_ingest  # noqa: E402  (benchmarks/ingest.py: plate builder, plain script, CLI child)

#: The ``cmcl`` command users run (its entry point, flows.launch, hands commands to the warm helper).
CMCL = [str(Path(sys.executable).with_name("cmcl"))] if Path(sys.executable).with_name("cmcl").exists() \
    else [sys.executable, "-m", "flows.launch"]


def _cmcl_seconds(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([*CMCL, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"cmcl {' '.join(args)} failed:\n{(out.stdout + out.stderr)[-3000:]}")
    return seconds, out.stdout + out.stderr


def _wait_for_helper(timeout: float = 120.0) -> float:
    """Seconds until the warm helper the first verb started is ready (it imports once that verb ended)."""
    from flows.warm import helpers

    t0 = time.perf_counter()
    while not helpers() or any(h.get("state") != "ready" for h in helpers()):
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError("the warm helper did not get ready")
        time.sleep(0.1)
    return time.perf_counter() - t0


def compounds_startup(work: Path, env: dict[str, str], *, repeats: int) -> dict[str, list[float]]:
    """Seconds of ``cmcl compounds`` on one molecule: ephemeral, first (starts the server), warm."""
    smi = work / "one.smi"
    smi.write_text("CCO ethanol\n")
    args = lambda i: ["compounds", str(smi), "--store", str(work / f"store{i}")]  # noqa: E731
    out: dict[str, list[float]] = {"ephemeral": [], "first": [], "warm": []}
    out["ephemeral"].append(_cmcl_seconds(args(0), {**env, "CMCL_REUSE_SERVER": "0", "CMCL_WARM": "0"}, work)[0])
    seconds, text = _cmcl_seconds(args(1), env, work)
    if "started a background `cmcl server`" not in text:
        raise RuntimeError(f"the first verb did not start the background server:\n{text[-2000:]}")
    out["first"].append(seconds)
    if "starting a warm helper" in text:
        out["helper_ready_s"] = [_wait_for_helper()]
    for i in range(repeats):
        seconds, text = _cmcl_seconds(args(2 + i), env, work)
        if "the running `cmcl server`" not in text:
            raise RuntimeError(f"a later verb did not reuse the server:\n{text[-2000:]}")
        out["warm"].append(seconds)
    return out


#: What the plain script itself imports (benchmarks/ingest.py's run_script and segment.py's skimage_peer).
SCRIPT_IMPORTS = ("import multiprocessing, numpy, tifffile, scipy.ndimage, skimage.feature, skimage.filters, "
                  "skimage.segmentation")


def _script_start_seconds() -> float:
    """Seconds a plain script's process takes to start and import what it uses: its
    measurement child imports cmcl's benchmark helpers too, so its own wall time would overstate
    a plain script's start."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", SCRIPT_IMPORTS], check=True)
    return time.perf_counter() - t0


def _whole_script_seconds(plate: Path, out: Path) -> tuple[float, float]:
    """(seconds inside the plain script, and its whole process: those plus
    :func:`_script_start_seconds`, as a user running it would wait)."""
    inside = bench_ingest.measure("script", plate, out, 2, "none")["seconds"]
    return inside, inside + _script_start_seconds()


def ingest_ratios(work: Path, *, fields: int, repeats: int) -> list[dict]:
    """Per feature set: the plain script (inside, whole process) and the whole ``cmcl -q
    ingest`` command on ``fields`` real-size fields, ``repeats`` times each, alternating (a
    shared machine's load then hits both alike)."""
    plate = bench_ingest.make_real_plate(work / "in", fields=fields)
    rows = []
    for features in ("none", "default"):
        inside, whole, cli = [], [], []
        for _ in range(repeats):
            a, b = _whole_script_seconds(plate, work / "script")
            inside.append(a)
            whole.append(b)
            cli.append(bench_ingest.measure("cli", plate, work / f"store_cli_{features}", 2, features)["seconds"])
        rows.append(dict(features=features, inside=inside, whole=whole, cli=cli))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fields", type=int, default=40, help="real-size fields for the ingest (default 40)")
    ap.add_argument("--repeats", type=int, default=3, help="warm `cmcl compounds` runs (default 3)")
    ap.add_argument("--ingest-repeats", type=int, default=3,
                    help="script and `cmcl ingest` runs per feature set, alternating (default 3): medians and ratios")
    ap.add_argument("--no-ingest", action="store_true", help="only the `cmcl compounds` start-up")
    ap.add_argument("--keep", type=Path, default=None, help="work in DIR and keep it")
    args = ap.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="cmcl-startup-"))
    work.mkdir(parents=True, exist_ok=True)
    home = work / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(home), CMCL_REUSE_SERVER="1", CMCL_PROGRESS="0",
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # benchmarks/ingest.py's children (`cmcl -q ingest`) inherit it: the warm server
    try:
        print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at start")
        c = compounds_startup(work, env, repeats=args.repeats)
        print("`cmcl compounds` on one molecule, whole command (s):")
        print(f"  ephemeral (Prefect temporary server, CMCL_REUSE_SERVER=0): {c['ephemeral'][0]:.2f}")
        print(f"  first (starts the background cmcl server):                {c['first'][0]:.2f}")
        print(f"  warm (reuses it), median of {len(c['warm'])}:                        "
              f"{statistics.median(c['warm']):.2f} (range {min(c['warm']):.2f}-{max(c['warm']):.2f})")
        if c.get("helper_ready_s"):
            print(f"  (the warm helper the first verb started was ready {c['helper_ready_s'][0]:.1f} s after it)")
        print(f"fixed start-up warm: {statistics.median(c['warm']):.2f} s; "
              f"ephemeral / warm: {c['ephemeral'][0] / statistics.median(c['warm']):.1f}x")
        if not args.no_ingest:
            print(f"`cmcl -q ingest`, whole command, {args.fields} real-size fields (real JUMP field repeated), "
                  f"warm server, beside the plain 2-process script; medians of {args.ingest_repeats} alternating runs "
                  "(ratio = script seconds / cmcl seconds: script timed inside its process, as benchmarks/ingest.py "
                  "does, and as its whole process):")
            med = statistics.median
            for r in ingest_ratios(work, fields=args.fields, repeats=args.ingest_repeats):
                print(f"  features {r['features']:<8} script {med(r['inside']):5.1f} s inside, {med(r['whole']):5.1f} s "
                      f"whole  cmcl ingest {med(r['cli']):5.1f} s (range {min(r['cli']):.1f}-{max(r['cli']):.1f}; "
                      f"{args.fields / med(r['cli']):.2f} fields/s)  ratio {med(r['inside']) / med(r['cli']):.2f} "
                      f"(inside), {med(r['whole']) / med(r['cli']):.2f} (whole)")
        print(f"load average {os.getloadavg()[0]:.1f} at end")
    finally:
        subprocess.run([*CMCL, "server", "stop"], env=env, cwd=work, capture_output=True, timeout=120)
        os.environ.clear()
        os.environ.update(saved)
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
