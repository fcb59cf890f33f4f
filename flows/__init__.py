"""Prefect flows wrapping ``pipeline`` and ``cmcl_model``; ``flows.cli`` is the ``cmcl`` command.

Prefect reads its settings when first imported, so the defaults cmcl needs are put in the
environment here, before any flow module imports Prefect. A user's own setting always wins.
"""

import os as _os

#: Prefect settings cmcl relies on unless the user set them: no telemetry (machines may be
#: offline) and a patient start of the ephemeral API on small, busy machines.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_UI_ENABLED": "false",
}
for _k, _v in PREFECT_DEFAULTS.items():
    _os.environ.setdefault(_k, _v)
