"""Profile-mode pre-training at JUMP's scale: load time, peak memory, step time and where it goes.

Usage::

    python benchmarks/profiles_train.py [--compounds 116000] [--replicates 5] [--features 750]
                                        [--steps 20] [--preset default|demo] [--keep DIR]

Generates, in a temporary directory, a store shaped like JUMP cpg0016's compound profiles:
``compounds x replicates`` well profiles of ``features`` float32 CellProfiler-named features in
Parquet files of 20,000 rows (``profiles_wells`` layout, 384-well plates, one DMSO column per
plate, 4 sources), and a graphs table whose ``compounds`` keys reuse the shipped ChEMBL drugs'
real molecular graphs in turn. Then, each in a fresh process (peak RSS = ``VmHWM``):

- ``cmcl``: :class:`cmcl_model.data.profiles.ProfileDataset` (float32 matrix filled file by
  file, per-batch robust standardization) and ``--steps`` training steps of the profile-mode
  model (GIN + profile MLP, GIC loss), timed per part: batch assembly (sampling + collation),
  graph encoder, profile encoder + losses, backward + optimizer; the epoch time is extrapolated
  from the mean step time;
- ``peer``: the same Parquet files read the usual way, ``pandas.concat(read_parquet(f) ...)``,
  then the features as one float32 array (what a script would hand to torch).
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

import numpy as np

ROWS_PER_FILE = 20_000

_CHILD_CMCL = r"""
import json, sys, time, numpy as np, torch
from cmcl_model.data.profiles import ProfileDataset
from cmcl_model.data.pairs import collate_pairs
from cmcl_model.train.build import build_model
from cmcl_model.train.config import TrainConfig
from cmcl_model.train.objectives import build_loss, compute_losses
from pipeline.store.paths import Store
root, steps, preset = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t0 = time.perf_counter()
ds = ProfileDataset(Store(root), profiles_per_sample=4)
load_s = time.perf_counter() - t0
base = TrainConfig() if preset == "default" else TrainConfig.demo(batch_size=256)
cfg = TrainConfig.from_dict({**base.to_dict(), "image_source": "profiles", "profile_features": ds.n_features})
torch.manual_seed(0)
model, loss_fn = build_model(cfg), build_loss(cfg)
opt = torch.optim.AdamW(list(model.parameters()), lr=cfg.lr)
sampler = ds.batch_sampler(cfg.batch_size, seed=0)
t = time.perf_counter(); batches = sampler.batches(); sampler_s = time.perf_counter() - t
parts = {"batch": [], "graph_encoder": [], "profile_encoder_and_loss": [], "backward_and_step": []}
for b in batches[: steps + 1]:
    t = time.perf_counter(); batch = collate_pairs([ds[i] for i in b]); t1 = time.perf_counter()
    g = model.embed_graphs(batch.graphs); t2 = time.perf_counter()
    i = model.embed_images(batch.crops); loss, _ = loss_fn(g, i); t3 = time.perf_counter()
    opt.zero_grad(); loss.backward(); opt.step(); t4 = time.perf_counter()
    for k, v in zip(parts, (t1 - t, t2 - t1, t3 - t2, t4 - t3)):
        parts[k].append(v)
parts = {k: float(np.mean(v[1:])) for k, v in parts.items()}  # the first step warms up
step = sum(parts.values())
hwm = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1e6
print(json.dumps({"load_s": load_s, "items": len(ds), "compounds": len(ds.keys), "features": ds.n_features,
                  "matrix_gb": ds.x.nbytes / 1e9, "sampler_s": sampler_s, "steps_per_epoch": len(batches),
                  "batch_size": cfg.batch_size, "step_s": step, "parts_s": parts, "epoch_s": step * len(batches) + sampler_s,
                  "peak_rss_gb": hwm}))
"""

_CHILD_PEER = r"""
import json, sys, time, glob, numpy as np, pandas as pd
t0 = time.perf_counter()
df = pd.concat([pd.read_parquet(f) for f in sorted(glob.glob(sys.argv[1] + "/tables/profiles/wells/*.parquet"))], ignore_index=True)
x = df[[c for c in df.columns if c.startswith(("Cells_", "Cytoplasm_", "Nuclei_"))]].to_numpy(np.float32)
s = time.perf_counter() - t0
hwm = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1e6
print(json.dumps({"load_s": s, "rows": len(df), "peak_rss_gb": hwm}))
"""


def make_store(root: Path, *, compounds: int, replicates: int, features: int, seed: int = 0) -> None:
    """Write the generated profiles and graphs (see the module docstring) under ``root``."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.chem.parents import merge_parents
    from pipeline.chem.standardize import standardize_table
    from pipeline.chem.graphs import graphs_table
    from pipeline.store.schema import write_table

    lib = pd.read_csv(Path(__file__).resolve().parents[1] / "pipeline" / "data" / "compound_library.csv")
    smiles_col = "Metadata_SMILES"
    records = pd.DataFrame({"Metadata_Source": "lib", "Metadata_CompoundID": lib.index.astype(str),
                            "Input_SMILES": lib[smiles_col].astype(str), "Error": None})
    parents = merge_parents(standardize_table(records, n_jobs=1))
    real = graphs_table(parents)
    keys = np.array([f"CMPD{j:07d}XXXXXXXXXX-UHFFFAOYSA-N" for j in range(compounds)])
    g = real.iloc[np.arange(compounds) % len(real)].reset_index(drop=True)
    g["Metadata_InChIKey"] = keys
    write_table(g, "graphs", root / "tables" / "graphs.parquet")
    feats = [f"Cells_Gen_Feature_{j}" for j in range(features)]
    rng = np.random.default_rng(seed)
    wells = [f"{r}{c:02d}" for r in "ABCDEFGHIJKLMNOP" for c in range(1, 25)]
    n = compounds * replicates
    comp = np.repeat(np.arange(compounds), replicates)[rng.permutation(n)]
    out = root / "tables" / "profiles" / "wells"
    out.mkdir(parents=True, exist_ok=True)
    signal = rng.standard_normal((compounds, 16)).astype(np.float32)
    mix = rng.standard_normal((16, features)).astype(np.float32) / 4
    for f, a in enumerate(range(0, n, ROWS_PER_FILE)):
        rows = np.arange(a, min(n, a + ROWS_PER_FILE))
        plate = rows // len(wells)
        well = np.array(wells)[rows % len(wells)]
        dmso = np.char.endswith(well.astype(str), "24")
        x = rng.standard_normal((rows.size, features), dtype=np.float32)
        x += signal[comp[rows]] @ mix
        table = {"Metadata_Plate": [f"GEN{p:05d}" for p in plate], "Metadata_Well": well,
                 "Metadata_CompoundID": np.where(dmso, "DMSO", keys[comp[rows]]),
                 "Metadata_InChIKey": np.where(dmso, None, keys[comp[rows]]),
                 "Metadata_Concentration": np.full(rows.size, np.nan),
                 "Metadata_ControlType": np.where(dmso, "negcon", "trt"),
                 "Metadata_Source": [f"import:source_{p % 4}" for p in plate]}
        cols = {k: pa.array(list(v) if not isinstance(v, np.ndarray) else v) for k, v in table.items()}
        cols.update({name: pa.array(x[:, j]) for j, name in enumerate(feats)})
        pq.write_table(pa.table(cols), out / f"part{f:04d}.parquet", compression="zstd")
        del x, cols


def _child(code: str, *args: str) -> dict:
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compounds", type=int, default=116_000)
    ap.add_argument("--replicates", type=int, default=5)
    ap.add_argument("--features", type=int, default=750)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--preset", choices=("default", "demo"), default="default")
    ap.add_argument("--keep", type=Path, default=None, help="Write (or reuse) the generated store here.")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="cmcl-profiles-bench-")) if args.keep is None else args.keep
    try:
        t0 = time.perf_counter()
        if not (tmp / "tables" / "graphs.parquet").exists():
            make_store(tmp, compounds=args.compounds, replicates=args.replicates, features=args.features)
        gen_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (tmp / "tables").rglob("*.parquet")) / 1e9
        peer = _child(_CHILD_PEER, str(tmp))
        cmcl = _child(_CHILD_CMCL, str(tmp), str(args.steps), args.preset)
        result = {"compounds": args.compounds, "replicates": args.replicates, "features": args.features,
                  "parquet_gb": size, "generate_s": gen_s, "cmcl": cmcl, "peer": peer,
                  "load_ratio": peer["load_s"] / cmcl["load_s"], "rss_ratio": peer["peak_rss_gb"] / cmcl["peak_rss_gb"]}
        print(json.dumps(result, indent=1))
        return result
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
