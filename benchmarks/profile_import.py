"""Compound-map join of ``cmcl import-profiles`` on JUMP's full JCP2022 table, beside a plain
pandas join measured in the same run.

A JUMP cpg0016-style profile table of ``--compounds`` real JCP2022 identifiers (x 3 wells, plus
DMSO wells, 64 numbered features) is generated from the map itself; then

* cmcl: :func:`pipeline.profiles.io.read_compound_map` (header, then only the identifier and
  SMILES columns, rows filtered to the table's identifiers) + the join and the standardization of
  every joined SMILES in :func:`pipeline.profiles.imports.import_profiles` (2 worker processes from
  2,000 distinct SMILES);
* peer: ``pd.read_csv`` of the whole map + ``DataFrame.merge`` on ``Metadata_JCP2022`` (no
  standardization), the minimal join a user would write.

Usage: ``python benchmarks/profile_import.py MAP.csv.gz [--compounds 500]`` (the map: JUMP's
``JUMPCP_compounds.csv.gz``, 116,753 rows; any CSV/Parquet with ``Metadata_JCP2022`` and
``smiles`` works). Prints seconds per step, peak RSS and the ratio of the join steps.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.profiles.imports import import_profiles  # noqa: E402
from pipeline.profiles.io import read_compound_map  # noqa: E402


def jump_style_table(ids: pd.Series, *, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` identifiers x 3 wells + 12 DMSO wells, 64 numbered float32 features."""
    rng = np.random.default_rng(seed)
    pick = list(ids.iloc[rng.choice(len(ids), n, replace=False)]) * 3 + ["JCP2022_033924"] * 12
    t = pd.DataFrame({"Metadata_Source": "source_1", "Metadata_Plate": [f"P{i // 384}" for i in range(len(pick))],
                      "Metadata_Well": [f"W{i % 384}" for i in range(len(pick))], "Metadata_JCP2022": pick})
    x = pd.DataFrame(rng.normal(size=(len(pick), 64)).astype(np.float32), columns=[f"X_{i + 1}" for i in range(64)])
    return pd.concat([t, x], axis=1)


def main(path: Path, *, compounds: int) -> dict[str, float | int | str]:
    ids = pd.read_csv(path, usecols=["Metadata_JCP2022"])["Metadata_JCP2022"]
    table = jump_style_table(ids, n=compounds)
    want = set(table["Metadata_JCP2022"])
    t0 = time.perf_counter()
    cmap, roles = read_compound_map(path, ids=want, id_columns=list(table.columns))
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = import_profiles(table, source="import:bench", compound_map=cmap, map_roles=roles, n_jobs=2)
    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = pd.read_csv(path)
    peer = table[["Metadata_JCP2022"]].merge(full, on="Metadata_JCP2022", how="left")
    t_peer = time.perf_counter() - t0
    s = res.summary()
    assert peer["smiles"].notna().sum() == len(table) and s["joined"] >= 0.99 * s["compounds"]
    reasons = pd.Series([u["reason"].split(":")[0] for u in s["unjoined"]], dtype=object).value_counts()
    out = {"map_rows": len(ids), "table_rows": len(table), "compounds": s["compounds"], "joined": s["joined"],
           "cmcl_read_map_s": t_read, "cmcl_import_s": t_import, "peer_read_merge_s": t_peer,
           "ratio_map_read": t_peer / t_read, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "unjoined_reasons": "; ".join(f"{k}: {v}" for k, v in reasons.items()) or "-"}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("map", type=Path)
    ap.add_argument("--compounds", type=int, default=500)
    args = ap.parse_args()
    r = main(args.map, compounds=args.compounds)
    for k, v in r.items():
        print(f"{k:20s} {v:.3f}" if isinstance(v, float) else f"{k:20s} {v}")
