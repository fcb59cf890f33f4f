"""Throughput of the synthetic plate generator (one process, one core's worth of numpy).

Prints rendered fields/s (``render_field`` only) and written fields/s (``write_plate``: render,
TIFFs with thumbnails, ground-truth labels) at 256x256 and 1080x1080.

Usage: ``python benchmarks/synth.py``
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.chem.library import load_compound_library
from pipeline.synthetic import DMSO, design_plates, illumination_fields, render_field, write_plate


def _render_rate(size: int, n: int) -> float:
    illum = illumination_fields(size, 0)
    rng = np.random.default_rng(0)
    render_field(DMSO, size=size, rng=rng, illumination=illum)  # warm the texture bank
    start = time.perf_counter()
    for _ in range(n):
        render_field(DMSO, size=size, rng=rng, illumination=illum)
    return n / (time.perf_counter() - start)


def _write_rate(size: int, n_wells: int) -> float:
    platemap = design_plates(load_compound_library(), plate_format=96)[0].iloc[:n_wells]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_plate(Path(tmp), platemap, plate_id="BENCH", size=size)
        return n_wells / (time.perf_counter() - start)


def main() -> None:
    for size, n_render, n_write in ((256, 100, 48), (1080, 6, 4)):
        print(
            f"size {size:>4}: render {_render_rate(size, n_render):6.2f} fields/s, "
            f"write_plate {_write_rate(size, n_write):6.2f} fields/s"
        )


if __name__ == "__main__":
    main()
