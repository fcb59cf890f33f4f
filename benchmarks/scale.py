"""Scaling of ingestion with the number of plates: time should grow linearly, memory stay flat.

Generates ``max(--plates)`` plates once (not timed), then for each configuration (default 1, 2
and 4 plates) runs :func:`pipeline.ingest.run.ingest_plate` on that many plates in a fresh child
process and a fresh store. The child reports each stage's seconds (``PlateResult.seconds``) and
its peak resident memory (``ru_maxrss``) after every plate. Prints one row per configuration:
total and per-stage seconds, seconds per plate, peak RSS, and growth against the first row.

Optionally (``--dask``) the largest configuration is also run through ``flows.parallel`` with
two Dask workers, when that module and prefect-dask are importable.

Usage: ``python benchmarks/scale.py [--plates 1,2,4] [--wells 24] [--sites 1] [--size 256]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from pipeline.ingest.run import IngestSettings, ingest_plate
from pipeline.store.paths import Store
store = Store(sys.argv[2]); plates = sys.argv[3:]
settings = IngestSettings(crop_size=32)
stages, rss = {}, []
t0 = time.perf_counter()
for p in plates:
    r = ingest_plate(p, store, settings, processes=1)
    assert r.status == "complete", r
    for k, v in r.seconds.items():
        stages[k] = stages.get(k, 0.0) + v
    rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print("RESULT " + json.dumps({"total": time.perf_counter() - t0, "stages": stages, "rss_mb": rss}))
"""


def run_config(plates: list[Path], store: Path) -> dict:
    """Ingest ``plates`` into ``store`` in a child process; its timings and peak RSS (MB)."""
    out = subprocess.run([sys.executable, "-c", _CHILD, str(REPO), str(store), *map(str, plates)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child ingest of {len(plates)} plate(s) failed:\n{out.stderr[-3000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def run_dask(plates: list[Path], store: Path) -> dict | None:
    """The same ingest through ``flows.parallel.ingest_plates`` on 2 Dask workers, or None if
    ``flows.parallel`` or prefect-dask is not importable."""
    try:
        import prefect_dask  # noqa: F401

        from flows.parallel import ingest_plates
    except ImportError:
        return None
    t0 = time.perf_counter()
    results = ingest_plates([str(p) for p in plates], str(store), settings={"crop_size": 32}, workers=2)
    assert all(r["status"] == "complete" for r in results), results
    return {"total": time.perf_counter() - t0}


def run(plates: tuple[int, ...] = (1, 2, 4), *, wells: int = 24, sites: int = 1, size: int = 256,
        dask: bool = False) -> list[dict]:
    """Rows of the scaling table (one per configuration)."""
    from pipeline.synthetic import generate

    rows = []
    with tempfile.TemporaryDirectory(prefix="cmcl-scale-") as tmp:
        tmp = Path(tmp)
        dirs = [generate(tmp / "inbox", plate_id=f"S{i}", n_wells=wells, sites=sites, size=size, seed=i)
                for i in range(max(plates))]
        for n in plates:
            res = run_config(dirs[:n], tmp / f"store{n}")
            rows.append({"plates": n, "fields": n * wells * sites, "seconds": res["total"],
                         "per_plate_s": res["total"] / n, **{f"{k}_s": v for k, v in res["stages"].items()},
                         "peak_rss_mb": max(res["rss_mb"]), "rss_after_each_mb": res["rss_mb"]})
        if dask:
            res = run_dask(dirs[:max(plates)], tmp / "store-dask")
            if res is not None:
                rows.append({"plates": max(plates), "fields": max(plates) * wells * sites, "seconds": res["total"],
                             "per_plate_s": res["total"] / max(plates), "peak_rss_mb": float("nan"),
                             "mode": "dask x2"})
    base = rows[0]
    for r in rows:
        r["time_growth"] = r["seconds"] / base["seconds"]
        r["rss_growth_pct"] = 100 * (r["peak_rss_mb"] / base["peak_rss_mb"] - 1)
    return rows


def print_table(rows: list[dict]) -> None:
    stages = [k for k in rows[0] if k.endswith("_s") and k not in ("seconds", "per_plate_s")]
    head = ["mode", "plates", "fields", "total s", "s/plate", *stages, "time x", "peak RSS MB", "RSS growth %"]
    print(" | ".join(f"{h:>12}" for h in head))
    for r in rows:
        vals = [r.get("mode", "serial"), r["plates"], r["fields"], f"{r['seconds']:.1f}", f"{r['per_plate_s']:.2f}",
                *(f"{r.get(s, float('nan')):.2f}" for s in stages), f"{r['time_growth']:.2f}",
                f"{r['peak_rss_mb']:.0f}", f"{r['rss_growth_pct']:+.1f}"]
        print(" | ".join(f"{v:>12}" for v in vals))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plates", default="1,2,4", help="comma-separated plate counts (default 1,2,4)")
    ap.add_argument("--wells", type=int, default=24)
    ap.add_argument("--sites", type=int, default=1)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--dask", action="store_true", help="also run the largest count on 2 Dask workers")
    args = ap.parse_args(argv)
    rows = run(tuple(int(x) for x in args.plates.split(",")), wells=args.wells, sites=args.sites,
               size=args.size, dask=args.dask)
    print_table(rows)
    last = [r for r in rows if r.get("mode", "serial") == "serial"][-1]
    print(f"\n{last['plates']} plates: time x{last['time_growth']:.2f} (linear would be x{last['plates']}), "
          f"peak RSS {last['rss_growth_pct']:+.1f}% (target < 10%)")
    return rows


if __name__ == "__main__":
    main()
