"""Imported by a fork server started ahead of need (the warm ``cmcl`` helper, :mod:`flows.warm`):
:mod:`pipeline.ingest.warm`, plus the compiled kernels of the default features, so that workers
forked from it measure their first cell at once. A command's own fork server does not import it:
there it would compete with the command's start for the CPU, and the workers load the feature
kernels while they idle during the illumination stage instead. Nothing else should import it.
"""

import pipeline.ingest.warm  # noqa: F401
from pipeline.ingest.fields import warm_kernels

warm_kernels("default")
