"""The generator's default fields against the real JUMP fields it is calibrated to
(:mod:`pipeline.synthetic.calibration`; the table is ``docs/realism.md``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.synthetic import DMSO, illumination_fields, render_field
from pipeline.synthetic.calibration import REFERENCE, TOLERANCES, Tolerance, compare, field_stats, mean_stats
from pipeline.synthetic.render import REAL_NUCLEUS_RADIUS

#: field_stats of the two real Phenix fields in tests/data (cmcl's segmentation, raw pixels),
#: copied from benchmarks/realism.py; test_real_constants_are_current re-measures them.
REAL = {
    "BR00121482 A01 f1": {
        "nuclei per field": 3.0,
        "nuclear area median (px)": 1197.0,
        "nuclear area p10 / median": 0.541,
        "nuclear area p90 / median": 1.223,
        "nucleus aspect ratio (median)": 1.218,
        "touching nuclei": 0.0,
        "touching cells": 1.0,
        "cell area / field": 0.08586,
        "cell / nucleus area (median)": 7.851,
        "cell aspect ratio (median)": 1.324,
        "cell solidity (median)": 0.8906,
        "DNA texture (CV in nuclei)": 0.4658,
        "DNA background p50 (ADU)": 440.0,
        "DNA p5 / p50": 0.6659,
        "DNA p99 / p50": 1.743,
        "ER background p50 (ADU)": 644.0,
        "ER p5 / p50": 0.6444,
        "ER p99 / p50": 12.35,
        "ER cytoplasm / background": 1.245,
        "RNA background p50 (ADU)": 295.0,
        "RNA p5 / p50": 0.6881,
        "RNA p99 / p50": 10.34,
        "RNA cytoplasm / background": 1.19,
        "AGP background p50 (ADU)": 956.0,
        "AGP p5 / p50": 0.6642,
        "AGP p99 / p50": 7.399,
        "AGP cytoplasm / background": 1.247,
        "Mito background p50 (ADU)": 718.0,
        "Mito p5 / p50": 0.7256,
        "Mito p99 / p50": 5.429,
        "Mito cytoplasm / background": 1.305,
    },
    "BR00143976 C03 f3": {
        "nuclei per field": 39.0,
        "nuclear area median (px)": 1038.0,
        "nuclear area p10 / median": 0.6505,
        "nuclear area p90 / median": 1.325,
        "nucleus aspect ratio (median)": 1.437,
        "touching nuclei": 0.1538,
        "touching cells": 0.6923,
        "cell area / field": 0.2633,
        "cell / nucleus area (median)": 7.135,
        "cell aspect ratio (median)": 1.615,
        "cell solidity (median)": 0.8731,
        "DNA texture (CV in nuclei)": 0.2661,
        "DNA background p50 (ADU)": 560.0,
        "DNA p5 / p50": 0.6339,
        "DNA p99 / p50": 21.06,
        "ER background p50 (ADU)": 425.0,
        "ER p5 / p50": 0.6424,
        "ER p99 / p50": 22.23,
        "ER cytoplasm / background": 3.598,
        "RNA background p50 (ADU)": 335.0,
        "RNA p5 / p50": 0.6537,
        "RNA p99 / p50": 31.04,
        "RNA cytoplasm / background": 5.816,
        "AGP background p50 (ADU)": 327.0,
        "AGP p5 / p50": 0.6667,
        "AGP p99 / p50": 8.037,
        "AGP cytoplasm / background": 3.122,
        "Mito background p50 (ADU)": 4631.0,
        "Mito p5 / p50": 0.6817,
        "Mito p99 / p50": 7.764,
        "Mito cytoplasm / background": 1.599,
    },
}

_FILES = {"BR00121482 A01 f1": ("phenix_BR00121482", "r01c01f01p01", {"DNA": 5, "ER": 4, "RNA": 3, "AGP": 2, "Mito": 1}),
          "BR00143976 C03 f3": ("phenix_BR00143976_C03", "r03c03f03p01", {"DNA": 5, "ER": 2, "RNA": 6, "AGP": 3, "Mito": 4})}


def test_tolerance_intervals() -> None:
    real = {"a": 2.0, REFERENCE: 4.0}
    assert Tolerance("factor", 2.0).interval(real) == (1.0, 8.0)
    assert Tolerance("plus", 0.5).interval(real) == (1.5, 4.5)
    assert Tolerance("factor", 2.0, reference_only=True).interval(real) == (2.0, 8.0)
    assert Tolerance("plus", 5.0).interval(real) == (0.0, 9.0)  # fractions and counts stay >= 0
    assert set(TOLERANCES) == set(REAL[REFERENCE])


def test_real_constants_are_current() -> None:
    import tifffile

    from pipeline.store.paths import CHANNELS

    data = Path(__file__).resolve().parents[2] / "data"
    for name, (folder, stem, chans) in _FILES.items():
        image = np.stack([tifffile.imread(data / folder / "Images" / f"{stem}-ch{chans[c]}sk1fk1fl1.tiff")
                          for c in CHANNELS])
        measured = field_stats(image)
        for key, value in REAL[name].items():
            assert measured[key] == pytest.approx(value, rel=2e-3, abs=1e-3), (name, key, measured[key])


def test_default_fields_match_the_real_ones_within_tolerance() -> None:
    """Four default DMSO fields at half the real scale (512 px, nucleus radius 9: the area of a
    real 1080 px field at radius 18.6), their mean statistics inside every tolerance."""
    radius = 9.0
    illum = illumination_fields(512, 0)
    stats = [field_stats(render_field(DMSO, size=512, nucleus_radius=radius, rng=np.random.default_rng([7, k]),
                                      illumination=illum)[0], scale=REAL_NUCLEUS_RADIUS / radius)
             for k in range(4)]
    rows = compare(mean_stats(stats), REAL)
    failed = [(r["statistic"], round(r["synthetic"], 3), tuple(round(v, 3) for v in r["interval"]))
              for r in rows if not r["ok"]]
    assert not failed, failed
