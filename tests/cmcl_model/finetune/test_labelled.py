"""Shipped labelled sets, standardization on load, bad-input errors and the three splits."""

import numpy as np
import pandas as pd
import pytest

from cmcl_model.finetune.labelled import (
    DATASETS,
    LabelledInputError,
    check_labelled_csv,
    load_shipped,
    prepare_labelled,
    scaffold_of,
    split_molecules,
    split_table,
)

#: rows of chemprop's MoleculeNet copies (see cmcl_model/datasets/README.md)
ROWS = {"bbbp": 2039, "clintox": 1478, "bace": 1513, "sider": 1427, "tox21": 7831, "esol": 1128, "freesolv": 642,
        "lipophilicity": 4200}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_shipped_sets_load_with_their_columns(name):
    frame, spec = load_shipped(name)
    assert len(frame) == ROWS[name]
    assert spec.smiles_col in frame.columns
    tasks = spec.tasks or [c for c in frame.columns if c != spec.smiles_col]
    assert {"sider": 27, "tox21": 12, "clintox": 2}.get(name, 1) == len(tasks)
    labels = frame[list(tasks)].to_numpy(dtype=float)
    if spec.kind == "classification":
        assert set(np.unique(labels[np.isfinite(labels)])) == {0.0, 1.0}
    if name == "tox21":
        assert np.isnan(labels).any()  # multi-task with missing labels


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="bbbp"):
        load_shipped("nope")


def test_salts_standardized_invalid_reported_missing_labels_kept():
    frame = pd.DataFrame({
        "smi": ["O=C([O-])c1ccc(N)cc1.[Na+]", "not a smiles", "c1ccccc1O", "CCN.Cl", "CCCC"],
        "a": [1, 0, 0, 1, np.nan],
        "b": [0, 1, np.nan, 1, 0],
    })
    data = prepare_labelled(frame, smiles_col="smi", name="t.csv")
    assert data.kind == "classification" and data.tasks == ("a", "b")
    assert data.smiles == ["Nc1ccc(C(=O)O)cc1", "Oc1ccccc1", "CCN", "CCCC"]
    assert data.rows.tolist() == [0, 2, 3, 4]
    assert data.n_changed == 2  # the sodium salt and the hydrochloride
    assert len(data.invalid) == 1 and data.invalid[0]["row"] == 1 and "unparsable" in data.invalid[0]["reason"]
    np.testing.assert_array_equal(np.isnan(data.labels), [[0, 0], [0, 1], [0, 0], [1, 0]])
    assert [g.num_nodes for g in data.graphs] == [10, 7, 3, 4]


@pytest.mark.parametrize(
    "frame, kwargs, message",
    [
        (pd.DataFrame({"smiles": ["CCO", "CCC"], "y": [0, 1]}), {"tasks": ["z"]}, r"t\.csv: no task column\(s\) \['z'\]"),
        (pd.DataFrame({"smi": ["CCO", "CCC"], "y": [0, 1]}), {}, r"t\.csv: no SMILES column 'smiles'"),
        (pd.DataFrame({"smiles": ["xx", "C1CC"], "y": [0, 1]}), {}, r"t\.csv: no valid SMILES in column 'smiles'"),
        (pd.DataFrame({"smiles": ["CCO", "CCC", "xx"], "y": [1, 1, 0]}), {}, r"task 'y' has only one class \(1\)"),
        (pd.DataFrame({"smiles": ["CCO", "CCC"], "y": ["0", "high"]}), {}, r"task 'y' row 1: label 'high' is not a number"),
    ],
)
def test_bad_input_is_one_line_naming_the_problem(tmp_path, frame, kwargs, message):
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    for call in (lambda: check_labelled_csv(path, smiles_col="smiles", **kwargs),
                 lambda: prepare_labelled(frame, smiles_col="smiles", name=str(path), **kwargs)):
        with pytest.raises(LabelledInputError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def bbbp_smiles():
    frame, _ = load_shipped("bbbp")
    return frame["smiles"].iloc[:400].tolist()


def test_scaffold_split_is_deterministic_largest_sets_first_without_leakage(bbbp_smiles):
    s1 = split_molecules(bbbp_smiles, mode="scaffold")
    s2 = split_molecules(list(bbbp_smiles), mode="scaffold", seed=123)  # the seed does not matter
    np.testing.assert_array_equal(s1, s2)
    n = len(bbbp_smiles)
    sizes = {k: int((s1 == k).sum()) for k in ("train", "val", "test")}
    assert sum(sizes.values()) == n and sizes["train"] <= 0.8 * n and sizes["train"] + sizes["val"] <= 0.9 * n
    assert sizes["train"] >= 0.75 * n and sizes["val"] > 0 and sizes["test"] > 0
    scaf = pd.Series([scaffold_of(s) for s in bbbp_smiles])
    parts = pd.crosstab(scaf, s1)
    assert ((parts > 0).sum(axis=1) == 1).all()  # every scaffold in exactly one part
    counts = scaf.value_counts()
    assert s1[scaf == counts.index[0]][0] == "train"  # the largest scaffold set goes to train
    # train holds the largest sets: none of val/test's scaffold sets is larger than the smallest train set
    smallest_train = counts[scaf[s1 == "train"].unique()].min()
    assert counts[scaf[s1 != "train"].unique()].max() <= max(smallest_train, counts.iloc[0])


def test_balanced_and_random_splits_are_seeded(bbbp_smiles):
    b0 = split_molecules(bbbp_smiles, mode="scaffold_balanced", seed=0)
    np.testing.assert_array_equal(b0, split_molecules(bbbp_smiles, mode="scaffold_balanced", seed=0))
    assert (b0 != split_molecules(bbbp_smiles, mode="scaffold_balanced", seed=1)).any()
    scaf = pd.Series([scaffold_of(s) for s in bbbp_smiles])
    assert ((pd.crosstab(scaf, b0) > 0).sum(axis=1) == 1).all()
    r = split_molecules(bbbp_smiles, mode="random", seed=3)
    assert [(r == k).sum() for k in ("train", "val", "test")] == [320, 40, 40]
    with pytest.raises(ValueError, match="scaffold_balanced"):
        split_molecules(bbbp_smiles, mode="cluster")


def test_split_table_has_one_row_per_molecule():
    frame = pd.DataFrame({"smiles": ["CCO", "c1ccccc1C", "c1ccccc1CC", "xx"], "y": [0, 1, 0, 1]})
    data = prepare_labelled(frame, smiles_col="smiles")
    split = split_molecules(data.smiles, mode="random", fractions=(0.34, 0.33, 0.33))
    table = split_table(data, split)
    assert table.columns.tolist() == ["row", "input_smiles", "smiles", "scaffold", "split"]
    assert table["row"].tolist() == [0, 1, 2] and table["scaffold"].tolist() == ["", "c1ccccc1", "c1ccccc1"]
