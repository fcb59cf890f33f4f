"""Regenerate the behaviour-lock goldens (``tests/test_behaviour_lock.py``, issue #26).

The goldens pin what the stages write today: pixels as stored, labels, crops, illumination
functions, the cells, features and profile tables (``tests/lock_fingerprint.py`` says what is
fingerprinted and what is left out). They exist so that a refactor that must not change
behaviour (the layout move of issue #26) can prove it did not.

When to regenerate: only when a change is *meant* to change what a stage writes (a new feature,
a fixed threshold, a new column), never to make a failing lock pass after a refactor. Run it,
look at ``git diff --stat tests/data/behaviour_lock`` and commit the JSON in its own commit
whose message says which stage changed and why::

    PYTHONPATH=. python tests/data/behaviour_lock/regenerate.py [real] [generated]

It builds each scenario's store through the ``cmcl`` CLI in a temporary folder (about 20-40 s
on a 2-core machine, with a temporary Prefect API) and writes ``<scenario>.json`` here.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ["CMCL_REUSE_SERVER"] = "0"  # as the test suite: never start or reuse a background server
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("CMCL_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.lock_fingerprint import SCENARIOS, build_store, fingerprint_store, write_golden  # noqa: E402


def main(names: list[str]) -> None:
    import flows  # noqa: F401  (cmcl's Prefect defaults)
    from prefect.testing.utilities import prefect_test_harness

    from flows.api import no_flow_heartbeats

    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; choose from {sorted(SCENARIOS)}")
    with prefect_test_harness(server_startup_timeout=120), no_flow_heartbeats():
        for name in names or list(SCENARIOS):
            with tempfile.TemporaryDirectory(prefix=f"cmcl-lock-{name}-") as tmp:
                store = build_store(SCENARIOS[name], Path(tmp))
                path = write_golden(name, fingerprint_store(store),
                                    note="written by tests/data/behaviour_lock/regenerate.py; see its docstring")
            print(f"{name}: {path} ({path.stat().st_size / 1024:.1f} KiB)")


if __name__ == "__main__":
    main(sys.argv[1:])
