"""CellProfiler features per cell, measured with cp_measure.

For each segmented field :func:`measure_objects` measures three compartments, named as in
CellProfiler pipelines: ``Nuclei`` (the nucleus label image), ``Cells`` (the cell label image)
and ``Cytoplasm`` (a cell minus its nucleus). Columns follow CellProfiler's naming
(``<Compartment>_<Module>_<Feature>[_<Channel>][_<suffix>]``) so that pycytominer infers them as
features and its blocklist applies:

* ``Cells_AreaShape_Area``, ``Nuclei_AreaShape_Zernike_2_0``
* ``Nuclei_Intensity_MeanIntensity_DNA``, ``Cells_Location_CenterMassIntensity_X_ER``
* ``Cytoplasm_Texture_Contrast_RNA_3_00_256``
* ``Cells_Correlation_Correlation_ER_Mito`` (Pearson, channels sorted), ``Cells_Correlation_Manders_Mito_ER``
* ``Cells_Granularity_3_AGP``, ``Cells_RadialDistribution_FracAtD_Mito_2of4``

Pixels are measured in CellProfiler's units: the illumination-corrected field divided by 65535
(uint16 full scale) and clipped to [0, 1].

Feature sets (``feature_set``):

``'default'``
    Fast: size and shape of Nuclei and Cells (CellProfiler 4's set, no Zernike / Feret),
    intensity (no edge features) of all three compartments in every channel, Haralick texture
    at scale 3 of Cells in every channel, and the Pearson correlation + slope of Cells for
    :data:`DEFAULT_PAIRS`.
``'full'``
    Everything cp_measure measures in 2-D except Costes colocalization (its threshold search
    costs ~1 min per channel pair and field): adds Zernike and Feret shape features, edge
    intensities, texture of every compartment, granularity, radial distribution and radial
    Zernikes, Manders and RWC colocalization of every compartment.
"""

from __future__ import annotations

import itertools
import re
import numpy as np
import pandas as pd
from skimage.segmentation import relabel_sequential

from pipeline.features.choices import FEATURE_SETS, FeatureSet
from pipeline.features.correlation import pearson
from pipeline.features.groups import bounding_boxes, present_labels, segments
from pipeline.features.intensity import intensity
from pipeline.features.ordering import sorted_values, union_parts
from pipeline.features.sizeshape import sizeshape
from pipeline.features.texture import gray_levels, neighbours, texture
from pipeline.images.crops import check_field_arrays

__all__ = ["COMPARTMENTS", "DEFAULT_PAIRS", "FEATURE_PATTERN", "measure_objects", "feature_columns",
           "labels_from_outlines"]

#: Compartments measured, in column order.
COMPARTMENTS: tuple[str, ...] = ("Nuclei", "Cells", "Cytoplasm")
#: A column is a feature column when it matches this (pycytominer's ``features="infer"`` rule).
FEATURE_PATTERN = re.compile(r"^(Cells|Cytoplasm|Nuclei)_")

#: Pixel value that maps to 1.0 (CellProfiler scales uint16 images by their full range).
_FULL_SCALE = 65535.0


#: Channel pairs whose Pearson correlation the default set measures (CellProfiler's
#: MeasureColocalization over all pairs is in ``'full'``).
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (("DNA", "RNA"), ("ER", "Mito"), ("RNA", "AGP"))


def _core() -> tuple[dict, dict]:
    """cp_measure's measurement functions; its numba kernels for intensity and texture when
    numba is installed (the same features, 2x and 8x faster; compiled once, cached on disk)."""
    import importlib.util

    from cp_measure.bulk import get_core_measurements, get_correlation_measurements

    # labels are made contiguous here once per compartment, so cp_measure's per-call relabelling
    # (sanitize=True) would only repeat that work for every function and channel
    core = dict(get_core_measurements(sanitize=False))
    if importlib.util.find_spec("numba") is not None:
        from cp_measure.core.numba.measureobjectintensity import get_intensity
        from cp_measure.core.numba.measuretexture import get_texture

        core.update(intensity=get_intensity, texture=get_texture)
    return core, dict(get_correlation_measurements(sanitize=False))


def _functions(core: dict, corr: dict, shared, raw: np.ndarray) -> dict:
    """Every measurement by plan name. cp_measure's take its arguments (pixels in [0, 1]);
    ``fast:<name>`` is the all-objects-at-once version of cp_measure's ``<name>``
    (:mod:`pipeline.features.sizeshape`, ``.intensity``, ``.texture``, ``.correlation``: same keys and values) and takes channel indices instead of
    pixels: it reads the field in ADU (``raw``) and applies CellProfiler's scale itself, so no
    float64 copy of the field is made. ``shared(what, labels, c)`` gives what is computed once
    per compartment (``'segments'``, ``'boxes'``), per compartment and channel ``c``
    (``'sorted'``: sorted values, ``'intensity'``: the intensity features, ``'levels'``: grey
    levels for texture) or per compartment and texture scale ``c`` (``'neighbours'``: the pixel
    pairs texture counts), or None for labels that are not a compartment's."""
    out = {**core, **corr}
    out.update({
        "fast:sizeshape": lambda labels, c: sizeshape(labels, boxes=shared("boxes", labels)),
        "fast:intensity": lambda labels, c: _features_only(shared("intensity", labels, c)
                                                           or intensity(labels, raw[c], scale=_FULL_SCALE)),
        "fast:texture": lambda labels, c, scale: texture(labels, None, scale=scale,
                                                            groups=shared("segments", labels),
                                                            levels=_levels(raw[c], shared("levels", labels, c)),
                                                            pairs=shared("neighbours", labels, scale)),
        "fast:pearson": lambda a, b, labels: pearson(raw[a], raw[b], labels, scale=_FULL_SCALE,
                                                        groups=shared("segments", labels)),
    })
    return out


def _features_only(result: dict) -> dict:
    """Intensity features without the sums kept for whole cells (``'sums'``)."""
    return {k: v for k, v in result.items() if k != "sums"}


def _levels(image: np.ndarray, levels: np.ndarray | None) -> np.ndarray:
    return levels if levels is not None else gray_levels(image, scale=_FULL_SCALE)


def _plan(feature_set: str, channel_names: tuple[str, ...]) -> dict:
    """Which cp_measure functions run on which compartment, with which options, and which
    channel pairs (indices) colocalization measures."""
    everything = list(itertools.permutations(range(len(channel_names)), 2))  # (a, b) and (b, a)
    if feature_set == "default":
        # cp_measure's sizeshape(calculate_advanced=False, new_features=False), intensity without
        # edge features and Pearson, computed for all objects at once (cmcl's compiled kernels)
        fast_shape = [("fast:sizeshape", {})]
        intensity = ("fast:intensity", {})
        pairs = [(channel_names.index(a), channel_names.index(b)) for a, b in DEFAULT_PAIRS
                 if a in channel_names and b in channel_names]
        return {
            "shape": {"Nuclei": fast_shape, "Cells": fast_shape},
            "channel": {"Nuclei": [intensity], "Cells": [intensity, ("fast:texture", {"scale": 3})],
                        "Cytoplasm": [intensity]},
            "pairs": {"Cells": [("fast:pearson", {}, pairs)]},
        }
    if feature_set == "full":
        channel = [("intensity", {}), ("texture", {"scale": 3}), ("granularity", {}),
                   ("radial_distribution", {}), ("radial_zernikes", {})]
        symmetric = [(a, b) for a, b in everything if a < b]  # directed measures return both directions
        # Costes' automatic-threshold search is left out: on 16-bit images it costs ~1 min per
        # channel pair and field (579 cells, one core), more than everything else together
        pairs = [("pearson", {}, symmetric), ("manders_fold", {}, symmetric), ("rwc", {}, symmetric)]
        return {
            "shape": {c: [("sizeshape", {}), ("zernike", {}), ("feret", {})] for c in COMPARTMENTS},
            "channel": {c: channel for c in COMPARTMENTS},
            "pairs": {c: pairs for c in COMPARTMENTS},
        }
    raise ValueError(f"feature_set {feature_set!r} is not one of {', '.join(map(repr, FEATURE_SETS))}")


_TEXTURE_SUFFIX = re.compile(r"^(?P<name>.+?)_(?P<suffix>\d+_\d\d_\d+)$")
_RADIAL = re.compile(r"^RadialDistribution_(?P<name>[A-Za-z]+)_(?P<suffix>.+)$")


def _shape_name(compartment: str, key: str) -> str:
    # sizeshape / zernike / feret keys are bare ('Area', 'Zernike_0_0', 'MaxFeretDiameter')
    return f"{compartment}_AreaShape_{key}"


def _channel_name(compartment: str, func: str, key: str, channel: str) -> str:
    if func == "intensity":  # 'Intensity_MeanIntensity', 'Location_CenterMassIntensity_X'
        return f"{compartment}_{key}_{channel}"
    if func == "texture":  # 'Contrast_3_00_256' -> Texture_Contrast_<ch>_3_00_256
        m = _TEXTURE_SUFFIX.match(key)
        return f"{compartment}_Texture_{m['name']}_{channel}_{m['suffix']}"
    if func == "granularity":  # 'Granularity_3' -> Granularity_3_<ch>
        return f"{compartment}_{key}_{channel}"
    # radial: 'RadialDistribution_FracAtD_1of4' -> RadialDistribution_FracAtD_<ch>_1of4
    m = _RADIAL.match(key)
    return f"{compartment}_RadialDistribution_{m['name']}_{channel}_{m['suffix']}"


def _pair_name(compartment: str, key: str, first: str, second: str) -> str:
    """CellProfiler's MeasureColocalization names: Pearson ('Correlation_Correlation', cp_measure's
    'Correlation_Pearson') under the channel names in sorted order; the directed measures
    (cp_measure's ``<name>_1`` / ``<name>_2`` for the first / second image of a pair) as
    ``<name>_<first>_<second>`` and ``<name>_<second>_<first>``."""
    if key == "Correlation_Pearson":
        a, b = sorted((first, second))
        return f"{compartment}_Correlation_Correlation_{a}_{b}"
    if key.endswith("_1"):
        return f"{compartment}_{key[:-2]}_{first}_{second}"
    if key.endswith("_2"):
        return f"{compartment}_{key[:-2]}_{second}_{first}"
    return f"{compartment}_{key}_{first}_{second}"


def _sequential(labels: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``labels`` renumbered 1..n in the order of ``present`` (int32: half the memory traffic
    of int64 for a full-field lookup), 0 kept."""
    if present.size and present[-1] == present.size:  # already 1..n
        return labels.astype(np.int32)
    forward = np.zeros(int(present[-1]) + 1 if present.size else 1, np.int32)
    forward[present] = np.arange(1, present.size + 1, dtype=np.int32)
    return forward[labels]


def _clean(labels: np.ndarray, present: np.ndarray) -> np.ndarray:
    """:func:`_sequential`, but ``labels`` itself (no copy) when they already are 1..n in an
    integer type of at most 32 bits or int64."""
    small = labels.dtype.kind in "iu" and (labels.dtype.itemsize <= 4 or labels.dtype == np.int64)
    if small and (present.size == 0 or present[-1] == present.size):
        return labels
    return _sequential(labels, present)


def _compartment_labels(nuclei: np.ndarray, cells: np.ndarray) -> dict[str, np.ndarray]:
    cyto = np.where(nuclei > 0, 0, cells)
    return {"Nuclei": nuclei, "Cells": cells, "Cytoplasm": cyto}


class _Field:
    """One field's pixels and what its measurements share, each computed once per field: a
    compartment's segments, boxes, texture pairs and cell parts, and per channel the field's bit
    patterns and a compartment's sorted values, intensity features and grey levels (Cells' from
    those of Nuclei and Cytoplasm where it can).

    Parameters
    ----------
    image : (C, Y, X) ndarray
        The field in ADU, as checked by :func:`~pipeline.images.crops.check_field_arrays`.
    clean_of : dict of str to (Y, X) integer ndarray
        Each compartment's labels, renumbered ``1..n``.
    """

    def __init__(self, image: np.ndarray, clean_of: dict[str, np.ndarray]) -> None:
        self.image = image
        self.clean_of = clean_of
        self.raw = np.asarray(image, dtype=np.float32)
        self.core, self.corr = _core()
        self._converted: np.ndarray | None = None
        self._cache: dict = {}

    def pixels(self, c: int) -> np.ndarray:
        """Channel ``c`` in [0, 1] (float64), for cp_measure's own functions (converted once)."""
        if self._converted is None:
            self._converted = np.clip(self.image.astype(np.float64) / _FULL_SCALE, 0.0, 1.0)
        return self._converted[c]

    def get(self, name: str | None, what: str, c: int | None = None):
        """``what`` of compartment ``name`` (and channel or texture scale ``c``), from the cache."""
        key = (name, what, c)
        if key not in self._cache:
            self._cache[key] = self._compute(name, what, c)
        return self._cache[key]

    def _compute(self, name: str | None, what: str, c: int | None):
        clean_of, raw, get = self.clean_of, self.raw, self.get
        if what == "segments":
            return segments(clean_of[name])
        if what == "boxes":
            return bounding_boxes(clean_of[name])
        if what == "bits":  # float32 bit patterns, sort keys once clipped at 0
            return np.ascontiguousarray(raw[c]).ravel().view(np.uint32)
        if what == "neighbours":  # c: the texture scale
            return neighbours(clean_of[name], scale=c, groups=get(name, "segments"))
        if what == "levels":
            return gray_levels(raw[c], scale=_FULL_SCALE, groups=get(name, "segments"))
        if what == "parts":  # a cell whose nucleus lies inside it is that nucleus + its cytoplasm
            return union_parts(clean_of["Cells"], clean_of["Nuclei"], clean_of["Cytoplasm"])
        if what == "sorted" and name == "Cells":  # merged from the two parts' sorted values
            return sorted_values(get(None, "bits", c), get(name, "segments"), parts=get(name, "parts"),
                                 first=(get("Nuclei", "sorted", c), get("Nuclei", "segments")),
                                 second=(get("Cytoplasm", "sorted", c), get("Cytoplasm", "segments")))
        if what == "sorted":
            return sorted_values(get(None, "bits", c), get(name, "segments"))
        if what == "intensity" and name == "Cells":  # whole cells from their two parts' sums
            return intensity(clean_of[name], raw[c], scale=_FULL_SCALE, groups=get(name, "segments"),
                             ordered=get(name, "sorted", c), parts=get(name, "parts"),
                             first=get("Nuclei", "intensity", c)["sums"],
                             second=get("Cytoplasm", "intensity", c)["sums"])
        if what == "intensity":
            return intensity(clean_of[name], raw[c], scale=_FULL_SCALE, groups=get(name, "segments"),
                             ordered=get(name, "sorted", c), sums=True)
        raise KeyError(what)


def measure_objects(
    image: np.ndarray,
    nuclei: np.ndarray,
    cells: np.ndarray,
    *,
    channel_names: tuple[str, ...],
    feature_set: FeatureSet = "default",
    ids: np.ndarray | None = None,
) -> pd.DataFrame:
    """Measure CellProfiler features of every cell of one field with cp_measure.

    Parameters
    ----------
    image : (C, Y, X) ndarray
        Illumination-corrected field in ADU (uint16 scale); divided by 65535 and clipped to
        [0, 1] before measuring, as CellProfiler loads uint16 images.
    nuclei, cells : (Y, X) integer ndarray
        Label images; cell ``k`` belongs to nucleus ``k``. The cytoplasm of ``k`` is cell ``k``
        minus every nucleus pixel.
    channel_names : tuple of str
        Names of the C channels (column suffixes).
    feature_set : {'default', 'full'}
        One of :data:`~pipeline.features.choices.FEATURE_SETS`; see the module docstring.
    ids : (N,) integer ndarray, optional
        Nucleus labels to return rows for, in this order (default: every label present in
        ``nuclei``, ascending), e.g. the cells that got a crop.

    Returns
    -------
    DataFrame
        N rows: ``Metadata_CellID`` (int32, the nucleus label) and one float32 column per
        feature (:data:`FEATURE_PATTERN`). A compartment missing for a cell (a cytoplasm fully
        covered by nuclei, a cell without cell pixels) gives NaN in its columns.

    Raises
    ------
    ValueError
        On shapes that disagree, a wrong number of channel names or an unknown feature set.
    """
    image = check_field_arrays(image, nuclei, cells, channel_names)
    plan = _plan(feature_set, tuple(channel_names))
    labels_of = _compartment_labels(np.asarray(nuclei), np.asarray(cells))
    present_of = {name: present_labels(labels) for name, labels in labels_of.items()}  # label of clean label 1..n
    if ids is None:
        ids = present_of["Nuclei"]
    ids = np.asarray(ids, dtype=np.int64)
    field = _Field(image, {name: _clean(labels, present_of[name]) for name, labels in labels_of.items()})
    columns: dict[str, np.ndarray] = {"Metadata_CellID": ids.astype(np.int32)}
    for compartment in labels_of:
        columns.update(_measure_compartment(field, plan, compartment, present_of[compartment], ids,
                                            tuple(channel_names)))
    return pd.DataFrame(columns)


def _positions(present: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(n,) int64: the position in ``ids`` of each measured object (``present``), -1 when not asked for."""
    n = len(present)
    where = np.full(n, -1, np.int64)
    if n:
        order = np.searchsorted(present, ids)
        hit = (order < n) & (present[np.minimum(order, max(n - 1, 0))] == ids)
        where[order[hit]] = np.nonzero(hit)[0]
    return where


def _measure_compartment(field: _Field, plan: dict, compartment: str, present: np.ndarray, ids: np.ndarray,
                         channel_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The feature columns of one compartment (shape, per channel, per channel pair), float32,
    one row per entry of ``ids`` (NaN where the compartment has no such object)."""
    clean = field.clean_of[compartment]
    n = len(present)
    where = _positions(present, ids)
    results: dict[str, np.ndarray] = {}

    def put(name: str, values) -> None:
        out = np.full(len(ids), np.nan, np.float32)
        if n:
            v = np.asarray(values, dtype=np.float64).reshape(-1)
            out[where[where >= 0]] = v[where >= 0]
        results[name] = out

    def shared(what: str, labels, c: int | None = None):
        return field.get(compartment, what, c) if labels is clean else None

    functions = _functions(field.core, field.corr, shared, field.raw)
    for func, kw in plan["shape"].get(compartment, []):
        if not n:
            vals = _empty(func, kw)
        elif func.startswith("fast:"):
            vals = functions[func](clean, 0, **kw)
        else:
            vals = functions[func](clean.astype(np.int64, copy=False), field.pixels(0), **kw)
        for key, v in vals.items():
            if key.startswith("Location_") or key.startswith("Center_"):
                continue  # positions are not phenotypes (the cells table keeps the centroid)
            put(_shape_name(compartment, key), v)
    for func, kw in plan["channel"].get(compartment, []):
        for c, ch in enumerate(channel_names):
            if not n:
                vals = _empty(func, kw)
            elif func.startswith("fast:"):
                vals = functions[func](clean, c, **kw)
            else:
                vals = functions[func](clean.astype(np.int64, copy=False), field.pixels(c), **kw)
            for key, v in vals.items():
                if key.startswith("Location_"):
                    continue
                put(_channel_name(compartment, func.removeprefix("fast:"), key, ch), v)
    for func, kw, pairs in plan["pairs"].get(compartment, []):
        for a, b in pairs:
            if not n:
                vals = _empty_pair(func, kw)
            elif func.startswith("fast:"):
                vals = functions[func](a, b, clean, **kw)
            else:
                vals = functions[func](field.pixels(a), field.pixels(b), clean.astype(np.int64, copy=False), **kw)
            for key, v in vals.items():
                put(_pair_name(compartment, key, channel_names[a], channel_names[b]), v)
    return results


_EMPTY_CACHE: dict = {}


def _small_field() -> tuple[np.ndarray, np.ndarray]:
    lab = np.zeros((32, 32), np.int64)
    lab[8:24, 8:24] = 1
    return lab, np.linspace(0.1, 0.9, 32 * 32).reshape(32, 32)


def _empty(name: str, kw) -> dict:
    """The keys measurement ``name`` returns, with empty values (a field without objects of a
    compartment)."""
    key = (name, tuple(sorted(kw.items())))
    if key not in _EMPTY_CACHE:
        lab, px = _small_field()
        functions = _functions(*_core(), lambda *args: None, px[None] * _FULL_SCALE)
        _EMPTY_CACHE[key] = {k: [] for k in functions[name](lab, 0 if name.startswith("fast:") else px, **kw)}
    return _EMPTY_CACHE[key]


def _empty_pair(name: str, kw) -> dict:
    key = (name, tuple(sorted(kw.items())), "pair")
    if key not in _EMPTY_CACHE:
        lab, px = _small_field()
        functions = _functions(*_core(), lambda *args: None, np.stack([px, px[::-1]]) * _FULL_SCALE)
        first, second = (0, 1) if name.startswith("fast:") else (px, px[::-1].copy())
        _EMPTY_CACHE[key] = {k: [] for k in functions[name](first, second, lab, **kw)}
    return _EMPTY_CACHE[key]


def feature_columns(columns) -> list[str]:
    """The feature columns among ``columns`` (those matching :data:`FEATURE_PATTERN`), in order."""
    return [c for c in columns if FEATURE_PATTERN.match(c)]


def labels_from_outlines(outlines: np.ndarray) -> np.ndarray:
    """Label image of the objects whose outlines CellProfiler drew (OverlayOutlines / SaveImages).

    Parameters
    ----------
    outlines : (Y, X) or (Y, X, 3) ndarray
        Outline image: nonzero on the objects' boundary pixels (any colour), zero elsewhere.

    Returns
    -------
    (Y, X) int32 ndarray
        Every region enclosed by outlines is one object (the largest region, the background,
        is 0); the outline pixels go to the nearest enclosed object (CellProfiler draws an
        object's outline on its own boundary pixels). Labels are in scan order, not
        CellProfiler's object numbers: match objects by their centres.

    Notes
    -----
    Rebuilds CellProfiler's own objects for feature comparisons (the largest region is the only
    background). :func:`pipeline.images.segmentation.scoring.labels_from_outlines` is the one for
    segmentation scores: it also drops regions along the border and above a size, as manual masks need.
    """
    from skimage.segmentation import expand_labels
    from scipy import ndimage as ndi

    edge = np.asarray(outlines)
    edge = (edge.max(axis=-1) if edge.ndim == 3 else edge) > 0
    labels, n = ndi.label(~edge)
    if n == 0:
        return np.zeros(edge.shape, np.int32)
    sizes = np.bincount(labels.ravel())
    labels[labels == int(np.argmax(sizes[1:]) + 1)] = 0
    grown = expand_labels(labels, distance=2)
    labels = np.where(edge | (labels > 0), grown, 0)
    return relabel_sequential(labels.astype(np.int32))[0]
