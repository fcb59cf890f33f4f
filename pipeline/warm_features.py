"""Imported by the ingestion workers' fork server when a plate is ingested with CellProfiler
features (:func:`pipeline.ingest.ingest_plate`): loads the feature kernels
(:mod:`pipeline.fastmeasure`, ~1 s from numba's cache) once, in the server, after
:mod:`pipeline.warm`, instead of in every worker while the first fields wait. Nothing else
should import it.
"""

from pipeline.ingest import warm_kernels

warm_kernels("default")
