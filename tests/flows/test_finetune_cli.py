"""`cmcl finetune`: one-line errors for bad CSV input, and the results JSON + split it writes."""

import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from cmcl_model.reports.finetune import finetune_schema
from cmcl_model.finetune.labelled import load_shipped
from cmcl_model.reports.validation import validate_json
from flows.cli import app

runner = CliRunner()


def _one_line(output: str) -> str:
    return re.sub(r"\s+", " ", output).strip()


@pytest.mark.parametrize(
    "frame, args, message",
    [
        (pd.DataFrame({"smiles": ["CCO", "CCC"], "y": [0, 1]}), ["--task", "toxic"], "no task column(s) ['toxic']"),
        (pd.DataFrame({"smiles": ["CCO", "CCC"], "y": [0, 1]}), ["--smiles-col", "mol"], "no SMILES column 'mol'"),
        (pd.DataFrame({"smiles": ["nope", "C1CC"], "y": [0, 1]}), [], "no valid SMILES in column 'smiles'"),
        (pd.DataFrame({"smiles": ["CCO", "CCC", "CCN"], "y": [1, 1, 1]}), [], "task 'y' has only one class (1)"),
    ],
)
def test_bad_csv_is_a_one_line_error(tmp_path, frame, args, message):
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    result = runner.invoke(app, ["--quiet", "finetune", "--csv", str(path), *args])
    assert result.exit_code == 1
    out = _one_line(result.output)
    assert out.startswith("error: LabelledInputError:") and "bad.csv" in out and message in out
    assert "Traceback" not in result.output


def test_dataset_xor_csv():
    result = runner.invoke(app, ["--quiet", "finetune"])
    assert result.exit_code == 1 and "exactly one of --dataset NAME or --csv FILE" in _one_line(result.output)


def test_finetune_csv_writes_results_and_split(tmp_path):
    frame, _ = load_shipped("bbbp")
    path = tmp_path / "bbbp.csv"
    frame.iloc[::25].to_csv(path, index=False)  # 82 molecules
    out = tmp_path / "res.json"
    result = runner.invoke(app, ["--quiet", "finetune", "--csv", str(path), "--task", "p_np",
                                 "--seeds", "2", "--epochs", "1", "--layers", "2", "--hidden", "16", "--split", "random",
                                 "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    validate_json(doc, finetune_schema())
    assert doc["tasks"] == ["p_np"] and doc["split"]["mode"] == "random" and doc["n_molecules"] == 82
    m = doc["methods"]["gin_random"]
    assert len(m["test"]["per_seed"]) == 2 and 0.0 <= m["test"]["mean"] <= 1.0 and set(m["per_task_test"]) == {"p_np"}
    assert doc["config"]["epochs"] == 1 and doc["config"]["layers"] == 2
    split = pd.read_csv(tmp_path / "res.split.csv")
    assert len(split) == doc["n_molecules"] and set(split["split"]) == {"train", "val", "test"}
    assert "gin_random" in result.output and str(out) in _one_line(result.output)
    assert doc["config"]["select"] == "last" and m["test"] == m["test_last"]  # cmcl's own headline
    assert "at the last epoch" in _one_line(result.output) and "best-val epoch" in result.output


def test_select_must_be_last_or_best_val():
    result = runner.invoke(app, ["--quiet", "finetune", "--dataset", "bbbp", "--select", "best"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--select must be last or best_val, got 'best'" in _one_line(result.output)
    result = runner.invoke(app, ["--quiet", "finetune", "--dataset", "bbbp", "--select", "last", "--patience", "5"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--patience stops training early and reports the best-validation epoch; drop --select last" in _one_line(result.output)


def test_hu2020_with_a_pretrained_encoder_is_a_one_line_error():
    result = runner.invoke(app, ["--quiet", "finetune", "--dataset", "bbbp", "--protocol", "hu2020", "--init", "enc.pt"])
    out = _one_line(result.output)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "reads OGB features" in out and "use --protocol cmcl" in out


def test_hu2020_records_hu_et_al_s_featurizer_and_layer(tmp_path):
    frame, _ = load_shipped("bbbp")
    path = tmp_path / "bbbp.csv"
    frame.iloc[::25].to_csv(path, index=False)
    out = tmp_path / "hu.json"
    result = runner.invoke(app, ["--quiet", "finetune", "--csv", str(path), "--task", "p_np", "--protocol", "hu2020",
                                 "--seeds", "2", "--epochs", "4", "--layers", "2", "--hidden", "16", "--out", str(out)],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    validate_json(doc, finetune_schema())
    assert (doc["protocol"], doc["featurizer"], doc["config"]["conv"]) == ("hu2020", "hu2020", "selfloop")
    assert "hu2020 features" in _one_line(result.output)
    # Hu et al. report each seed's test at its best-validation epoch (parse_result.py): so does the reproduction
    m = doc["methods"]["gin_random"]
    assert doc["config"]["select"] == "best_val" and m["test"] == m["test_best_val"]
    for seed, (curve, best) in enumerate(zip(m["curves"], m["best_epoch"])):
        assert best == 1 + max(range(4), key=lambda e: (curve["val"][e], -e))  # the first epoch of highest val
        assert m["test_best_val"]["per_seed"][seed] == curve["test"][best - 1]
    assert "at the best-validation epoch" in _one_line(result.output) and "last epoch" in result.output
    last = m["test_last"]
    assert f"{100 * last['mean']:.1f} ± {100 * last['sd']:.1f}" in result.output  # the other epoch's score, shown too
