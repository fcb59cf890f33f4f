"""Behaviour lock for the layout move (issue #26): the stages, driven through the ``cmcl`` CLI on a
generated plate and on the two real Phenix fields of ``tests/data``, must write the same pixels,
labels, crops, illumination functions, cells, features and profile tables as when the goldens in
``tests/data/behaviour_lock/`` were written (``tests/lock_fingerprint.py`` says how each output is
fingerprinted; ``tests/data/behaviour_lock/regenerate.py`` says when and how to regenerate).

This file imports no ``pipeline``/``cmcl_model`` module, so it runs unchanged before and after
the move.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from tests.lock_fingerprint import (SCENARIOS, build_store, compare, fingerprint_store, load_golden,
                                    table_fingerprint)

GOLDEN = load_golden("store")


@pytest.fixture(scope="module")
def store_prints(prefect_api, tmp_path_factory):
    """The scenario's store built through the CLI, fingerprinted: (store path, fingerprints)."""
    store = build_store(SCENARIOS["store"], tmp_path_factory.mktemp("lock"))
    return store, fingerprint_store(store)


@pytest.mark.parametrize("stage", list(GOLDEN["stages"]))
def test_stage_output_matches_golden(store_prints, stage):
    got = store_prints[1]
    diffs = compare({stage: got.get(stage, {})}, {stage: GOLDEN["stages"][stage]})
    assert not diffs, (f"{len(diffs)} difference(s) from tests/data/behaviour_lock/store.json in stage {stage!r} "
                       "(regenerate only if the change is meant; see regenerate.py):\n" + "\n".join(diffs[:40]))


def test_golden_covers_every_stage_on_both_inputs():
    """The lock is not vacuous: real and generated plates at every stage, with cells and features."""
    stages = GOLDEN["stages"]
    for plate in ("G1", "BR00121482", "phenix_BR00143976_C03"):
        assert any(k.startswith(f"plates/{plate}.ome.zarr:") and k.endswith("/0/0") for k in stages["ingest"])
        assert any(k.startswith(f"plates/{plate}.ome.zarr:") and "labels/cells" in k for k in stages["segmentation"])
        assert stages["illumination"][f"illumination/{plate}.zarr:function"]["dtype"] == "float32"
        assert stages["crops"][f"crops/{plate}.zarr:crops"]["shape"][0] == stages["crops"][f"tables/cells/{plate}.parquet"]["rows"] > 0
        features = stages["features"][f"tables/features/{plate}.parquet"]
        assert features["kinds"].count("f") > 400  # the default feature set
        assert f"tables/profiles/wells/{plate}.parquet" in stages["profiles"]
    assert stages["profiles"]["tables/profiles/selected.parquet"]["rows"] == 8


def test_a_small_change_is_caught_and_named(store_prints):
    """Perturbing one feature by 1e-3 (relative) or one label pixel fails, naming the stage, the
    table or array and the column; float noise at the 7th digit passes."""
    store, got = store_prints
    feats = pd.read_parquet(store / "tables/features/G1.parquet")
    col = "Cells_AreaShape_Area"
    noisy, changed = feats.copy(), feats.copy()
    noisy.iloc[:, 5:] = noisy.iloc[:, 5:].apply(lambda s: s * (1 + 1e-7) if s.dtype.kind == "f" else s)
    changed[col] = changed[col] * (1 + 1e-3)
    key = "tables/features/G1.parquet"
    mutated = copy.deepcopy(got)
    mutated["features"][key] = table_fingerprint(noisy)
    assert compare(mutated, GOLDEN["stages"]) == []
    mutated["features"][key] = table_fingerprint(changed)
    diffs = compare(mutated, GOLDEN["stages"])
    assert diffs[0].startswith(f"[features] {key}: column {col!r}: sum"), diffs
    assert all(d.startswith(f"[features] {key}: row sums differ") for d in diffs[1:]), diffs  # no other column
    labels = next(k for k in got["segmentation"] if k.startswith("plates/G1.ome.zarr:") and "nuclei" in k)
    mutated = copy.deepcopy(got)
    mutated["segmentation"][labels]["sha256"] = "0" * 64
    mutated["segmentation"][labels]["labelled_pixels"] += 1
    (line,) = compare(mutated, GOLDEN["stages"])
    assert line.startswith(f"[segmentation] {labels}: bytes differ (SHA-256); labelled_pixels:"), line
    assert np.isfinite(GOLDEN["stages"]["features"][key]["floats"][0][0])
