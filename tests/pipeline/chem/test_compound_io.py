"""Tests of pipeline.chem.io: chunked readers for CSV/TSV/SMI/SDF/Parquet."""

from __future__ import annotations

import tracemalloc

import pandas as pd
import pytest

from pipeline.chem.io import READER_COLUMNS, read_compounds
from pipeline.chem.standardize import standardize_stream, standardize_table
from pipeline.store.schema import conform

GOOD_MOLBLOCK = """ethanol
     RDKit          2D

  3  2  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    1.2990    0.7500    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    2.5981   -0.0000    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  2  3  1  0
M  END
> <ID>
E-1

$$$$
"""
BROKEN_MOLBLOCK = """broken
     RDKit          2D

  3  2  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
M  END
> <ID>
B-2

$$$$
"""


def _all(path, **kw) -> pd.DataFrame:
    chunks = list(read_compounds(path, **kw))
    for c in chunks:
        assert tuple(c.columns) == READER_COLUMNS
    return pd.concat(chunks, ignore_index=True)


def test_csv_case_insensitive_and_row_ids(tmp_path) -> None:
    p = tmp_path / "lib.csv"
    p.write_text("Compound,SMILES\nX1,CCO\n,c1ccccc1\nX3,\n")
    out = _all(p)
    assert out["Metadata_CompoundID"].tolist() == ["lib.csv:1", "lib.csv:2", "lib.csv:3"]
    assert out["Input_SMILES"].tolist() == ["CCO", "c1ccccc1", ""]
    out = _all(p, id_col="compound")
    assert out["Metadata_CompoundID"].tolist() == ["X1", "lib.csv:2", "X3"]
    assert (out["Metadata_Source"] == "lib.csv").all()
    with pytest.raises(ValueError, match=r"columns seen: \['Compound', 'SMILES'\]"):
        next(read_compounds(p, smiles_col="structure"))


def test_tsv_smi_parquet(tmp_path) -> None:
    (tmp_path / "a.tsv").write_text("smiles\tname\nCCO\tE\n")
    assert _all(tmp_path / "a.tsv", id_col="NAME")["Metadata_CompoundID"].tolist() == ["E"]
    (tmp_path / "b.smi").write_text("SMILES Name\nCCO ethanol\n\nc1ccccc1\n")
    smi = _all(tmp_path / "b.smi")
    assert smi["Metadata_CompoundID"].tolist() == ["ethanol", "b.smi:4"]
    pd.DataFrame({"Smiles": ["CCO", "CCN"], "id": ["p1", "p2"]}).to_parquet(tmp_path / "c.parquet")
    pq = _all(tmp_path / "c.parquet", id_col="ID", chunksize=1)
    assert pq["Metadata_CompoundID"].tolist() == ["p1", "p2"]
    (tmp_path / "a.bak").write_text("")
    with pytest.raises(ValueError, match="known suffixes"):
        next(read_compounds(tmp_path / "a.bak"))


def test_sdf_with_broken_record(tmp_path) -> None:
    p = tmp_path / "mols.sdf"
    p.write_text(GOOD_MOLBLOCK + BROKEN_MOLBLOCK + GOOD_MOLBLOCK.replace("E-1", "E-3"))
    out = _all(p, id_col="ID")
    assert out["Metadata_CompoundID"].tolist() == ["E-1", "B-2", "E-3"]
    assert out["Input_SMILES"].tolist() == ["CCO", "", "CCO"]
    assert out["Error"].isna().tolist() == [True, False, True]
    assert out.loc[1, "Error"].startswith("unreadable SD record 2")
    assert _all(p)["Metadata_CompoundID"].tolist()[0] == "ethanol"  # title line by default
    inputs = standardize_table(out)
    conform(inputs, "compound_inputs")
    assert inputs["Status"].tolist() == ["ok", "failed", "ok"]
    assert inputs.loc[1, "Error"] == out.loc[1, "Error"]


def test_stream_20k_rows_in_bounded_chunks(tmp_path) -> None:
    p = tmp_path / "big.csv"
    smiles = ["CCO", "CC(=O)Nc1ccc(O)cc1.Cl", "c1ccccc1C(=O)[O-].[Na+]", "bad"]
    pd.DataFrame({"smiles": smiles * 5000}).to_csv(p, index=False)
    tracemalloc.start()
    sizes, failed = [], 0
    for chunk in read_compounds(p, chunksize=2500):
        sizes.append(len(chunk))
    _, peak_read = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sizes == [2500] * 8
    assert peak_read < 20e6, f"reading peaked at {peak_read / 1e6:.1f} MB"
    # standardize a bounded prefix of the stream with two workers (keeps the test fast)
    def first(n):
        for i, chunk in enumerate(read_compounds(p, chunksize=500)):
            if i == n:
                return
            yield chunk
    outs = list(standardize_stream(first(4), n_jobs=2))
    assert [len(o) for o in outs] == [500] * 4
    for o in outs:
        conform(o, "compound_inputs")
        failed += (o["Status"] == "failed").sum()
    assert failed == 500


def test_common_id_columns_are_found_without_a_flag(tmp_path) -> None:
    from pipeline.chem.io import check_compound_file, find_id_column

    one = tmp_path / "one.csv"
    one.write_text("smiles,ID\nCCO,E-1\nc1ccccc1,B-2\n")
    assert _all(one)["Metadata_CompoundID"].tolist() == ["E-1", "B-2"]
    assert check_compound_file(one) == "one.csv: IDs from column 'ID'"
    # priority: the declared order, whatever the file's column order or case
    assert find_id_column(["name", "SMILES", "Metadata_broad_sample", "CHEMBL_ID"]) == "Metadata_broad_sample"
    assert find_id_column(["Name", "smiles"]) == "Name"
    assert find_id_column(["id", "smiles"], exclude=["ID"]) is None
    # blanks and punctuation do not count: the cell-injury screen's (IDR0133) header
    assert find_id_column(["Compound SMILES", "Compound InChIKey", "Compound Name", "Plate"],
                          exclude=["Compound SMILES"]) == "Compound Name"
    jump = tmp_path / "jump.tsv"
    jump.write_text("Metadata_JCP2022\tMetadata_InChIKey\tname\tsmiles\nJCP2022_000001\tK\tn1\tCCN\n")
    assert _all(jump)["Metadata_CompoundID"].tolist() == ["JCP2022_000001"]
    pd.DataFrame({"SMILES": ["CCO"], "pert_id": ["BRD-K1"]}).to_parquet(tmp_path / "p.parquet")
    assert _all(tmp_path / "p.parquet", smiles_col="SMILES")["Metadata_CompoundID"].tolist() == ["BRD-K1"]
    # an explicit --id-col still wins, and without any ID column one line says how records are named
    assert _all(jump, id_col="name")["Metadata_CompoundID"].tolist() == ["n1"]
    bare = tmp_path / "bare.csv"
    bare.write_text("smiles,weight\nCCO,46\n")
    line = check_compound_file(bare)
    assert "bare.csv:1" in line and "--id-col" in line and "\n" not in line
    assert _all(bare)["Metadata_CompoundID"].tolist() == ["bare.csv:1"]
