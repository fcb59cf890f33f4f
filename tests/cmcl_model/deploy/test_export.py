"""Encoders that leave the store: ``export_run`` / ``load_exported``, embeddings of compound files,
and fine-tuning from an exported file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cmcl_model.deploy.embed import EMBEDDING_COLUMNS, embed_file, embed_smiles, write_embeddings
from cmcl_model.deploy.export import ExportError, export_run, load_exported
from pipeline.synthetic.store import make_synthetic_store
from cmcl_model.train.checkpoints import load_model
from cmcl_model.train.config import TrainConfig
from cmcl_model.train.loop import train
from pipeline.store.schema import read_table

CONFIG = TrainConfig.quick(epochs=1, batch_size=8, gin_layers=2, gin_hidden=32, cnn_widths=(8, 16), proj_dim=16,
                           norm_crops=64, split_fractions=(0.5, 0.25, 0.25))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    store = make_synthetic_store(tmp_path_factory.mktemp("export") / "store", n_compounds=32, n_dmso=2, cells_per_well=4)
    return train(store, CONFIG, run_id="20260101-000000-export", progress=False)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    return export_run(run, tmp_path_factory.mktemp("out") / "enc" / "cmcl_encoder.pt")


def test_exported_file_loads_without_the_store_and_embeds_the_same(run, exported, tmp_path):
    run_model = load_model(run)[0]
    store = run.parent.parent
    hidden = store.rename(tmp_path / "store-away")  # no store while the file loads
    try:
        model, config, meta = load_exported(exported)
    finally:
        hidden.rename(store)
    assert config == CONFIG and meta["run_id"] == run.name and meta["featurizer"]["name"] == "ogb-smiles2graph"
    assert not model.training
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
    got = embed_smiles(model, smiles)
    assert list(got.columns) == list(EMBEDDING_COLUMNS) and (got["Status"] == "ok").all()
    assert np.stack(got["Embedding"]).shape == (3, CONFIG.proj_dim)
    # the same numbers as the run's own model
    ref = embed_smiles(run_model, smiles)
    np.testing.assert_array_equal(np.stack(got["Embedding"]), np.stack(ref["Embedding"]))


def test_embed_file_standardizes_and_lists_failures(exported, tmp_path):
    model, _, _ = load_exported(exported)
    csv = tmp_path / "mine.csv"
    pd.DataFrame({"ID": ["a", "b", "c", "d"],
                  "SMILES": ["CCO", "Cl.CN1CCC(CC1)c1ccccc1", "not a smiles", "CN1CCC(CC1)c1ccccc1"]}).to_csv(csv, index=False)
    table = embed_file(model, csv, smiles_col="SMILES", id_col="ID")
    assert table["Metadata_CompoundID"].tolist() == ["a", "b", "c", "d"]
    assert table["Status"].tolist() == ["ok", "ok", "failed", "ok"]
    assert "unparsable" in table.loc[2, "Error"] and table.loc[2, "Embedding"] is None
    # the hydrochloride is embedded as its parent: same InChIKey, same embedding
    assert table.loc[1, "Metadata_InChIKey"] == table.loc[3, "Metadata_InChIKey"]
    np.testing.assert_array_equal(table.loc[1, "Embedding"], table.loc[3, "Embedding"])
    out = write_embeddings(table, tmp_path / "emb.parquet")
    back = read_table("embeddings", out)
    assert len(back) == 4 and back["Embedding"].isna().tolist() == [False, False, True, False]
    np.testing.assert_allclose(np.asarray(back.loc[0, "Embedding"], dtype=np.float32), table.loc[0, "Embedding"])


def test_bad_files_fail_with_one_clear_error(exported, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_exported(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    with pytest.raises(ExportError, match="is not a cmcl encoder file"):
        load_exported(junk)
    doc = torch.load(exported, weights_only=True)
    other = tmp_path / "other.pt"
    torch.save({**doc, "featurizer": {**doc["featurizer"], "vocabulary_sha256": "0" * 64}}, other)
    with pytest.raises(ExportError, match="featurizer"):
        load_exported(other)
    torch.save({**doc, "format": "something/9"}, other)
    with pytest.raises(ExportError, match="cmcl export"):
        load_exported(other)


def test_finetune_init_accepts_an_exported_file(exported, tmp_path):
    from cmcl_model.finetune.run import FinetuneConfig
    from cmcl_model.reports.finetune import run_finetune
    from cmcl_model.finetune.labelled import load_shipped

    frame, _ = load_shipped("esol")
    frame = frame.iloc[:60]
    csv = tmp_path / "small.csv"
    frame.to_csv(csv, index=False)
    doc, path = run_finetune(csv=csv, smiles_col="smiles", tasks=["logp"], init=str(exported), seeds=1,
                             out=tmp_path / "ft.json", config=FinetuneConfig(epochs=2, batch_size=16))
    assert set(doc["methods"]) == {"gin_pretrained"} and path.is_file()
    assert doc["extra"]["pretrained_run"]["file"] == str(exported)
    assert doc["extra"]["pretrained_run"]["gin_layers"] == CONFIG.gin_layers
    assert np.isfinite(doc["methods"]["gin_pretrained"]["test"]["mean"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_finetune(csv=csv, tasks=["logp"], init=str(tmp_path / "nope.pt"), config=FinetuneConfig(epochs=1))


def test_cli_export_then_embed_without_the_store(run, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    store = run.parent.parent
    out = tmp_path / "model.pt"
    res = runner.invoke(app, ["--quiet", "export", str(out), "--store", str(store), "--run", run.name])
    assert res.exit_code == 0, res.output
    assert "exported" in res.output and out.is_file()
    smi = tmp_path / "mols.smi"
    smi.write_text("CCO ethanol\nC1CC ring_open\nc1ccccc1 benzene\n")
    emb = tmp_path / "emb.parquet"
    res = runner.invoke(app, ["--quiet", "embed", str(smi), "--model", str(out), "--out", str(emb)])
    assert res.exit_code == 0, res.output
    assert "2 of 3 records embedded" in res.output and "failed ring_open" in res.output
    table = read_table("embeddings", emb)
    assert table["Metadata_CompoundID"].tolist() == ["ethanol", "ring_open", "benzene"]
    assert table["Status"].tolist() == ["ok", "failed", "ok"] and table["Embedding"].isna().tolist() == [False, True, False]
    res = runner.invoke(app, ["--quiet", "export", str(out), "--store", str(store), "--run", "no-such-run"])
    assert res.exit_code == 1 and "not found" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["--quiet", "embed", str(tmp_path / "none.csv"), "--model", str(out), "--out", str(emb)])
    assert res.exit_code == 1 and "does not exist" in res.output
