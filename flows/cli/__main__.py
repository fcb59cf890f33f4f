"""``python -m flows.cli ...``: the ``cmcl`` command."""

import sys

from flows.cli import app

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
