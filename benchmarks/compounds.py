"""Throughput and agreement of cmcl's compound standardization and featurization.

Compares, on the shipped library repeated to about 3000 molecules:

* standardization: ``pipeline.chem.standardize.standardize_table`` (1 and 2 processes) against the
  ChEMBL structure pipeline (``standardize_mol`` then ``get_parent_mol``, one process);
* featurization: ``pipeline.chem.graphs.smiles_to_graph`` against ``ogb.utils.smiles2graph``.

Agreement: fraction of valid inputs whose parent InChIKey equals ChEMBL's, and of graphs
identical to ogb's. Run ``python benchmarks/compounds.py [--n 3000]``; the references must be
installed (``pip install -e .[dev]``). Wall-clock times include worker start-up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from rdkit import Chem, RDLogger

from pipeline.chem.standardize import standardize_table
from pipeline.chem.graphs import smiles_to_graph
from pipeline.chem.library import load_compound_library


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _chembl_keys(smiles: list[str]) -> list[str | None]:
    from chembl_structure_pipeline import standardizer

    keys = []
    for s in smiles:
        mol = Chem.MolFromSmiles(s, sanitize=False)
        if mol is None or mol.GetNumAtoms() == 0:
            keys.append(None)
            continue
        try:
            parent, _ = standardizer.get_parent_mol(standardizer.standardize_mol(mol))
            Chem.SanitizeMol(parent)
            keys.append(Chem.MolToInchiKey(parent))
        except (ValueError, RuntimeError, Chem.MolSanitizeException):
            keys.append(None)
    return keys


def main(n: int = 3000) -> pd.DataFrame:
    RDLogger.DisableLog("rdApp.*")
    from ogb.utils import smiles2graph

    lib = load_compound_library()
    reps = -(-n // len(lib))
    smiles = (lib["Metadata_SMILES"].tolist() * reps)[:n]
    records = pd.DataFrame(
        {"Metadata_Source": "bench", "Metadata_CompoundID": [f"M{i}" for i in range(n)], "Input_SMILES": smiles}
    )
    rows = []
    ours2, t2 = _timed(standardize_table, records, n_jobs=2)
    ours1, t1 = _timed(standardize_table, records, n_jobs=1)
    ref, tr = _timed(_chembl_keys, smiles)
    ok = (ours1["Status"] == "ok").to_numpy()
    same = np.array([a == b for a, b in zip(ours1["Metadata_InChIKey"], ref)])
    agree = same[ok].mean()
    assert ours1.equals(ours2)
    rows += [
        ("standardize", "cmcl n_jobs=2", n / t2, n / tr, f"{agree:.2%} InChIKeys = ChEMBL"),
        ("standardize", "cmcl n_jobs=1", n / t1, n / tr, ""),
        ("standardize", "chembl_structure_pipeline", n / tr, n / tr, ""),
    ]
    ok_smiles = [s for s, k in zip(smiles, ours1["Status"]) if k == "ok"]
    ref_graphs, tg_ref = _timed(lambda: [smiles2graph(s) for s in ok_smiles])
    our_graphs, tg = _timed(lambda: [smiles_to_graph(s) for s in ok_smiles])
    identical = np.mean(
        [all(np.array_equal(a[k], b[k]) for k in a) for a, b in zip(ref_graphs, our_graphs)]
    )
    m = len(ok_smiles)
    rows += [
        ("featurize", "cmcl smiles_to_graph", m / tg, m / tg_ref, f"{identical:.2%} graphs = ogb"),
        ("featurize", "ogb smiles2graph", m / tg_ref, m / tg_ref, ""),
    ]
    table = pd.DataFrame(rows, columns=["task", "implementation", "mol_per_s", "reference_mol_per_s", "agreement"])
    table["ratio"] = table["mol_per_s"] / table["reference_mol_per_s"]
    print(f"{n} molecules ({len(lib)} library compounds x {reps}); wall-clock")
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    disagreements = sorted({s for s, o, r, k in zip(smiles, ours1["Metadata_InChIKey"], ref, ok) if k and o != r})
    for s in disagreements:
        print("  differs from ChEMBL:", s)
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="molecules (library repeated)")
    main(parser.parse_args().n)
