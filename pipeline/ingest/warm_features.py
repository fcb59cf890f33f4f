"""Imported by the ingestion workers' fork server when a plate is ingested with CellProfiler
features (:func:`pipeline.ingest.run.ingest_plate`): loads the feature kernels
(:mod:`pipeline.features.sizeshape`, ``.intensity``, ``.texture``, ``.correlation``, ~1 s from numba's cache) once, in the server, after
:mod:`pipeline.ingest.warm`, instead of in every worker while the first fields wait. Nothing else
should import it.
"""

from pipeline.ingest.fields import warm_kernels

warm_kernels("default")
