"""Imported by the fork server of the ingestion worker pools (:func:`pipeline.ingest.pool.pool_context`).

Importing it imports the modules whose functions the workers run (:mod:`pipeline.ingest.images`,
:mod:`pipeline.ingest.fields`: numpy, pandas, zarr, scipy, scikit-image, tifffile) and loads the
compiled kernels of the illumination statistics, segmentation, crops and focus score from
numba's on-disk cache (:func:`pipeline.ingest.fields.warm_kernels`), once, in the server: every
worker forked from it starts with them loaded instead of paying ~1.5-2 s of CPU each. Nothing
else should import it.
"""

import ome_zarr.format  # noqa: F401  (plate metadata, written by a worker: pipeline.ingest.images._finalize)
import ome_zarr.writer  # noqa: F401

import pipeline.ingest.images  # noqa: F401  (the first pass's worker function)
from pipeline.ingest.fields import warm_kernels

warm_kernels("none")
