"""The one dispatch point of segmentation: :func:`segment_field` runs the method named by
``segmenter`` (:data:`pipeline.images.choices.SEGMENTERS`) on one field.

To segment cells differently (a new method ``'mine'``):

1. write ``pipeline/images/segmentation/mine.py`` with the method's functions, returning
   ``(Y, X)`` uint32 nuclei and cells where cell ``k`` contains nucleus ``k``;
2. add ``'mine'`` to ``Segmenter`` in :mod:`pipeline.images.choices` (settings, the CLI's help
   and the error messages follow);
3. add one entry to :data:`SEGMENTATION_METHODS` below: a function
   ``(dna, cyto, *, cellpose_model, cellpose_cell_model, cellpose_diameter) -> (nuclei, cells)``
   that calls it (optional, heavy dependencies imported inside it, as cellpose is).

``tests/pipeline/images/test_segmentation.py`` checks that every declared method has an entry.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.images.choices import SEGMENTERS, Segmenter
from pipeline.images.segmentation.classical import segment_cells, segment_nuclei

__all__ = ["SEGMENTATION_METHODS", "segment_field"]


def _classical(dna: np.ndarray, cyto: np.ndarray, **_options) -> tuple[np.ndarray, np.ndarray]:
    """:func:`segment_nuclei` + :func:`segment_cells` (no weights; cellpose options unused)."""
    nuclei = segment_nuclei(dna)
    return nuclei, segment_cells(nuclei, cyto)


def _cellpose(dna: np.ndarray, cyto: np.ndarray, *, cellpose_model: str | None, cellpose_cell_model: str | None,
              cellpose_diameter: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Nuclei from local cellpose weights; cells from cellpose weights too, or grown classically."""
    from pipeline.images.segmentation.cellpose import segment_cells_cellpose, segment_nuclei_cellpose

    if cellpose_model is None:
        raise ValueError("segmenter 'cellpose' needs cellpose_model: the path of a local weights file")
    nuclei = segment_nuclei_cellpose(dna, model_path=cellpose_model, diameter=cellpose_diameter)
    if cellpose_cell_model is None:
        return nuclei, segment_cells(nuclei, cyto)
    return nuclei, segment_cells_cellpose(nuclei, cyto, dna, model_path=cellpose_cell_model)


#: Each segmentation method by name: one entry per name of :data:`~pipeline.images.choices.SEGMENTERS`.
SEGMENTATION_METHODS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "classical": _classical,
    "cellpose": _cellpose,
}


def segment_field(
    dna: np.ndarray,
    cyto: np.ndarray,
    *,
    segmenter: Segmenter = "classical",
    cellpose_model: str | None = None,
    cellpose_cell_model: str | None = None,
    cellpose_diameter: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Nuclei and cells of one field with the chosen segmenter.

    Parameters
    ----------
    dna, cyto : (Y, X) ndarray
        DNA and cytoplasm (RNA or AGP) channels, illumination-corrected.
    segmenter : {'classical', 'cellpose'}
        One of :data:`~pipeline.images.choices.SEGMENTERS`. 'classical':
        :func:`~pipeline.images.segmentation.classical.segment_nuclei` +
        :func:`~pipeline.images.segmentation.classical.segment_cells` (no weights). 'cellpose':
        nuclei from the local weights file ``cellpose_model``
        (:func:`pipeline.images.segmentation.cellpose.segment_nuclei_cellpose`); cells from
        ``cellpose_cell_model`` when given, else grown classically from those nuclei.
    cellpose_model, cellpose_cell_model : str, optional
        Paths of local cellpose weights files (never model names; nothing is downloaded).
    cellpose_diameter : float, optional
        Nucleus diameter in pixels for cellpose; None: the model's own.

    Returns
    -------
    nuclei, cells : (Y, X) uint32 ndarray
        Cell ``k`` contains nucleus ``k``.

    Raises
    ------
    ValueError
        If ``segmenter`` is not one of :data:`~pipeline.images.choices.SEGMENTERS`, or 'cellpose' without ``cellpose_model``.
    FileNotFoundError
        If a cellpose weights file does not exist.
    """
    if segmenter not in SEGMENTERS or segmenter not in SEGMENTATION_METHODS:
        raise ValueError(f"segmenter {segmenter!r} is not one of {', '.join(map(repr, SEGMENTERS))}")
    return SEGMENTATION_METHODS[segmenter](dna, cyto, cellpose_model=cellpose_model,
                                           cellpose_cell_model=cellpose_cell_model,
                                           cellpose_diameter=cellpose_diameter)
