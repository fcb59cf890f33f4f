"""Shared fixtures: small generated plates (real generator output) and an ingested store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Prefect: quiet, offline, patient on a busy 2-core machine; must be set before Prefect imports.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("CMCL_PROGRESS", "0")
# A developer's running `cmcl server` is not the tests' business, and no test may leave a background
# one behind: every cmcl process the tests start stays on the API the test chose and never starts a
# server (tests of the reuse and of the background server set CMCL_REUSE_SERVER=1 in a PREFECT_HOME
# of their own and stop what they started: tests/flows/test_background_server.py).
os.environ["CMCL_REUSE_SERVER"] = "0"
# Likewise no warm helper (flows.warm): the `cmcl` commands tests start run in their own process
# (tests of the helper set CMCL_WARM=1 and stop it: tests/flows/test_warm.py).
os.environ["CMCL_WARM"] = "0"
import flows  # noqa: E402,F401  (applies cmcl's Prefect defaults)
import torch  # noqa: E402  (its default thread count, kept for every test: _torch_threads_restored)

_TORCH_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A test that sets torch's thread count (e.g. ``benchmarks/finetune.py --threads 1`` called
    in-process) must not change the float summation order of the tests after it, nor make them
    differ from the cmcl processes they start: torch's own default count is put back."""
    yield
    if torch.get_num_threads() != _TORCH_THREADS:
        torch.set_num_threads(_TORCH_THREADS)


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API for the whole session (starting one costs 10-20 s); yields its URL.

    Flows run in the test process use it, and so do the ``cmcl`` processes tests start: its URL is
    exported as ``PREFECT_API_URL`` while it runs (a test exercising Prefect's ephemeral mode
    removes ``PREFECT_API*`` from the child's environment). At session end the server is stopped
    and its process waited for. Flows the tests call directly run without heartbeats, as the CLI's
    do (:func:`flows.api.no_flow_heartbeats`: up to 1 s saved per flow run).
    """
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from flows.api import no_flow_heartbeats

    with prefect_test_harness(server_startup_timeout=120), no_flow_heartbeats():
        url = PREFECT_API_URL.value()
        prior = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            if prior is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = prior


@pytest.fixture(scope="session")
def small_plate(tmp_path_factory) -> Path:
    """12 wells x 2 sites, 256 px, ImageXpress layout, with ground truth."""
    from pipeline.synthetic import generate

    return generate(tmp_path_factory.mktemp("inbox"), plate_id="T1", n_wells=12, sites=2, size=256, seed=3)


@pytest.fixture(scope="session")
def faulty_plate(tmp_path_factory) -> Path:
    """24 wells x 2 sites with injected faults (listed in ground_truth/faults.csv)."""
    from pipeline.synthetic import generate

    return generate(tmp_path_factory.mktemp("faulty"), plate_id="F1", n_wells=24, sites=2, size=128, seed=5,
                    faults=True)


@pytest.fixture(scope="session")
def ingested(small_plate, tmp_path_factory):
    """A store holding ``small_plate`` ingested with 32 px crops; returns (store, PlateResult)."""
    from pipeline.ingest.run import IngestSettings, ingest_plate
    from pipeline.store.paths import Store

    store = Store(tmp_path_factory.mktemp("store"))
    result = ingest_plate(small_plate, store, IngestSettings(crop_size=32))
    return store, result
