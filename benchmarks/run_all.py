"""Every stage's benchmark at a small size, in one table: our throughput, the peer's, their ratio.

Each benchmark runs as a child process with a timeout (a hung or failed stage is reported, the
others still run); its printed output is parsed:

=============  ==============================================  ==========================================
stage          cmcl                                            peer
=============  ==============================================  ==========================================
ingest         ingest_plate (every write, 2 processes), fields/s  plain 2-process scikit-image script
segmentation   segment nuclei + cells + crops, fields/s        plain scikit-image script
standardize    standardize_table (1 process), mol/s            ChEMBL structure pipeline
featurize      pipeline.chem.graphs.smiles_to_graph, mol/s          ogb.utils.smiles2graph
loader         training data loader alone, samples/s           trainer model step, samples/s
start-up       ``cmcl compounds`` on one molecule, verbs/min    the same in Prefect's ephemeral mode
ingest command ``cmcl -q ingest`` whole command, fields/s       plain 2-process scikit-image script
profile load   ProfileDataset over Parquet profiles, rows/s    pandas.concat(read_parquet), rows/s
=============  ==============================================  ==========================================

A ratio above 1 means cmcl is faster than its peer (for the loader: the loader keeps up with the
model). Sizes are chosen so the whole run takes a few minutes on 2 idle cores.

Usage: ``python benchmarks/run_all.py [--timeout 240] [--only ingest,segment,...] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

_COMPOUNDS_CHILD = (
    "import sys, json; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]);"
    "import importlib.util as u; spec = u.spec_from_file_location('bench_compounds', sys.argv[3]);"
    "m = u.module_from_spec(spec); spec.loader.exec_module(m);"
    "t = m.main(n=int(sys.argv[4]));"
    "print('RESULT ' + t.to_json(orient='records'))"
)

#: name -> (argv after the interpreter, unit)
BENCHMARKS: dict[str, tuple[list[str], str]] = {
    "ingest": ([str(HERE / "ingest.py"), "--size", "540", "--fields", "16", "--unique", "16"], "fields/s"),
    "segment": ([str(HERE / "segment.py"), "--size", "256", "--fields", "2"], "fields/s"),
    "compounds": (["-c", _COMPOUNDS_CHILD, str(REPO), str(HERE), str(HERE / "compounds.py"), "600"], "mol/s"),
    "train": ([str(HERE / "train.py"), "--preset", "quick", "--steps", "4", "--compounds", "80"], "samples/s"),
    "startup": ([str(HERE / "startup.py"), "--fields", "16", "--repeats", "2"], "verbs/min"),
    "profiles": ([str(HERE / "profiles_train.py"), "--compounds", "2000", "--steps", "3", "--preset", "demo"], "rows/s"),
}


def _num(pattern: str, text: str) -> float:
    m = re.search(pattern, text, re.MULTILINE)
    if m is None:
        raise ValueError(f"benchmark output has no match for {pattern!r}")
    return float(m.group(1).replace(",", ""))


def _parse(name: str, out: str) -> list[dict]:
    """Rows (stage, cmcl, peer, unit, cmcl_name, peer_name) from one benchmark's stdout."""
    if name == "ingest":
        ours = _num(r"^cmcl ingest_plate \(features none\)\s+\S+\s+(\S+)", out)
        peer = _num(r"^plain script \(skimage, \.npy\)\s+\S+\s+(\S+)", out)
        return [dict(stage="ingest", cmcl=ours, peer=peer, unit="fields/s", cmcl_name="ingest_plate, every write",
                     peer_name="plain 2-process skimage script")]
    if name == "segment":
        lines = [ln for ln in out.splitlines() if re.match(r"^\S.*\s\d+\.\d+\s+\d+\.\d+x", ln)]
        rows = {ln[:36].strip(): float(ln[36:].split()[0]) for ln in lines}
        ours = next(v for k, v in rows.items() if k.startswith("cmcl"))
        peer = next(v for k, v in rows.items() if k.startswith("skimage") or "scikit" in k)
        return [dict(stage="segmentation", cmcl=ours, peer=peer, unit="fields/s", cmcl_name="cmcl segment + tile",
                     peer_name="plain scikit-image script")]
    if name == "compounds":
        table = json.loads([ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1][len("RESULT "):])
        by = {r["implementation"]: r for r in table}
        std, feat = by["cmcl n_jobs=1"], by["cmcl smiles_to_graph"]
        return [dict(stage="standardize", cmcl=std["mol_per_s"], peer=std["reference_mol_per_s"], unit="mol/s",
                     cmcl_name="standardize_table n_jobs=1", peer_name="ChEMBL structure pipeline"),
                dict(stage="featurize", cmcl=feat["mol_per_s"], peer=feat["reference_mol_per_s"], unit="mol/s",
                     cmcl_name="smiles_to_graph", peer_name="ogb smiles2graph")]
    if name == "train":
        loader = _num(r"^loader, \d+ workers:\s+([\d.,]+) samples/s", out)
        model = _num(r"^model step \w+ \(median\):.*?([\d.,]+) samples/s", out)
        return [dict(stage="loader", cmcl=loader, peer=model, unit="samples/s", cmcl_name="data loader alone",
                     peer_name="trainer model step")]
    if name == "startup":
        warm = _num(r"^fixed start-up warm: ([\d.]+) s", out)
        ephemeral = _num(r"^\s*ephemeral \(.*?:\s+([\d.]+)$", out)
        fields = _num(r"whole command, (\d+) real-size fields", out)
        rows = [dict(stage="start-up", cmcl=60 / warm, peer=60 / ephemeral, unit="verbs/min",
                     cmcl_name="`cmcl compounds` (1 molecule), background server", peer_name="Prefect ephemeral mode")]
        for feats in ("none", "default"):
            script = _num(rf"^\s*features {feats}\s+script\s+([\d.]+) s", out)
            cli = _num(rf"^\s*features {feats}\s+script\s+[\d.]+ s\s+cmcl ingest\s+([\d.]+) s", out)
            rows.append(dict(stage=f"ingest command{'' if feats == 'none' else ' +features'}", cmcl=fields / cli,
                             peer=fields / script, unit="fields/s", cmcl_name=f"`cmcl -q ingest --features {feats}`",
                             peer_name="plain 2-process skimage script"))
        return rows
    if name == "profiles":
        r = json.loads(out[out.index("{"):])
        rows = r["compounds"] * r["replicates"]
        return [dict(stage="profile load", cmcl=rows / r["cmcl"]["load_s"], peer=rows / r["peer"]["load_s"], unit="rows/s",
                     cmcl_name="ProfileDataset (float32, standardized, graphs)", peer_name="pandas concat(read_parquet)")]
    raise KeyError(f"no parser for benchmark {name!r}; known: {', '.join(BENCHMARKS)}")


def run_one(name: str, *, timeout: float) -> tuple[list[dict], float, str | None]:
    """Run benchmark ``name`` in a child; its rows, wall seconds and error (None if it worked)."""
    argv, _ = BENCHMARKS[name]
    t0 = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return [], time.perf_counter() - t0, f"timed out after {timeout:.0f} s"
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        return [], wall, f"exit {out.returncode}: {(out.stderr.strip().splitlines() or ['?'])[-1]}"
    try:
        return _parse(name, out.stdout), wall, None
    except (ValueError, KeyError, StopIteration, IndexError) as exc:
        return [], wall, f"could not parse its output ({exc})"


def run(names: list[str] | None = None, *, timeout: float = 240) -> list[dict]:
    """All rows of the summary table; failed benchmarks give one row with ``error`` set."""
    rows = []
    for name in names or list(BENCHMARKS):
        got, wall, err = run_one(name, timeout=timeout)
        if err:
            rows.append(dict(stage=name, cmcl=float("nan"), peer=float("nan"), unit=BENCHMARKS[name][1],
                             ratio=float("nan"), seconds=wall, error=err))
        for r in got:
            rows.append({**r, "ratio": r["cmcl"] / r["peer"] if r["peer"] else float("nan"), "seconds": wall,
                         "error": None})
        print(f"[{name}] {wall:.0f} s" + (f" FAILED: {err}" if err else ""), file=sys.stderr, flush=True)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'stage':<14}{'cmcl':>10}{'peer':>10}{'ratio':>8}  {'unit':<10}{'cmcl vs peer'}")
    for r in rows:
        if r["error"]:
            print(f"{r['stage']:<14}{'-':>10}{'-':>10}{'-':>8}  {r['unit']:<10}FAILED: {r['error']}")
        else:
            print(f"{r['stage']:<14}{r['cmcl']:>10.1f}{r['peer']:>10.1f}{r['ratio']:>8.2f}  {r['unit']:<10}"
                  f"{r['cmcl_name']} vs {r['peer_name']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=240, help="seconds per benchmark (default 240)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else None
    for n in names or []:
        if n not in BENCHMARKS:
            ap.error(f"unknown benchmark {n!r}; known: {', '.join(BENCHMARKS)}")
    t0 = time.perf_counter()
    rows = run(names, timeout=args.timeout)
    print_table(rows)
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
