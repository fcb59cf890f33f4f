import pandas as pd
import pytest

from cmcl_model.data.split import extend_split, load_or_create_split, scaffold_split
from pipeline.store.paths import Store


def _compounds(n=60):
    scaff = [f"S{j % 29}" if j % 11 else "" for j in range(n)]
    return pd.DataFrame({"Metadata_InChIKey": [f"K{j:03d}" for j in range(n)], "Metadata_Scaffold": scaff})


def test_split_deterministic_grouped_no_leakage():
    c = _compounds()
    a = scaffold_split(c, seed=3)
    b = scaffold_split(c.sample(frac=1, random_state=1), seed=3)
    pd.testing.assert_frame_equal(a, b)  # independent of row order
    assert set(a.Split) <= {"train", "val", "test"} and len(a) == len(c)
    per_scaffold = a.groupby("Metadata_Scaffold")["Split"].nunique()
    assert (per_scaffold == 1).all()
    keys = {s: set(a.loc[a.Split == s, "Metadata_InChIKey"]) for s in ("train", "val", "test")}
    assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"]) and not (keys["val"] & keys["test"])
    assert len(keys["train"]) >= 0.6 * len(c)
    assert not scaffold_split(c, seed=4).equals(a)


def test_split_bad_input():
    with pytest.raises(ValueError, match="fractions"):
        scaffold_split(_compounds(), fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="columns"):
        scaffold_split(pd.DataFrame({"x": [1]}))


def test_split_written_once_then_reused(tmp_path):
    store = Store(tmp_path)
    first = load_or_create_split(store, _compounds(), seed=0)
    assert store.table_path("split").exists()
    again = load_or_create_split(store, _compounds(), seed=99)  # present: read, not recomputed
    pd.testing.assert_frame_equal(first.reset_index(drop=True), again.reset_index(drop=True))


def test_split_grows_with_new_compounds_and_never_moves_one(tmp_path):
    store = Store(tmp_path)
    first = load_or_create_split(store, _compounds(60), fractions=(0.6, 0.2, 0.2), seed=0)
    more = pd.concat([_compounds(60), pd.DataFrame({  # 20 new: 5 on known scaffolds, 15 on 5 new ones
        "Metadata_InChIKey": [f"N{j:03d}" for j in range(20)],
        "Metadata_Scaffold": [f"S{j}" for j in range(5)] + [f"NEW{j % 5}" for j in range(15)]})], ignore_index=True)
    grown = load_or_create_split(store, more, fractions=(0.6, 0.2, 0.2), seed=0)
    assert len(grown) == 80 and store.read("split").shape[0] == 80
    kept = grown.set_index("Metadata_InChIKey").loc[first["Metadata_InChIKey"], "Split"]
    assert (kept.values == first["Split"].values).all()  # nobody moved
    by_scaffold = grown.groupby("Metadata_Scaffold")["Split"].nunique()
    assert (by_scaffold == 1).all()  # a known scaffold's new compound joined its split
    new_parts = set(grown.loc[grown["Metadata_Scaffold"].str.startswith("NEW"), "Split"])
    assert len(new_parts) >= 2  # new scaffolds are spread by the fractions, not all into one split
    again = extend_split(grown, more, fractions=(0.6, 0.2, 0.2), seed=0)
    pd.testing.assert_frame_equal(again, grown)  # nothing new: unchanged
    redo = extend_split(first, more.sample(frac=1, random_state=3), fractions=(0.6, 0.2, 0.2), seed=0)
    pd.testing.assert_frame_equal(redo, grown)  # deterministic, whatever the row order
