"""The preflight (folder listing, fingerprint, plate map, channel check) runs once per plate, on
every path: `cmcl ingest` (which runs it before Prefect starts) and a flow given plate folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import pipeline.ingest.plan as plan_mod
from flows.cli import app
from flows.parallel import ingest_flow
from pipeline.store.paths import Store


@pytest.fixture(scope="module")
def plate(tmp_path_factory) -> Path:
    from pipeline.synthetic import generate

    return generate(tmp_path_factory.mktemp("once_inbox"), plate_id="PO", n_wells=3, sites=1, size=64, seed=5)


@pytest.fixture
def counted(monkeypatch) -> dict[str, list[str]]:
    """Calls of the preflight's two costly steps, by plate folder name."""
    calls: dict[str, list[str]] = {"plan_plate": [], "check_channels": []}
    real_plan, real_check = plan_mod.plan_plate, plan_mod.check_channels

    def plan_plate(plate_dir, *a, **k):
        calls["plan_plate"].append(Path(plate_dir).name)
        return real_plan(plate_dir, *a, **k)

    def check_channels(listing, *a, **k):
        calls["check_channels"].append(listing.root.name)
        return real_check(listing, *a, **k)

    monkeypatch.setattr(plan_mod, "plan_plate", plan_plate)
    monkeypatch.setattr(plan_mod, "check_channels", check_channels)
    return calls


def test_cmcl_ingest_runs_the_preflight_once_per_plate(plate, tmp_path, counted):
    store = tmp_path / "s"
    result = CliRunner().invoke(app, ["--quiet", "ingest", str(plate), "--store", str(store), "--crop-size", "16",
                                      "--features", "none"])
    assert result.exit_code == 0, result.output
    assert counted == {"plan_plate": ["PO"], "check_channels": ["PO"]}
    assert Store(store).read("ledger")["Status"].tolist() == ["complete"]


def test_a_flow_given_folders_runs_the_preflight_once_per_plate(plate, tmp_path, counted):
    results = ingest_flow([str(plate)], str(tmp_path / "s"), settings={"crop_size": 16})
    assert [r["status"] for r in results] == ["complete"]
    assert counted == {"plan_plate": ["PO"], "check_channels": ["PO"]}
