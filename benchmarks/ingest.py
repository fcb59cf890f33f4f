"""Ingestion throughput against the I/O limit.

Generates a plate (not timed), then measures, in the same run:

* **cmcl**: :func:`pipeline.ingest.write_images` (header checks, validation, lossless OME-Zarr
  write) + :func:`pipeline.ingest.compute_illumination` (streaming), fields per second;
* **I/O limit**: a plain loop of ``tifffile.imread`` of the same files and a zarr write of each
  (c, y, x) field with the same codec, fields per second;

and prints their ratio and the peak resident memory of each phase.

Usage: ``python benchmarks/ingest.py [--size 1080] [--wells 8] [--sites 2] [--method mean]``
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import tifffile
import zarr

from pipeline.ingest import IngestSettings, compute_illumination, plan_plate, write_images
from pipeline.omezarr import _COMPRESSOR
from pipeline.store import CHANNELS, Store
from pipeline.synthetic import generate


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _copy_loop(plate_dir: Path, listing, out: Path) -> int:
    root = zarr.open_group(str(out), mode="w", zarr_format=3)
    n = 0
    for (well, site), rows in listing.groupby(["Metadata_Well", "Metadata_Site"], sort=True):
        files = rows.set_index("Metadata_Channel")["File"]
        image = np.stack([tifffile.imread(plate_dir / files[c]) for c in CHANNELS])
        root.create_array(f"{well}_{site}", data=image, chunks=(1, *image.shape[1:]), compressors=_COMPRESSOR)
        n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1080, help="field side in pixels (default 1080)")
    ap.add_argument("--wells", type=int, default=8, help="wells (default 8; keeps the run under 2 minutes)")
    ap.add_argument("--sites", type=int, default=2, help="sites per well (default 2)")
    ap.add_argument("--method", default="mean", choices=("mean", "median", "background"))
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="cmcl-bench-"))
    try:
        t0 = time.perf_counter()
        plate_dir = generate(tmp / "in", plate_id="B1", n_wells=args.wells, sites=args.sites, size=args.size, seed=0)
        gen = time.perf_counter() - t0
        settings = IngestSettings(illumination_method=args.method)
        plan = plan_plate(plate_dir, Store(tmp / "store"), settings)
        n_fields = plan.listing.images.groupby(["Metadata_Well", "Metadata_Site"]).ngroups
        mb = n_fields * len(CHANNELS) * args.size ** 2 * 2 / 1e6

        rss0 = _peak_rss_mb()
        tracemalloc.start()
        t0 = time.perf_counter()
        n_copy = _copy_loop(plate_dir, plan.listing.images, tmp / "copy.zarr")
        t_copy = time.perf_counter() - t0
        copy_peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.reset_peak()

        t0 = time.perf_counter()
        fields, quarantine = write_images(plan)
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        compute_illumination(plan, fields, settings)
        t_illum = time.perf_counter() - t0
        cmcl_peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        t_cmcl = t_write + t_illum
        assert len(fields) == n_copy == n_fields and quarantine.empty

        print(f"plate: {n_fields} fields x {len(CHANNELS)} channels at {args.size} px ({mb:.0f} MB raw), "
              f"generated in {gen:.1f} s (not timed); illumination method {args.method!r}")
        print(f"{'stage':<36}{'seconds':>9}{'fields/s':>10}{'MB/s':>8}{'peak py MB':>12}")
        print(f"{'I/O limit: tifffile.imread + zarr':<36}{t_copy:>9.2f}{n_copy / t_copy:>10.1f}{mb / t_copy:>8.0f}{copy_peak:>12.0f}")
        print(f"{'cmcl write_images':<36}{t_write:>9.2f}{n_fields / t_write:>10.1f}{mb / t_write:>8.0f}")
        print(f"{'cmcl compute_illumination':<36}{t_illum:>9.2f}{n_fields / t_illum:>10.1f}{mb / t_illum:>8.0f}")
        print(f"{'cmcl write + illumination':<36}{t_cmcl:>9.2f}{n_fields / t_cmcl:>10.1f}{mb / t_cmcl:>8.0f}{cmcl_peak:>12.0f}")
        print(f"ratio cmcl / I/O limit: {(n_fields / t_cmcl) / (n_copy / t_copy):.2f} "
              f"(write alone {(n_fields / t_write) / (n_copy / t_copy):.2f}); peak RSS {_peak_rss_mb():.0f} MB "
              f"(before timing {rss0:.0f} MB)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
