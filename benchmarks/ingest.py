"""Whole-plate image throughput: ``cmcl`` ingestion beside a plain 2-process script, one run.

Generates a plate of real-size fields (not timed; ``--fields`` beyond ``--unique`` reuses the
generated fields' files under further well names, hard-linked), then measures, each in a fresh
child process on the same files:

* **script**: a plain scikit-image script with ``--processes`` processes (``multiprocessing``):
  pass 1 reads every field and sums it per channel (illumination = the smoothed mean, divided
  by its minimum); pass 2 reads every field again, corrects it, segments nuclei (Otsu +
  distance-transform watershed) and cells (watershed from the nuclei), cuts 64 px crops around
  the nuclei and saves them to ``.npy``. Its segmentation is ``benchmarks/segment.py``'s peer.
* **cmcl**: :func:`pipeline.ingest.run.ingest_plate` with every write cmcl makes (validation and
  quarantine, lossless OME-Zarr v0.5 of every field, illumination functions with dark offset,
  flatness QC and PNGs, NGFF labels, crops in sharded Zarr, per-cell and per-field tables,
  ledger), ``--features none`` unless ``--features`` says otherwise, with the per-step seconds of
  its worker processes (``PlateResult.worker_seconds``) as the profile;
* with ``--cli``: ``cmcl -q ingest`` of the same folder, the whole command (Prefect flow on the API
  the environment gives it: a running or background ``cmcl server``, or Prefect's temporary server
  with ``CMCL_REUSE_SERVER=0``), so the fixed start-up shows as the difference
  (``benchmarks/startup.py`` measures it on a server of its own).

Prints fields/s, the ratio cmcl / script (>= 1 means cmcl is as fast as the script while writing
everything it writes), and the peak RSS of the main process and of the largest worker.

Usage: ``python benchmarks/ingest.py [--fields 40] [--unique 40] [--size 1080] [--processes 2]
[--features none|default] [--cli] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from segment import skimage_peer  # noqa: E402  (imported before the script's workers fork)

CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")


# --------------------------------------------------------------------------- the plain script
#: the real Phenix field's channels in DNA, ER, RNA, AGP, Mito order (ch1 is brightfield)
REAL_CHANNELS = (5, 2, 6, 3, 4)
REAL_MAP = "DNA=5,ER=2,RNA=6,AGP=3,Mito=4"
REAL_FIELD = REPO / "tests" / "data" / "phenix_BR00143976_C03" / "Images"


def _script_fields(plate_dir: Path) -> list[list[Path]]:
    """Files of each field in DNA, ER, RNA, AGP, Mito order: ImageXpress w1..w5 (thumbnails
    skipped) or Phenix chN in :data:`REAL_CHANNELS` order."""
    import re

    groups: dict[tuple[str, str], dict[int, Path]] = {}
    for p in sorted(plate_dir.rglob("*.tif*")):
        m = re.match(r".*_([A-P]\d\d)_s(\d+)_w(\d)[0-9A-F]", p.name)
        if m and "_thumb" not in p.name:
            groups.setdefault((m.group(1), m.group(2)), {})[int(m.group(3))] = p
            continue
        m = re.match(r"r(\d\d)c(\d\d)f(\d\d)p01-ch(\d)", p.name)
        if m:
            groups.setdefault((m.group(1) + m.group(2), m.group(3)), {})[REAL_CHANNELS.index(int(m.group(4))) + 1
                                                                          if int(m.group(4)) in REAL_CHANNELS else 0] = p
    return [[g[c] for c in range(1, 6)] for _, g in sorted(groups.items())]


def _script_sum(files_list: list[list[str]]):
    import numpy as np
    import tifffile

    total = None
    for files in files_list:
        image = np.stack([tifffile.imread(f) for f in files]).astype(np.float64)
        total = image if total is None else total + image
    return total, len(files_list)


def _script_segment(args):
    import numpy as np
    import tifffile
    from scipy import ndimage as ndi

    files, func_path, out = args
    func = np.load(func_path)
    image = np.stack([tifffile.imread(f) for f in files]).astype(np.float32) / func
    nuclei, cells = skimage_peer(image[0], image[3])  # the plain recipe of benchmarks/segment.py
    ids = np.arange(1, int(nuclei.max()) + 1)
    centres = np.rint(np.array(ndi.center_of_mass(np.ones_like(nuclei), nuclei, ids)).reshape(-1, 2)).astype(int)
    h = 32
    keep = [(y, x) for y, x in centres if h <= y <= nuclei.shape[0] - h and h <= x <= nuclei.shape[1] - h]
    crops = np.stack([image[:, y - h:y + h, x - h:x + h] for y, x in keep]) if keep else np.zeros((0, 5, 64, 64))
    np.save(out, np.clip(np.rint(crops), 0, 65535).astype(np.uint16))
    np.save(out.replace(".npy", "_cells.npy"), cells.astype(np.uint32))
    return len(keep)


def run_script(plate_dir: Path, out: Path, processes: int) -> dict:
    import multiprocessing

    import numpy as np
    from scipy import ndimage as ndi

    fields = [[str(f) for f in fl] for fl in _script_fields(plate_dir)]
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        chunks = [fields[i::processes] for i in range(processes)]
        parts = pool.map(_script_sum, chunks)
        total = sum(p[0] for p in parts)
        mean = total / sum(p[1] for p in parts)
        func = np.stack([ndi.gaussian_filter(m, sigma=m.shape[0] / 16) for m in mean]).astype(np.float32)
        func /= func.min(axis=(1, 2), keepdims=True)
        np.save(out / "illum.npy", func)
        t1 = time.perf_counter()
        n_cells = sum(pool.map(_script_segment, [(f, str(out / "illum.npy"), str(out / f"field{i}.npy"))
                                                 for i, f in enumerate(fields)], chunksize=1))
    t = time.perf_counter() - t0
    return dict(fields=len(fields), seconds=t, pass1=t1 - t0, cells=n_cells)


# --------------------------------------------------------------------------- cmcl
def run_cmcl(plate_dir: Path, store: Path, processes: int, features: str) -> dict:
    from pipeline.ingest.run import IngestSettings, ingest_plate
    from pipeline.store.paths import Store

    real = (plate_dir / "Images").is_dir()
    settings = IngestSettings(features=features, channel_map=REAL_MAP if real else None)
    t0 = time.perf_counter()
    r = ingest_plate(plate_dir, Store(store), settings, processes=processes)
    t = time.perf_counter() - t0
    assert r.status == "complete", r
    return dict(fields=r.n_fields, seconds=t, cells=r.n_cells, stages=r.seconds, worker=r.worker_seconds,
                quarantined=r.n_quarantined)


def run_cli(plate_dir: Path, store: Path, features: str) -> dict:
    exe = Path(sys.executable).with_name("cmcl")
    t0 = time.perf_counter()
    extra = ["--channels", REAL_MAP] if (plate_dir / "Images").is_dir() else []
    subprocess.run([str(exe), "-q", "ingest", str(plate_dir), "--store", str(store), "--features", features, *extra],
                   check=True, capture_output=True)
    return dict(seconds=time.perf_counter() - t0)


class _Descendants:
    """CPU seconds and peak RSS of this process's descendants, read from ``/proc``.

    ``RUSAGE_CHILDREN`` counts only children this process has waited for: cmcl's workers are
    forked by multiprocessing's fork server (a child that outlives the run), not by this
    process, so their CPU time reaches the server's ``cutime`` once it reaps them, and their
    peak RSS (``VmHWM``) is read while they live by a thread sampling every 50 ms."""

    def __init__(self) -> None:
        import threading

        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _stat(pid: int) -> list[str] | None:
        """The fields of ``/proc/PID/stat`` after the command name (ppid first), or None."""
        try:
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None

    @classmethod
    def _tree(cls) -> dict[int, list[str]]:
        """Every descendant's PID -> its ``/proc/PID/stat`` fields."""
        stats = {int(d): cls._stat(int(d)) for d in os.listdir("/proc") if d.isdigit()}
        children: dict[int, list[int]] = {}
        for pid, f in stats.items():
            if f is not None:
                children.setdefault(int(f[1]), []).append(pid)
        out, todo = {}, [os.getpid()]
        while todo:
            for c in children.get(todo.pop(), []):
                out[c] = stats[c]
                todo.append(c)
        return out

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for pid in self._tree():
                try:
                    for line in open(f"/proc/{pid}/status"):
                        if line.startswith("VmHWM:"):
                            self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                except OSError:
                    pass

    def stop(self) -> tuple[float, float]:
        """(CPU seconds of every descendant, reaped or alive; peak RSS in MB of any one)."""
        import resource

        self._stop.set()
        self._thread.join()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = ru.ru_utime + ru.ru_stime
        tick = os.sysconf("SC_CLK_TCK")
        for f in self._tree().values():
            if int(f[1]) == os.getpid():  # a child; a grandchild is in its parent's cutime once reaped
                cpu += sum(int(x) for x in f[11:15]) / tick  # utime, stime, cutime, cstime
        return cpu, max(self.peak_kb, ru.ru_maxrss) / 1024


def _child(argv: list[str]) -> None:
    """``--child KIND ...``: one measurement in this fresh process; prints ``RESULT {json}``."""
    import resource

    kind, plate_dir, out, processes, features = argv[0], Path(argv[1]), Path(argv[2]), int(argv[3]), argv[4]
    workers = _Descendants()
    if kind == "script":
        res = run_script(plate_dir, out, processes)
    elif kind == "cmcl":
        res = run_cmcl(plate_dir, out, processes, features)
    else:
        res = run_cli(plate_dir, out, features)
    res["rss_main_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["cpu_main_s"] = resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime
    res["cpu_workers_s"], res["rss_worker_mb"] = workers.stop()
    print("RESULT " + json.dumps(res))


def measure(kind: str, plate_dir: Path, out: Path, processes: int, features: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(plate_dir), str(out), str(processes),
                           features], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])


def make_plate(root: Path, *, fields: int, unique: int, size: int) -> Path:
    """A generated ImageXpress plate of ``unique`` fields (2 sites per well), extended to
    ``fields`` by hard-linking its files under further well names."""
    from pipeline.synthetic import generate
    from pipeline.synthetic.design import well_names

    unique = min(unique, fields)
    plate = generate(root, plate_id="BENCH", plate_format=384, n_wells=-(-unique // 2), sites=2, size=size, seed=0)
    if fields > unique:
        wells = well_names(384)
        src = sorted(p for p in plate.glob("BENCH_*.tif"))
        n_src_wells = -(-unique // 2)
        extra_wells = -(-fields // 2) - n_src_wells
        if n_src_wells + extra_wells > len(wells):
            raise ValueError(f"at most {2 * len(wells)} fields")
        for k in range(extra_wells):
            new, old = wells[n_src_wells + k], wells[k % n_src_wells]
            for p in src:
                if f"_{old}_" in p.name:
                    os.link(p, p.with_name(p.name.replace(f"_{old}_", f"_{new}_")))
    return plate


def make_real_plate(root: Path, *, fields: int) -> Path:
    """A Phenix plate of ``fields`` fields (2 per well), each a hard link of the real JUMP field
    in ``tests/data/phenix_BR00143976_C03`` (1080 x 1080, LZW, ~40 cells; 6 channels)."""
    plate = root / "BR00143976" / "Images"
    plate.mkdir(parents=True)
    for i in range(fields):
        well, site = divmod(i, 2)
        r, c = divmod(well, 24)
        for src in sorted(REAL_FIELD.glob("r03c03f03p01-ch*sk1fk1fl1.tiff")):
            ch = src.name.split("-ch")[1][0]
            os.link(src, plate / f"r{r + 1:02d}c{c + 1:02d}f{site + 1:02d}p01-ch{ch}sk1fk1fl1.tiff")
    return plate.parent


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return _child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fields", type=int, default=40, help="fields on the plate (default 40)")
    ap.add_argument("--unique", type=int, default=40, help="distinct generated fields; the rest reuse their files")
    ap.add_argument("--size", type=int, default=1080, help="field side in pixels (default 1080)")
    ap.add_argument("--real", action="store_true",
                    help="every field is the real JUMP Phenix field of tests/data (hard links) instead of generated ones")
    ap.add_argument("--processes", type=int, default=2, help="processes for both (default 2)")
    ap.add_argument("--features", default="none", choices=("none", "default", "full"))
    ap.add_argument("--also-features", action="store_true", help="also time cmcl with --features default")
    ap.add_argument("--cli", action="store_true", help="also time `cmcl -q ingest` (Prefect start-up included)")
    ap.add_argument("--no-script", action="store_true", help="skip the plain script")
    ap.add_argument("--keep", type=Path, default=None, help="work in DIR and keep it")
    ap.add_argument("--repeats", type=int, default=1,
                    help="alternate script and cmcl this many times and keep each one's fastest run "
                         "(a shared machine's load then hits both alike)")
    args = ap.parse_args(argv)
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="cmcl-bench-"))
    try:
        t0 = time.perf_counter()
        marker = tmp / "in" / f"made-{args.fields}-{args.unique}-{args.size}-{args.real}"
        if marker.exists():  # --keep DIR of an earlier run with the same plate
            plate = tmp / "in" / ("BR00143976" if args.real else "BENCH")
        else:
            shutil.rmtree(tmp / "in", ignore_errors=True)
            plate = (make_real_plate(tmp / "in", fields=args.fields) if args.real else
                     make_plate(tmp / "in", fields=args.fields, unique=args.unique, size=args.size))
            marker.touch()
        what = ("the real JUMP field (BR00143976 C03 f3, ~40 cells, LZW TIFFs) repeated" if args.real else
                f"{args.unique} distinct generated fields at {args.size} px")
        print(f"plate: {args.fields} fields, {what}; made in {time.perf_counter() - t0:.0f} s (not timed); "
              f"{args.processes} processes; {os.cpu_count()} cores")
        rows = []
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            if not args.no_script:
                r = measure("script", plate, tmp / "script", args.processes, "none")
                best["script"] = min(best.get("script", r), r, key=lambda x: x["seconds"])
            r = measure("cmcl", plate, tmp / "store", args.processes, args.features)
            best["cmcl"] = min(best.get("cmcl", r), r, key=lambda x: x["seconds"])
        if not args.no_script:
            rows.append(("plain script (skimage, .npy)", best["script"]))
        cm = best["cmcl"]
        rows.append((f"cmcl ingest_plate (features {args.features})", cm))
        if args.also_features:
            rows.append(("cmcl ingest_plate (features default)",
                         measure("cmcl", plate, tmp / "store_feat", args.processes, "default")))
        if args.cli:
            rows.append((f"cmcl -q ingest CLI (features {args.features})",
                         measure("cli", plate, tmp / "store_cli", args.processes, args.features)))
        print(f"{'run':<42}{'seconds':>9}{'fields/s':>10}{'cells':>9}{'CPU main s':>12}{'CPU workers s':>15}"
              f"{'RSS main MB':>13}{'RSS worker MB':>15}")
        for name, r in rows:
            print(f"{name:<42}{r['seconds']:>9.2f}{args.fields / r['seconds']:>10.2f}{r.get('cells', 0):>9}"
                  f"{r['cpu_main_s']:>12.1f}{r['cpu_workers_s']:>15.1f}{r['rss_main_mb']:>13.0f}{r['rss_worker_mb']:>15.0f}")
        if not args.no_script:
            script = rows[0][1]
            print(f"ratio cmcl / plain script: {script['seconds'] / cm['seconds']:.2f}")
        print("cmcl stages (wall s): " + ", ".join(f"{k} {v:.2f}" for k, v in cm["stages"].items()))
        n = max(cm["fields"], 1)
        print("cmcl worker time per field (ms, summed over processes): " +
              ", ".join(f"{k} {1000 * v / n:.0f}" for k, v in sorted(cm["worker"].items(), key=lambda kv: -kv[1])))
        if args.also_features:
            feat = rows[-2 if args.cli else -1][1]
            print(f"features default / none: {feat['seconds'] / cm['seconds']:.2f}x")
        if args.cli:
            print(f"CLI fixed cost (CLI - ingest_plate): {rows[-1][1]['seconds'] - cm['seconds']:.1f} s")
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
