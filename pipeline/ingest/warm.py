"""Imported by the fork server of the ingestion worker pools (:func:`pipeline.ingest.pool.pool_context`).

Importing it imports :mod:`pipeline.ingest.run` (numpy, pandas, zarr, scipy, scikit-image, tifffile)
and loads the compiled kernels of the illumination statistics, segmentation and crops from
numba's on-disk cache (:func:`pipeline.ingest.run.warm_kernels`), once, in the server: every worker
forked from it starts with them loaded instead of paying ~1.5-2 s of CPU each. Nothing else
should import it.
"""

from pipeline.ingest.run import warm_kernels

warm_kernels("none")
