"""Optional cellpose backend (cellpose 3.1.x, ``pip install 'cmcl[cellpose]'``), local weights only.

Weights are always read from a file on disk; a model *name* (``'cyto3'``, ``'nuclei'``) is never
passed to cellpose, so nothing is ever downloaded. To use your own weights, point
``model_path`` (or ``IngestSettings.cellpose_model`` / ``cellpose_cell_model``) at a file saved
by cellpose itself: a model trained with ``cellpose.train.train_seg`` (the file it writes into
``<save_path>/models/``), ``CellposeModel.net.save_model(path)``, or a built-in model file copied
from a machine that has network access (``~/.cellpose/models/nucleitorch_0`` or
``cyto3``). On a cluster, copy the file next to the data and pass its path.

Cells from cellpose are reconciled with the nuclei so that, as with the classical segmenter,
cell ``k`` contains nucleus ``k``: each nucleus takes the cellpose cell(s) it overlaps, shared
cells are split between their nuclei by a seeded watershed, and cellpose cells without a nucleus
are dropped.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries, relabel_sequential, watershed

__all__ = ["load_cellpose_model", "segment_nuclei_cellpose", "segment_cells_cellpose"]


def _check_inputs(*images: np.ndarray) -> tuple[np.ndarray, ...]:
    out = []
    for img in images:
        img = np.asarray(img)
        if img.ndim != 2:
            raise ValueError(f"images must be 2-D (y, x); got shape {img.shape}")
        if not np.issubdtype(img.dtype, np.number):
            raise TypeError(f"images must be numeric; got dtype {img.dtype}")
        out.append(img.astype(np.float32, copy=False))
    if len({i.shape for i in out}) > 1:
        raise ValueError(f"image shapes differ: {[i.shape for i in out]}")
    return tuple(out)


def _resolve(model_path: str | os.PathLike) -> Path:
    if model_path is None or isinstance(model_path, str) and not model_path.strip():
        raise ValueError("model_path is required: the path of a local cellpose weights file "
                         "(model names such as 'cyto3' are not accepted: they would be downloaded)")
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"cellpose weights file {str(path)!r} does not exist (model names such as "
                                f"'cyto3' or 'nuclei' are not accepted; pass the path of a local weights file)")
    return path.resolve()


@lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int):  # noqa: ARG001 - mtime in the cache key reloads rewritten files
    try:
        from cellpose import models
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the cellpose segmenter needs the optional extra: pip install 'cmcl[cellpose]'") from exc
    return models.CellposeModel(gpu=False, pretrained_model=path)


def load_cellpose_model(model_path: str | os.PathLike):
    """Load (once per process) a cellpose model from a local weights file.

    Parameters
    ----------
    model_path : str or PathLike
        Path of a cellpose weights file.

    Returns
    -------
    cellpose.models.CellposeModel, on CPU.

    Raises
    ------
    FileNotFoundError
        If ``model_path`` is not an existing file (names like ``'cyto3'`` are refused here).
    ValueError
        If ``model_path`` is empty.
    ImportError
        If cellpose is not installed.
    """
    path = _resolve(model_path)
    return _load(str(path), path.stat().st_mtime_ns)


def _eval(model, image: np.ndarray, channels: list[int], diameter: float | None, flow_threshold: float,
          cellprob_threshold: float) -> np.ndarray:
    masks, _flows, _styles = model.eval(image, channels=channels, channel_axis=-1 if image.ndim == 3 else None,
                                        diameter=diameter, flow_threshold=flow_threshold,
                                        cellprob_threshold=cellprob_threshold, normalize=True)
    return np.asarray(masks)


def segment_nuclei_cellpose(
    dna: np.ndarray,
    *,
    model_path: str | os.PathLike,
    diameter: float | None = None,
    flow_threshold: float = 0.4,
    cellprob_threshold: float = 0.0,
) -> np.ndarray:
    """Label nuclei in a DNA image with a cellpose model read from a local file.

    Parameters
    ----------
    dna : (Y, X) ndarray
        DNA channel, any numeric dtype (cellpose normalises percentiles itself).
    model_path : str or PathLike
        Local cellpose weights (see the module docstring for where to get them).
    diameter : float, optional
        Typical nucleus diameter in pixels; None uses the diameter stored with the model.
    flow_threshold, cellprob_threshold : float
        cellpose's mask-quality and probability thresholds.

    Returns
    -------
    (Y, X) uint32 ndarray: 0 background, 1..N nuclei.

    Raises
    ------
    FileNotFoundError, ValueError
        If ``model_path`` is not a local file (see :func:`load_cellpose_model`).
    """
    (img,) = _check_inputs(dna)
    model = load_cellpose_model(model_path)
    if float(img.max()) == float(img.min()):
        return np.zeros(img.shape, np.uint32)
    masks = _eval(model, img, [0, 0], diameter, flow_threshold, cellprob_threshold)
    return relabel_sequential(masks.astype(np.int64))[0].astype(np.uint32)


def segment_cells_cellpose(
    nuclei_labels: np.ndarray,
    cyto: np.ndarray,
    dna: np.ndarray,
    *,
    model_path: str | os.PathLike,
    diameter: float | None = None,
    flow_threshold: float = 0.4,
    cellprob_threshold: float = 0.0,
) -> np.ndarray:
    """Cells from a two-channel (cytoplasm + DNA) cellpose model, one per nucleus.

    Parameters
    ----------
    nuclei_labels : (Y, X) integer ndarray
        Nuclei (from either segmenter).
    cyto, dna : (Y, X) ndarray
        Cytoplasm (RNA or AGP) and DNA channels.
    model_path : str or PathLike
        Local cellpose weights of a cell (cytoplasm) model.
    diameter, flow_threshold, cellprob_threshold
        As in :func:`segment_nuclei_cellpose`, for cells.

    Returns
    -------
    (Y, X) uint32 ndarray where cell ``k`` contains nucleus ``k``; nuclei outside every cellpose
    cell get a cell equal to the nucleus.

    Raises
    ------
    TypeError
        If ``nuclei_labels`` is not integer.
    ValueError, FileNotFoundError
        On shape mismatches or a missing weights file.
    """
    nuclei = np.asarray(nuclei_labels)
    if not np.issubdtype(nuclei.dtype, np.integer):
        raise TypeError(f"nuclei_labels must be an integer label image; got dtype {nuclei.dtype}")
    cyto_img, dna_img = _check_inputs(cyto, dna)
    if nuclei.shape != cyto_img.shape:
        raise ValueError(f"nuclei_labels shape {nuclei.shape} differs from image shape {cyto_img.shape}")
    model = load_cellpose_model(model_path)
    if nuclei.max() == 0:
        return np.zeros(nuclei.shape, np.uint32)
    masks = _eval(model, np.stack([cyto_img, dna_img], axis=-1), [1, 2], diameter, flow_threshold,
                  cellprob_threshold)
    return _cells_for_nuclei(nuclei, masks)


def _cells_for_nuclei(nuclei: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Give every nucleus the cellpose cells it overlaps; split shared cells by a seeded watershed."""
    masks = masks.astype(np.int64)
    has_nucleus = np.zeros(int(masks.max()) + 1, bool)
    has_nucleus[np.unique(masks[nuclei > 0])] = True
    has_nucleus[0] = False
    region = has_nucleus[masks] | (nuclei > 0)
    elevation = find_boundaries(masks, mode="inner").astype(np.float32)
    elevation += ndi.distance_transform_edt(nuclei == 0).astype(np.float32) * 1e-3  # tie-break by distance
    cells = watershed(elevation, markers=nuclei.astype(np.int32), mask=region)
    return cells.astype(np.uint32)
