"""Three plates, the third added later, all through the CLI: the split grows, nothing moves, and
the run after the third plate trains on its new compounds and evaluates its new test compounds."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold
from typer.testing import CliRunner

from flows.cli import app
from pipeline.store.paths import Store

runner = CliRunner()
INGEST = ["--crop-size", "16"]
TRAIN = ["--preset", "quick", "--set", "epochs=2", "--set", "split_fractions=[0.5,0.25,0.25]"]


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, ["--quiet", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _choose_compounds() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Plates 1 and 2: 8 compounds each, one per scaffold; plate 3: 3 compounds on scaffolds of
    plates 1-2 and 6 on new scaffolds."""
    from pipeline.chem.library import load_compound_library

    lib = load_compound_library()
    lib = lib.assign(Scaffold=[MurckoScaffold.MurckoScaffoldSmiles(mol=Chem.MolFromSmiles(s)) for s in lib["Metadata_SMILES"]])
    lib = lib[lib["Scaffold"] != ""]
    first = lib.drop_duplicates("Scaffold").iloc[:22]
    p1, p2, fresh = first.iloc[:8], first.iloc[8:16], first.iloc[16:22]
    seen = set(pd.concat([p1, p2])["Scaffold"])
    again = lib[lib["Scaffold"].isin(seen) & ~lib["Metadata_CompoundID"].isin(first["Metadata_CompoundID"])].iloc[:3]
    assert len(again) == 3
    return p1, p2, pd.concat([again, fresh])


def _write(inbox: Path, plate_id: str, compounds: pd.DataFrame, seed: int) -> Path:
    from pipeline.synthetic import write_plate, well_names

    n = len(compounds)
    wells = well_names(96)[: n + 2]
    pm = pd.DataFrame({
        "Metadata_Well": wells,
        "Metadata_CompoundID": [*compounds["Metadata_CompoundID"], None, None],
        "Metadata_SMILES": [*compounds["Metadata_SMILES"], None, None],
        "Metadata_Concentration": [1.0] * n + [float("nan")] * 2,
        "Metadata_ControlType": ["trt"] * n + ["negcon"] * 2,
    })
    return write_plate(inbox, pm, plate_id=plate_id, size=128, seed=seed, ground_truth=False)


@pytest.mark.slow
def test_third_plate_later_trains_and_evaluates_its_new_compounds(tmp_path):
    p1, p2, p3 = _choose_compounds()
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    _write(inbox, "INC1", p1, 1)
    _write(inbox, "INC2", p2, 2)
    _ok(["run", str(inbox), "--store", str(store), *INGEST, *TRAIN])
    st = Store(store)
    [run1] = st.runs()
    split1 = st.read("split")

    # the third plate lands; training before the compound stage stops, saying what to run
    _write(inbox, "INC3", p3, 3)
    _ok(["ingest", str(inbox / "INC3"), "--store", str(store), *INGEST])
    stale = runner.invoke(app, ["--quiet", "train", "--store", str(store), *TRAIN])
    lines = [ln for ln in stale.output.splitlines() if ln.strip()]
    assert stale.exit_code == 1 and len(lines) == 1 and "INC3" in lines[0] and "cmcl compounds --store" in lines[0]
    _ok(["run", str(inbox), "--store", str(store), *INGEST, *TRAIN])
    run2 = st.runs()[-1]
    assert run2 != run1

    split2 = st.read("split").set_index("Metadata_InChIKey")
    old = split1.set_index("Metadata_InChIKey")["Split"]
    assert (split2.loc[old.index, "Split"] == old).all()  # no compound moved
    wells = st.read("well_compounds")
    new_keys = set(wells.loc[wells["Metadata_Plate"] == "INC3", "Metadata_InChIKey"]) - set(old.index)
    assert len(new_keys) >= 8
    with_images = set(st.read("cells").merge(wells, on=["Metadata_Plate", "Metadata_Well"])["Metadata_InChIKey"])
    new_keys &= with_images
    assert new_keys <= set(split2.index)  # every new compound with images is split
    scaffold_split = split2.groupby("Metadata_Scaffold")["Split"].nunique()
    assert (scaffold_split == 1).all()  # known scaffolds' new compounds joined their split
    new_train = {k for k in new_keys if split2.at[k, "Split"] == "train"}
    new_test = {k for k in new_keys if split2.at[k, "Split"] == "test"}
    assert new_train and new_test, split2.loc[sorted(new_keys), "Split"].value_counts()

    c1 = json.loads((st.run_dir(run1) / "config.json").read_text())["data"]
    c2 = json.loads((st.run_dir(run2) / "config.json").read_text())["data"]
    assert c2["n_unsplit"] == 0 and c1["n_unsplit"] == 0
    assert c2["n_compounds"]["train"] == c1["n_compounds"]["train"] + len(new_train)
    assert c2["n_compounds"]["test"] == c1["n_compounds"]["test"] + len(new_test)
    m2 = json.loads((st.report_dir(run2) / "metrics.json").read_text())
    assert m2["split"]["test_evaluated"] == c2["n_compounds"]["test"]
