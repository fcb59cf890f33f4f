"""``cmcl``: the command line. Every verb calls a flow (or a pipeline reader) and prints.

| module | verbs |
|---|---|
| :mod:`flows.cli.app` | the Typer app, ``--quiet``/``--debug``, shared options and CLI-boundary helpers |
| :mod:`flows.cli.data` | synth, ingest, compounds, profile, import-profiles, verify, inspect |
| :mod:`flows.cli.model` | train, evaluate, finetune, query, embed, export |
| :mod:`flows.cli.service` | run, demo, serve, server |
| :mod:`flows.cli.printing` | tables and lines several verbs print |

A new verb: its function in one of these modules, then one line in :data:`VERBS` (whose order is
the order of ``cmcl --help``).
"""

from __future__ import annotations

from flows.cli import data, model, service
from flows.cli.app import app

__all__ = ["app", "VERBS"]

#: (name, function) of every verb, in the order ``cmcl --help`` lists them.
VERBS = (
    ("synth", data.synth), ("ingest", data.ingest), ("compounds", data.compounds), ("train", model.train),
    ("evaluate", model.evaluate), ("profile", data.profile), ("import-profiles", data.import_profiles),
    ("run", service.run), ("demo", service.demo), ("serve", service.serve), ("server", service.server),
    ("verify", data.verify), ("finetune", model.finetune), ("query", model.query), ("embed", model.embed),
    ("export", model.export), ("inspect", data.inspect),
)

for name, verb in VERBS:
    app.command(name)(verb)
del name, verb
