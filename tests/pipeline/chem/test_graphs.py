"""Tests of pipeline.chem.graphs: OGB-identical graphs, the graphs table and PyG conversion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.chem.parents import merge_parents
from pipeline.chem.standardize import standardize_table
from pipeline.chem.graphs import (
    ATOM_FEATURE_DIMS,
    BOND_FEATURE_DIMS,
    GraphError,
    graphs_table,
    graphs_to_data,
    morgan_fingerprints,
    smiles_to_graph,
)
from pipeline.chem.library import load_compound_library
from pipeline.store.schema import read_table, write_table

EXTRA = ["C", "[Na+].[Cl-]", "F/C=C/F", "C[C@H](F)Cl", "[2H]C", "[CH3]", "CN(=O)=O", "[O-][n+]1ccccc1",
         "F[S](F)(F)(F)(F)F", "C[C@H]1CC[C@@H](C)CC1", "[Pt@SP1](Cl)(Cl)(N)N", "C=[C@]=CC", "*C"]


def _library_smiles() -> list[str]:
    return load_compound_library()["Metadata_SMILES"].tolist() + EXTRA


def test_contract_and_dims() -> None:
    g = smiles_to_graph("CCO")
    assert set(g) == {"node_feat", "edge_index", "edge_feat", "num_nodes"}
    assert g["node_feat"].shape == (3, 9) and g["node_feat"].dtype == np.int64
    assert g["edge_index"].tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert g["edge_feat"].shape == (4, 3) and g["edge_feat"].dtype == np.int64
    assert g["num_nodes"] == 3
    single = smiles_to_graph("[Na+]")
    assert single["edge_index"].shape == (2, 0) and single["edge_feat"].shape == (0, 3)
    assert ATOM_FEATURE_DIMS == [119, 5, 12, 12, 10, 6, 6, 2, 2]
    assert BOND_FEATURE_DIMS == [5, 6, 2]
    with pytest.raises(GraphError, match="C1CC"):
        smiles_to_graph("C1CC")


def test_identical_to_ogb() -> None:
    pytest.importorskip("ogb", reason="ogb not installed: cannot compare with ogb.utils.smiles2graph")
    from ogb.utils import smiles2graph
    from ogb.utils.features import get_atom_feature_dims, get_bond_feature_dims

    assert ATOM_FEATURE_DIMS == get_atom_feature_dims()
    assert BOND_FEATURE_DIMS == get_bond_feature_dims()
    for smiles in _library_smiles():
        ref, ours = smiles2graph(smiles), smiles_to_graph(smiles)
        assert ours["num_nodes"] == ref["num_nodes"], smiles
        for key in ("node_feat", "edge_index", "edge_feat"):
            assert ours[key].dtype == ref[key].dtype, (smiles, key)
            np.testing.assert_array_equal(ours[key], ref[key], err_msg=f"{smiles} {key}")


def test_table_roundtrip_to_pyg(tmp_path) -> None:
    lib = load_compound_library().head(150)
    records = pd.DataFrame({"Metadata_Source": "lib", "Metadata_CompoundID": lib["Metadata_CompoundID"],
                            "Input_SMILES": lib["Metadata_SMILES"]})
    compounds = merge_parents(standardize_table(records))
    table = graphs_table(compounds)
    assert len(table) == len(compounds)
    path = write_table(table, "graphs", tmp_path / "graphs.parquet")
    assert pq.read_schema(path).field("node_feat").type.value_type == pa.int16()
    back = read_table("graphs", path)  # object columns of arrays: the other input flavour
    for frame in (table, back):
        data = graphs_to_data(frame)
        assert len(data) == len(compounds)
        for d, smiles, key in zip(data, compounds["Metadata_SMILES"], compounds["Metadata_InChIKey"]):
            g = smiles_to_graph(smiles)
            assert d.inchikey == key and d.num_nodes == g["num_nodes"]
            assert d.x.dtype == d.edge_index.dtype == d.edge_attr.dtype == __import__("torch").int64
            np.testing.assert_array_equal(d.x.numpy(), g["node_feat"])
            np.testing.assert_array_equal(d.edge_index.numpy(), g["edge_index"])
            np.testing.assert_array_equal(d.edge_attr.numpy(), g["edge_feat"])
    assert graphs_table(compounds, n_jobs=2).equals(table)


def test_morgan_fingerprints() -> None:
    fp = morgan_fingerprints(["CCO", "c1ccccc1"], radius=2, n_bits=1024)
    assert fp.shape == (2, 1024) and fp.dtype == np.uint8
    assert set(np.unique(fp)) <= {0, 1} and fp.sum(1).min() > 0
    with pytest.raises(GraphError, match="#1"):
        morgan_fingerprints(["CCO", "C1CC"])
