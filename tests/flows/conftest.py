import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_prefect_api(prefect_api):
    """Every flow test talks to the session's one Prefect API (tests/conftest.py ``prefect_api``)."""
    yield prefect_api
