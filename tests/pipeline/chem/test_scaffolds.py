"""Tests of pipeline.chem.scaffolds and pipeline.chem.fingerprints, against RDKit's own functions."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

from pipeline.chem.fingerprints import morgan_features
from pipeline.chem.graphs import GraphError, morgan_fingerprints
from pipeline.chem.library import load_compound_library
from pipeline.chem.scaffolds import ScaffoldError, scaffold


def test_scaffold_equals_rdkit_on_the_shipped_library() -> None:
    smiles = [s for s in load_compound_library()["Metadata_SMILES"] if Chem.MolFromSmiles(s) is not None][:300]
    for chirality in (True, False):
        ours = [scaffold(s, chirality=chirality) for s in smiles]
        assert ours == [MurckoScaffold.MurckoScaffoldSmiles(smiles=s, includeChirality=chirality) for s in smiles]
    assert sum(scaffold(s, chirality=True) != scaffold(s, chirality=False) for s in smiles) > 0


@pytest.mark.parametrize(("smiles", "chiral", "flat"), [
    ("C1CC[C@H]2CCCC[C@@H]2C1", "C1CC[C@H]2CCCC[C@@H]2C1", "C1CCC2CCCCC2C1"),  # trans-decalin: stereo in the rings
    ("N[C@@H](Cc1ccccc1)C(=O)O", "c1ccccc1", "c1ccccc1"),  # stereo in a side chain: gone either way
    ("CCO", "", ""),  # acyclic: the empty scaffold
])
def test_scaffold_chirality(smiles: str, chiral: str, flat: str) -> None:
    assert scaffold(smiles, chirality=True) == chiral
    assert scaffold(smiles, chirality=False) == flat


@pytest.mark.parametrize("bad", ["C1CC", "", "xyz"])
def test_scaffold_of_an_unparsable_smiles_names_it(bad: str) -> None:
    with pytest.raises(ScaffoldError, match=repr(bad)):
        scaffold(bad, chirality=True)
    with pytest.raises(TypeError):
        scaffold(None, chirality=True)  # type: ignore[arg-type]


def test_morgan_features_are_the_fingerprint_bits_as_float32() -> None:
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
    x = morgan_features(iter(smiles), n_bits=512)
    assert x.dtype == np.float32 and x.shape == (3, 512)
    np.testing.assert_array_equal(x, morgan_fingerprints(smiles, n_bits=512))
    assert set(np.unique(x)) == {0.0, 1.0}
    with pytest.raises(GraphError, match="#1"):
        morgan_features(["CCO", "C1CC"])
