"""Tests of pipeline.chem.batch and pipeline.chem.choices."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.chem.batch import check_n_jobs, split_evenly
from pipeline.chem.choices import FRAGMENT_MODES
from pipeline.chem.standardize import standardize_smiles


@pytest.mark.parametrize(("n", "parts"), [(10, 4), (3, 8), (0, 2), (17, 1)])
def test_split_evenly_keeps_order_and_balances(n: int, parts: int) -> None:
    items = [f"s{i}" for i in range(n)]
    cut = split_evenly(items, parts)
    assert [x for part in cut for x in part] == items
    assert len(cut) == min(n, parts) and all(cut)
    if cut:
        assert max(map(len, cut)) - min(map(len, cut)) <= 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_check_n_jobs_names_the_value(bad: object) -> None:
    with pytest.raises(ValueError, match=repr(bad)):
        check_n_jobs(bad)  # type: ignore[arg-type]


def test_fragment_modes_are_the_literal_and_a_bad_one_lists_them() -> None:
    assert FRAGMENT_MODES == ("all", "largest")
    with pytest.raises(ValueError, match="all, largest"):
        standardize_smiles("CCO", fragments="biggest")  # type: ignore[arg-type]


def test_choices_import_nothing_heavy() -> None:
    """The CLI reads the choice lists at start-up: they must not pull in pandas or RDKit."""
    code = ("import sys, pipeline.chem.choices, pipeline.profiles.choices; "
            "print(sorted(m for m in ('numpy', 'pandas', 'rdkit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
