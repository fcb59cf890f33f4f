"""The ``cmcl`` surface as users type it: every verb, in ``cmcl --help`` order, and each one's
arguments and options (names, flags, defaults, help text), against ``tests/data/cli_spec.json``.

A change to the CLI's surface is a deliberate one: after it, rewrite the file with
``python -m tests.flows.test_cli_spec`` and let the diff show what users will see change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SPEC = Path(__file__).resolve().parents[1] / "data" / "cli_spec.json"


def _param(p) -> dict:
    return {
        "name": p.name,
        "kind": type(p).__name__.replace("Typer", ""),
        "opts": list(p.opts) + list(p.secondary_opts),
        "default": None if callable(p.default) else json.loads(json.dumps(p.default, default=str)),
        "required": bool(p.required),
        "multiple": bool(p.multiple),
        "flag": bool(getattr(p, "is_flag", False)),
        "metavar": p.metavar,
        "help": getattr(p, "help", None),
    }


def cli_spec() -> dict:
    """The app's verbs and global options, as JSON-able data."""
    import typer.main

    from flows.cli import app

    group = typer.main.get_command(app)
    return {
        "help": group.help,
        "options": [_param(p) for p in group.params],
        "verbs": {name: {"help": cmd.help, "params": [_param(p) for p in cmd.params]}
                  for name, cmd in group.commands.items()},
    }


def test_cli_surface_is_the_recorded_one():
    recorded = json.loads(SPEC.read_text(encoding="utf-8"))
    now = cli_spec()
    assert list(now["verbs"]) == list(recorded["verbs"]), "verbs or their order changed"
    assert now["options"] == recorded["options"]
    for verb, spec in recorded["verbs"].items():
        assert now["verbs"][verb] == spec, f"`cmcl {verb}` changed its arguments, options, defaults or help"
    assert now == recorded


def test_every_verb_has_help():
    """Each verb says what it does, and each of its options what it means (``cmcl VERB --help``)."""
    for verb, spec in cli_spec()["verbs"].items():
        assert spec["help"], verb
        assert all(p["help"] for p in spec["params"]), verb


if __name__ == "__main__":  # pragma: no cover - rewrite the recorded surface after a deliberate change
    SPEC.write_text(json.dumps(cli_spec(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {SPEC}", file=sys.stderr)
