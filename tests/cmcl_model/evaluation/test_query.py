import pandas as pd
import pytest
from PIL import Image

from cmcl_model.evaluation.embeddings import well_embeddings
from cmcl_model.evaluation.query import query_smiles, query_well


def test_query_smiles_ranks_wells_and_writes_grid(quick_run, syn_store, tmp_path):
    comp = syn_store.read("compounds")
    smi = comp["Metadata_SMILES"].iloc[0]
    df = query_smiles(syn_store.root, quick_run, smi, top=5, out_dir=tmp_path / "q")
    assert list(df["Rank"]) == [1, 2, 3, 4, 5]
    assert {"Metadata_Plate", "Metadata_Well", "Metadata_CompoundID", "Metadata_InChIKey", "Score"} <= set(df.columns)
    assert df["Score"].is_monotonic_decreasing and df["Score"].between(-1, 1).all()
    for name in ("index.html", "wells.png", "results.csv"):
        assert (tmp_path / "q" / name).is_file()
    Image.open(tmp_path / "q" / "wells.png").load()
    assert "wells.png" in (tmp_path / "q" / "index.html").read_text()
    # the cache holds every well with cells (96 compounds + 4 DMSO per plate, 2 plates)
    wells, emb = well_embeddings(syn_store.root, quick_run)
    assert len(wells) == emb.shape[0] == 200
    assert syn_store.path("well_embeddings", run=quick_run.name).is_file()


def test_query_smiles_bad_input(quick_run, syn_store):
    with pytest.raises(ValueError, match="C1CC"):
        query_smiles(syn_store.root, quick_run, "C1CC(")
    with pytest.raises(ValueError, match="top"):
        query_smiles(syn_store.root, quick_run, "CCO", top=0)


def test_query_well_draws_structures(quick_run, syn_store, tmp_path):
    pm = syn_store.read("platemap")
    row = pm[pm["Metadata_ControlType"] == "trt"].iloc[0]
    df = query_well(syn_store.root, quick_run, row["Metadata_Plate"], row["Metadata_Well"], top=96, out_dir=tmp_path / "w")
    assert len(df) == 96 and df["InWell"].sum() == 1  # every compound ranked; the true one once
    assert df.attrs["well_compound"] == df.loc[df["InWell"], "Metadata_InChIKey"].item()
    Image.open(tmp_path / "w" / "structures.png").load()
    Image.open(tmp_path / "w" / "well.png").load()
    with pytest.raises(ValueError, match="no well"):
        query_well(syn_store.root, quick_run, "NOPE", "Z99")
