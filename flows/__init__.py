"""Prefect flows wrapping ``pipeline`` and ``cmcl_model``; ``flows.cli`` is the ``cmcl`` command.

Prefect reads its settings when first imported, so the defaults cmcl needs are put in the
environment here, before any flow module imports Prefect. A user's own setting always wins.
"""

import os as _os
import sys as _sys

#: Prefect settings cmcl relies on unless the user set them: no telemetry (machines may be
#: offline) and a patient start of the ephemeral API on small, busy machines.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",  # Prefect's SDK telemetry (prefect._internal.analytics), in a terminal
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_UI_ENABLED": "false",
}
for _k, _v in PREFECT_DEFAULTS.items():
    _os.environ.setdefault(_k, _v)

# ``import prefect`` imports jsonschema, which imports ``rfc3987_syntax`` when it is installed
# (here it comes with the dev extra: datamol -> nglview -> notebook -> jupyter-events ->
# jsonschema[format-nongpl]); that module builds Earley parsers for ~35 IRI grammar rules at
# import, ~1.7 s of the ~3.2 s ``import prefect`` takes on the project's 2-core machine
# (python-jsonschema/jsonschema#1428). It only serves jsonschema's "iri"/"iri-reference" format
# checks, which neither Prefect's parameter schemas nor cmcl use: leave it unimported (jsonschema
# then skips those two formats, as it does when the package is absent).
_sys.modules.setdefault("rfc3987_syntax", None)
