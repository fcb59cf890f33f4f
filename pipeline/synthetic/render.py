"""Rendering of one synthetic Cell Painting field and of the simulated microscope's flat fields.

:func:`render_field` draws one 5-channel field (DNA, ER, RNA, AGP, Mito) plus its nuclei and cell
label images, with camera offset, shot and read noise, illumination, debris, saturation and
optional defocus; :func:`illumination_fields` gives the microscope's flat fields.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping

import numpy as np
import scipy.ndimage as ndi
from skimage.measure import label

from pipeline.store.paths import CHANNELS
from pipeline.synthetic.phenotype import Phenotype

__all__ = ["DARK_OFFSET", "REAL_NUCLEUS_RADIUS", "REAL_PIXEL_SIZE_UM", "illumination_fields", "render_field"]

#: Camera dark offset in ADU, added to every pixel.
DARK_OFFSET: float = 100.0
#: Pixel size (um) of the real fields the defaults are calibrated to (JUMP cpg0016 U2OS,
#: PerkinElmer Phenix, 20x water, 1080 x 1080 px; ``tests/data/phenix_*``).
REAL_PIXEL_SIZE_UM: float = 0.598
#: ``nucleus_radius`` (px) of a field at that pixel size: median nuclear area ~1,090 px
#: (~390 um^2). Other radii render the same scene scaled by ``nucleus_radius / 18.6``.
REAL_NUCLEUS_RADIUS: float = 18.6

#: Expected cells per (nucleus_radius ** 2) of field area, untreated: ~40 cells in a real
#: 1080 px field (BR00143976 C03 f3 has 39).
_CELL_DENSITY = 0.012
#: Median area of a cell's outline / its nucleus (real fields: 7.1 and 8.3, cmcl's segmentation).
_CELL_AREA_RATIO = 8.0
#: Probability that a new cell settles against an earlier one (touching groups and clumps).
_P_JOIN = 0.2
#: Probability that a new cell is the sister of an earlier one (nuclei touching, as after mitosis).
_P_SISTER = 0.05
#: Signal levels (ADU above offset) before illumination: nucleus DNA, ER, RNA, AGP, Mito.
_LEVELS = np.array([10000.0, 12000.0, 7500.0, 4500.0, 24000.0])
#: Background (unbound dye and autofluorescence, ADU above offset) per channel, before
#: illumination: median backgrounds of the real fields lie between 300 and 950 ADU with offset.
_BACKGROUND = np.array([380.0, 400.0, 205.0, 440.0, 850.0])
_READ_NOISE = 3.0
_GAIN = 1.0  # ADU per photo-electron
_PSF = 0.8


def illumination_fields(size: int, seed: int) -> np.ndarray:
    """Flat fields of the simulated microscope ``seed``.

    Each channel is a smooth vignetting (quadratic fall-off about a point near the centre) times
    a weak linear gradient, different per channel. The fall-off follows the backgrounds of the
    real Phenix fields in ``tests/data`` (9 x 9 blocks, above a 100 ADU offset: centre ~1.4x and
    corners ~0.35x the median): corners at 0.2-0.35 of the centre, 5th percentile at ~0.5 of the
    median; the far-red Mito channel falls off less (corners ~0.55), as in Harmony's fitted
    profiles, which are flatter overall (corners 0.23-0.5 of the centre).

    Returns
    -------
    (5, size, size) ndarray of float32
        Multiplicative fields, each with mean exactly 1 (to float32 precision), all > 0.
    """
    _check_size(size)
    rng = np.random.default_rng([seed, 0x111])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / max(size - 1, 1) - 0.5
    out = np.empty((len(CHANNELS), size, size), dtype=np.float32)
    for c in range(len(CHANNELS)):
        cy, cx = rng.uniform(-0.03, 0.03, 2)
        a = rng.uniform(0.65, 0.8) * (0.6 if CHANNELS[c] == "Mito" else 1.0)
        vignette = 1.0 - a * ((yy - cy) ** 2 + (xx - cx) ** 2) / 0.5
        gy, gx = rng.uniform(-0.1, 0.1, 2)
        field = vignette * (1.0 + gy * yy + gx * xx)
        out[c] = field / field.mean()
    return out


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < 32:
        raise ValueError(f"size must be an integer >= 32, got {size!r}")


def _fourier_noise(size: int, seed: int, gain: np.ndarray) -> np.ndarray:
    """Periodic (size, size) float32 noise: white noise filtered by ``gain(|k|)``, unit std."""
    white = np.random.default_rng([0x7E57, size, seed]).standard_normal((size, size))
    out = np.fft.irfft2(np.fft.rfft2(white) * gain, s=(size, size)).astype(np.float32)
    return (out - out.mean()) / (out.std() + 1e-12)


@functools.lru_cache(maxsize=4)
def _texture_bank(size: int, s: float, radius: float) -> dict[str, np.ndarray]:
    """Periodic textures, computed once per (size, scale) with fixed seeds.

    Fields draw them with a random shift, flip and transpose (:func:`_draw`), which is much
    cheaper than filtering fresh noise for every field and keeps fields independent of the order
    in which they are generated.
    """
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.rfftfreq(size)[None, :]
    k2 = (2 * np.pi) ** 2 * (ky**2 + kx**2)

    def dog(s1: float, s2: float) -> np.ndarray:
        return np.exp(-k2 * s1**2 / 2) - np.exp(-k2 * s2**2 / 2)

    def smooth(length: float) -> np.ndarray:
        return np.exp(-k2 * length**2 / 2)

    ridge = np.clip(1.0 - np.abs(_fourier_noise(size, 3, dog(1.2 * s, 4.0 * s))) / 0.45, 0, 1) ** 2
    # ~0.05 puncta per pixel at s = 1, fewer per pixel (the same per area) at larger scales
    dots = (np.random.default_rng([0x7E57, size, 4]).random((size, size)) < 0.05 / s**2).astype(float)
    sigma = 0.9 * s
    puncta = np.fft.irfft2(np.fft.rfft2(dots) * smooth(sigma), s=(size, size))
    bank = {
        "chromatin": _fourier_noise(size, 1, dog(0.8 * s, 2.5 * s)),
        "reticulum": _fourier_noise(size, 2, dog(1.0 * s, 3.0 * s)),
        "ridge": ridge.astype(np.float32),
        "puncta": (puncta * 2 * np.pi * sigma**2).astype(np.float32),
        "rough": _fourier_noise(size, 5, smooth(1.5 * s)),
        "limit": _fourier_noise(size, 6, smooth(1.2 * radius)),
    }
    for arr in bank.values():
        arr.setflags(write=False)
    return bank


def _draw(texture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A randomly shifted, flipped and transposed copy of a periodic texture."""
    dy, dx = rng.integers(0, texture.shape[0], 2)
    flip_y, flip_x, transpose = rng.random(3) < 0.5
    view = texture[:: -1 if flip_y else 1, :: -1 if flip_x else 1]
    view = view.T if transpose else view
    return np.roll(view, (int(dy), int(dx)), axis=(0, 1))


def _place_cells(
    rng: np.random.Generator, size: int, r: float, r_nuc: np.ndarray, r_cell: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Clustered cell positions (nucleus centres, (y, x)) and which of the n cells found room.

    Cells arrive one at a time. With probability :data:`_P_JOIN` a cell settles next to a random
    earlier one (centres 0.55-0.9 of their summed radii apart, so the two cells touch; with
    probability :data:`_P_SISTER` right against it, nuclei touching, a pair of daughters); otherwise
    it lands at a random place drawn from a smooth density over the field (three plane waves of
    20-60 nucleus radii wavelength, density ratio up to ~20 between sparse and dense patches),
    and for its first 10 tries keeps clear of the other cells (centres at least 0.9 of the
    summed radii apart). A place is refused when the nucleus would overlap another nucleus or
    the cell would sit on top of another cell; a cell that finds no room in 20 tries is dropped.
    The result: touching groups and clumps of varying size beside isolated cells and empty
    patches, as in real fields.
    """
    n = len(r_nuc)
    kdir = rng.uniform(0.0, 2 * np.pi, 3)
    kmag = 2 * np.pi / (rng.uniform(20.0, 60.0, 3) * r)
    kvec = np.stack([np.sin(kdir), np.cos(kdir)], axis=1) * kmag[:, None]
    phase = rng.uniform(0.0, 2 * np.pi, 3)
    pool = rng.uniform(0.0, size, (20 * n + 20, 2))
    dens = np.exp(0.5 * np.cos(pool @ kvec.T + phase).sum(axis=1) - 1.5)
    pool = pool[rng.random(len(pool)) < dens]
    pos = np.zeros((n, 2))
    keep = np.zeros(n, dtype=bool)
    placed: list[int] = []
    k_pool = 0
    for i in range(n):
        for attempt in range(20):
            u = rng.random() if placed else 1.0
            join = u < _P_JOIN
            if join:
                j = placed[int(rng.integers(len(placed)))]
                ang = rng.uniform(0.0, 2 * np.pi)
                if u < _P_SISTER:  # daughters of a recent division: the nuclei touch
                    step = (r_nuc[i] + r_nuc[j]) * rng.uniform(1.0, 1.15)
                else:
                    step = (r_cell[i] + r_cell[j]) * rng.uniform(0.55, 0.9)
                p = pos[j] + step * np.array([np.sin(ang), np.cos(ang)])
                if not (0.0 <= p[0] < size and 0.0 <= p[1] < size):
                    continue
            elif k_pool < len(pool):
                p = pool[k_pool]
                k_pool += 1
            else:
                p = rng.uniform(0.0, size, 2)
            if placed:
                idx = np.asarray(placed)
                dist = np.hypot(*(pos[idx] - p).T)
                # a cell that lands on its own keeps clear of the others while there is room
                spacing = 0.5 if join or attempt >= 10 else 1.0
                clash = dist < 0.99 * (r_nuc[i] + r_nuc[idx])
                crowd = dist < spacing * (r_cell[i] + r_cell[idx])
                if u < _P_SISTER:  # only its sister may come this close
                    crowd[idx == j] = False
                if clash.any() or crowd.any():
                    continue
            pos[i] = p
            keep[i] = True
            placed.append(i)
            break
    return pos, keep


def _cell_shapes(
    rng: np.random.Generator, n: int, aspect: np.ndarray, irregular: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random outlines of n cells, in each cell's own frame (angle 0 = its long axis).

    The outline's radius at angle ``phi`` is an ellipse of axis ratio ``aspect`` (area kept)
    times ``exp(sum_k c_k cos k phi + s_k sin k phi)`` (k = 2..4: polygonal, lobed outlines) times
    ``1 + sum_j h_j exp((cos(phi - phi_j) - 1) / w_j**2)`` (narrow protrusions, mostly near the
    poles of the long axis, like the tails of spread U2OS cells). ``irregular`` scales the
    harmonics and protrusions (0: an ellipse).

    Returns
    -------
    harm : (n, 3, 2) harmonic coefficients; spikes : (n, 3, 4) protrusions (cos phi_j, sin phi_j,
    height, 1 / w_j**2), height 0 when absent; norm : (n,) factor that keeps the area of the
    outline at pi (radius 1); reach : (n,) largest radius of the normalized outline.
    """
    harm = rng.normal(0.0, 1.0, (n, 3, 2)) * (np.array([0.16, 0.11, 0.08])[None, :, None] * irregular[:, None, None])
    n_spikes = np.minimum(rng.poisson(1.3, n), 3)
    pole = rng.random((n, 3)) < 0.65
    phi_j = np.where(pole, rng.integers(0, 2, (n, 3)) * np.pi + rng.normal(0.0, 0.35, (n, 3)), rng.uniform(0, 2 * np.pi, (n, 3)))
    height = rng.uniform(0.4, 1.8, (n, 3)) * (np.arange(3)[None, :] < n_spikes[:, None]) * irregular[:, None]
    width = rng.uniform(0.06, 0.2, (n, 3))
    spikes = np.stack([np.cos(phi_j), np.sin(phi_j), height, 1.0 / width**2], axis=-1)
    phi = np.linspace(0.0, 2 * np.pi, 256, endpoint=False)
    radius = _outline(np.cos(phi)[None, :], np.sin(phi)[None, :], aspect[:, None], harm[:, None], spikes[:, None])
    norm = np.sqrt(np.mean(radius**2, axis=1))
    reach = radius.max(axis=1) / norm
    return harm, spikes, norm, reach


def _outline(c, s, aspect, harm, spikes):
    """Radius of the outline (before normalization) at the angle with cosine c, sine s."""
    ellipse = 1.0 / np.sqrt(c * c / aspect + s * s * aspect)
    ck, sk = c, s
    log_h = 0.0
    for k in range(3):
        ck, sk = ck * c - sk * s, sk * c + ck * s
        log_h = log_h + harm[..., k, 0] * ck + harm[..., k, 1] * sk
    bumps = 1.0
    for j in range(3):
        cj, sj, h, inv_w2 = (spikes[..., j, m] for m in range(4))
        bumps = bumps + h * np.exp((c * cj + s * sj - 1.0) * inv_w2)
    return ellipse * np.exp(log_h) * bumps


def _impulses(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, w: np.ndarray) -> np.ndarray:
    img = np.zeros(shape, dtype=np.float32)
    yi = np.clip(np.rint(ys).astype(np.intp), 0, shape[0] - 1)
    xi = np.clip(np.rint(xs).astype(np.intp), 0, shape[1] - 1)
    np.add.at(img, (yi, xi), w.astype(np.float32))
    return img


def render_field(
    phenotype: Phenotype,
    *,
    size: int = 256,
    nucleus_radius: float = 8.0,
    rng: np.random.Generator,
    illumination: np.ndarray | None = None,
    out_of_focus: bool = False,
    cell_density: float = 1.0,
    brightness: float = 1.0,
    debris: bool = True,
    bleed_through: float | Mapping[tuple[str, str], float] = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one Cell Painting field.

    The defaults are calibrated to real JUMP fields (U2OS, Phenix, 0.598 um/px; see
    ``docs/realism.md``): at ``nucleus_radius=18.6`` a 1080 px field is the real scale, and any
    other ``nucleus_radius`` is the same scene scaled (cell count per ``nucleus_radius**2`` of
    field, shapes and textures scale with it). Cells are placed in touching groups and clumps
    with a density that varies over the field (:func:`_place_cells`); each cell is an elongated,
    irregular outline with protrusions (:func:`_cell_shapes`), and touching cells split the space
    between them by their outlines (the cell nearest in units of its own outline wins). Nuclei
    are textured ovals, ~1/7 of the cell's area, off-centre along the cell's long axis; a few
    cells are rounded (mitotic/apoptotic): small, round and bright. DNA: chromatin texture,
    darker nucleoli; ER: perinuclear reticulum and nuclear rim; RNA: nucleoli plus cytoplasm;
    AGP: membranes and a Golgi blob; Mito: perinuclear filaments or puncta
    (``mito_fragmentation``). Unbound dye and autofluorescence give each channel a background,
    which the illumination multiplies together with the signal; the camera adds
    :data:`DARK_OFFSET`, shot noise (normal approximation of Poisson, gain 1 ADU/e-) and
    Gaussian read noise.

    Parameters
    ----------
    phenotype : Phenotype
        Effective phenotype (see :func:`effective_phenotype`).
    size : int
        Field edge in pixels (>= 32).
    nucleus_radius : float
        Median nucleus radius in pixels (median nuclear area ``pi * nucleus_radius**2``); the
        scale of the field. The expected cell count is ``0.012 * size**2 / nucleus_radius**2``
        (~40 in a real-scale 1080 px field, ~12 at size 256, radius 8), before toxicity.
    rng : numpy.random.Generator
        Source of all randomness of this field.
    illumination : (5, size, size) ndarray or None
        Multiplicative flat fields (e.g. :func:`illumination_fields`); None: flat.
    out_of_focus : bool
        Blur the optical signal as a defocused field.
    cell_density : float
        Multiplier of the expected cell count (well-to-well variation, edge effects).
    brightness : float
        Multiplier of all stain intensities (plate/well staining variation).
    debris : bool
        Allow debris: small bright specks, occasional fibres and out-of-focus blobs (floating
        dead cells), and a few saturated pixels.
    bleed_through : float or mapping, keyword-only
        Spectral bleed-through between channels, off by default. A float ``f`` adds ``f`` times
        the stain signal of DNA to ER, of ER to RNA and of AGP to Mito (the neighbouring dyes of
        the Cell Painting palette: Hoechst / concanavalin A 488, concanavalin A 488 / SYTO 14,
        phalloidin 568 / MitoTracker 647); a mapping ``{(source, target): fraction}`` with
        channel names sets each leak explicitly. 0.02-0.1 is a realistic range.

    Returns
    -------
    image : (5, size, size) ndarray of uint16
        Channels in :data:`CHANNELS` order, clipped to [0, 65535].
    nuclei : (size, size) ndarray of uint32
        Nucleus labels 1..N, 0 background.
    cells : (size, size) ndarray of uint32
        Cell labels; cell k contains nucleus k.

    Raises
    ------
    ValueError
        If ``size`` or ``nucleus_radius`` is out of range, ``illumination`` has the wrong shape
        or ``bleed_through`` names an unknown channel or a negative fraction.
    """
    _check_size(size)
    if not 2.0 <= nucleus_radius <= size / 4:
        raise ValueError(f"nucleus_radius must be in [2, size/4={size / 4}], got {nucleus_radius!r}")
    if illumination is not None and illumination.shape != (len(CHANNELS), size, size):
        raise ValueError(
            f"illumination must have shape {(len(CHANNELS), size, size)}, got {illumination.shape}"
        )
    leaks = _bleed_matrix(bleed_through)
    r = float(nucleus_radius)
    s = r / 8.0  # texture scale
    geo = _draw_cells(phenotype, rng, size=size, r=r, cell_density=cell_density)
    bank = _texture_bank(size, s, r)
    rho, nuclei = _nucleus_labels(geo, bank, rng, size=size)
    q, pn, cells = _cell_labels(geo, bank, rng, size=size)
    in_nuc = nuclei > 0
    cells[in_nuc] = nuclei[in_nuc]
    nuclei, cells = _connected_to_nuclei(nuclei, cells, geo.cy, geo.cx)
    sig = _stain(phenotype, geo, bank, rng, nuclei=nuclei, cells=cells, rho=rho, q=q, pn=pn, r=r, s=s)
    sig *= brightness
    for (src, dst), fraction in leaks:
        sig[dst] += np.float32(fraction) * sig[src]
    image = _optics_and_camera(sig, rng, r=r, s=s, illumination=illumination, out_of_focus=out_of_focus,
                               debris=debris)
    return image, nuclei, cells


@dataclasses.dataclass(frozen=True)
class _CellGeometry:
    """The cells of one field before any pixel is drawn: one entry per cell (length ``n``).

    ``cy, cx`` nucleus centres, ``ccy, ccx`` cell-outline centres, ``theta`` the cell's long
    axis, ``theta_n`` the nucleus's, ``a, b`` the nucleus's half axes, ``r_nuc, r_cell`` radii,
    ``aspect, harm, spikes, norm, reach`` the outline (:func:`_cell_shapes`), ``shift`` the
    nucleus's offset along the long axis, ``special`` rounded cells, ``dna_level`` nucleus DNA
    level, ``frag`` mitochondrial fragmentation, ``cell_gain`` (5, n) per-channel stain gain.
    """

    n: int
    special: np.ndarray
    r_nuc: np.ndarray
    r_cell: np.ndarray
    cy: np.ndarray
    cx: np.ndarray
    theta: np.ndarray
    aspect: np.ndarray
    harm: np.ndarray
    spikes: np.ndarray
    norm: np.ndarray
    reach: np.ndarray
    shift: np.ndarray
    ccy: np.ndarray
    ccx: np.ndarray
    a: np.ndarray
    b: np.ndarray
    theta_n: np.ndarray
    dna_level: np.ndarray
    frag: np.ndarray
    cell_gain: np.ndarray


def _draw_cells(ph: Phenotype, rng: np.random.Generator, *, size: int, r: float,
                cell_density: float) -> _CellGeometry:
    """Cell count, sizes, clustered placement, outlines and per-cell stain levels (the field's
    first random draws, in this order)."""
    n_nominal = _CELL_DENSITY * size * size / (r * r) * cell_density
    n = int(rng.poisson(n_nominal * (1.0 - min(ph.toxicity, 0.95))))
    special = rng.random(n) < 0.03 + 0.15 * ph.toxicity  # rounded: mitotic / apoptotic
    area = ph.nuclear_area * rng.lognormal(0.0, 0.2, n)
    area[special] *= 0.3
    r_nuc = r * np.sqrt(area)
    r_cell = r * math.sqrt(_CELL_AREA_RATIO) * ph.cell_size * np.sqrt(ph.nuclear_area) * rng.lognormal(0.0, 0.25, n)
    r_cell[special] = 1.6 * r_nuc[special]
    centres, found = _place_cells(rng, size, r, r_nuc, r_cell) if n else (np.zeros((0, 2)), np.zeros(0, bool))
    centres, special, area, r_nuc, r_cell = centres[found], special[found], area[found], r_nuc[found], r_cell[found]
    n = len(centres)
    cy, cx = centres[:, 0], centres[:, 1]
    theta = rng.uniform(0.0, np.pi, n)  # the cell's long axis
    aspect = np.where(special, 1.0, np.exp(rng.normal(0.35, 0.3, n)))
    harm, spikes, norm, reach = _cell_shapes(rng, n, aspect, np.where(special, 0.0, 1.0))
    # the nucleus sits off-centre along the long axis, the cell body extends to the other side
    shift = rng.uniform(-0.35, 0.35, n) * r_cell * np.sqrt(aspect) * ~special
    ccy, ccx = cy + shift * np.sin(theta), cx + shift * np.cos(theta)
    elong = np.where(special, 1.0, np.exp(rng.normal(0.33, 0.13, n)))
    a, b = r_nuc * np.sqrt(elong), r_nuc / np.sqrt(elong)
    theta_n = theta + rng.normal(0.0, 0.35, n)  # nuclei roughly follow the cell's axis
    dna_level = _LEVELS[0] * ph.dna_intensity * rng.lognormal(0.0, 0.15, n)
    dna_level[special] *= 2.4
    frag = np.clip(0.25 + 0.75 * ph.mito_fragmentation + rng.normal(0.0, 0.06, n), 0.0, 1.0)
    cell_gain = rng.lognormal(0.0, 0.22, n) * rng.lognormal(0.0, 0.1, (len(CHANNELS), n))
    cell_gain[:, special] *= 2.0
    return _CellGeometry(n=n, special=special, r_nuc=r_nuc, r_cell=r_cell, cy=cy, cx=cx, theta=theta, aspect=aspect,
                         harm=harm, spikes=spikes, norm=norm, reach=reach, shift=shift, ccy=ccy, ccx=ccx, a=a, b=b,
                         theta_n=theta_n, dna_level=dna_level, frag=frag, cell_gain=cell_gain)


def _per_label(values: np.ndarray, background: float = 0.0) -> np.ndarray:
    """``values`` with a background entry prepended, so that a label image gathers it directly."""
    return np.concatenate([[background], values]).astype(np.float32)


def _box(y: float, x: float, half: float, size: int) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """The window of half-width ``half`` around (y, x), clipped to the field, and the (float32)
    row and column offsets of its pixels from (y, x)."""
    f32 = np.float32
    y0, y1 = max(int(y - half), 0), min(int(y + half) + 2, size)
    x0, x1 = max(int(x - half), 0), min(int(x + half) + 2, size)
    return (slice(y0, y1), slice(x0, x1), np.arange(y0, y1, dtype=f32)[:, None] - f32(y),
            np.arange(x0, x1, dtype=f32)[None, :] - f32(x))


def _nucleus_labels(geo: _CellGeometry, bank: dict[str, np.ndarray], rng: np.random.Generator, *,
                    size: int) -> tuple[np.ndarray, np.ndarray]:
    """Nuclei as ovals, each pixel to the nucleus nearest in units of its own radius, with a
    rough edge. Returns ``rho`` ((size, size) float32, distance in nucleus radii) and the
    (size, size) uint32 nucleus labels."""
    f32 = np.float32
    shape = (size, size)
    rho = np.full(shape, np.inf, dtype=np.float32)
    nuclei = np.zeros(shape, dtype=np.uint32)
    for i in range(geo.n):
        sy, sx, dy, dx = _box(geo.cy[i], geo.cx[i], 1.6 * geo.a[i] + 2, size)
        ct, st = math.cos(geo.theta_n[i]), math.sin(geo.theta_n[i])
        u = (dx * f32(ct) + dy * f32(st)) / f32(geo.a[i])
        v = (dy * f32(ct) - dx * f32(st)) / f32(geo.b[i])
        d = np.sqrt(u * u + v * v)
        view, own = rho[sy, sx], nuclei[sy, sx]
        closer = d < view
        np.copyto(view, d, where=closer)
        own[closer] = i + 1
    rho *= 1.0 + 0.07 * _draw(bank["rough"], rng)
    nuclei[rho >= 1.0] = 0
    return rho, nuclei


def _cell_labels(geo: _CellGeometry, bank: dict[str, np.ndarray], rng: np.random.Generator, *,
                 size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells, each pixel to the cell nearest in units of its own outline, with ragged free
    edges. Returns ``q`` (distance in outline units), ``pn`` (distance beyond the own nucleus's
    radius / cell radius), both (size, size) float32, and the (size, size) uint32 cell labels."""
    f32 = np.float32
    shape = (size, size)
    q = np.full(shape, np.inf, dtype=np.float32)
    pn = np.ones(shape, dtype=np.float32)
    cells = np.zeros(shape, dtype=np.uint32)
    for i in range(geo.n):
        radius = geo.r_cell[i] / geo.norm[i]
        # the outline reaches r_cell * reach; the ragged edge (below) at most 1 / 0.75 beyond
        sy, sx, dy, dx = _box(geo.ccy[i], geo.ccx[i], 1.34 * geo.r_cell[i] * geo.reach[i] + 2, size)
        ct, st = math.cos(geo.theta[i]), math.sin(geo.theta[i])
        u = dx * f32(ct) + dy * f32(st)
        v = dy * f32(ct) - dx * f32(st)
        dist = np.sqrt(u * u + v * v) + f32(1e-3)
        d = dist / (f32(radius) * _outline(u / dist, v / dist, f32(geo.aspect[i]), geo.harm[i].astype(f32),
                                           geo.spikes[i].astype(f32)))
        view, own = q[sy, sx], cells[sy, sx]
        closer = d < view
        np.copyto(view, d, where=closer)
        own[closer] = i + 1
        oy, ox = f32(geo.cy[i] - geo.ccy[i]), f32(geo.cx[i] - geo.ccx[i])
        beyond = np.maximum(np.sqrt((dy - oy) ** 2 + (dx - ox) ** 2) - f32(geo.r_nuc[i]), 0) / f32(geo.r_cell[i])
        np.copyto(pn[sy, sx], beyond, where=closer)
    # ragged free edges (the factor is shared by neighbours, so borders between cells stay smooth)
    edge_noise = np.maximum(1.0 + 0.12 * _draw(bank["limit"], rng) + 0.03 * _draw(bank["rough"], rng), 0.75)
    cells[q * edge_noise >= 1.0] = 0
    return q, pn, cells


def _nucleoli(geo: _CellGeometry, rng: np.random.Generator, *, shape: tuple[int, int], s: float) -> np.ndarray:
    """RNA nucleoli (also dark holes in the DNA stain): (Y, X) float density, 1-4 per cell."""
    k_nucleoli = np.where(geo.special, 0, rng.integers(1, 5, geo.n))
    owner_idx = np.repeat(np.arange(geo.n), k_nucleoli)
    ang = rng.uniform(0, 2 * np.pi, owner_idx.size)
    rad = 0.5 * np.sqrt(rng.random(owner_idx.size))
    a, b, theta_n = geo.a[owner_idx], geo.b[owner_idx], geo.theta_n[owner_idx]
    uu, vv = rad * a * np.cos(ang), rad * b * np.sin(ang)
    ny = geo.cy[owner_idx] + uu * np.sin(theta_n) + vv * np.cos(theta_n)
    nx = geo.cx[owner_idx] + uu * np.cos(theta_n) - vv * np.sin(theta_n)
    return ndi.gaussian_filter(
        _impulses(shape, ny, nx, rng.uniform(0.6, 1.0, owner_idx.size)), 1.6 * s
    ) * (2 * np.pi * (1.6 * s) ** 2)


def _membrane(cells: np.ndarray, s: float) -> np.ndarray:
    """Label edges blurred to membranes, (Y, X) float32, scale-free."""
    edge = np.zeros(cells.shape, dtype=bool)
    edge[:-1] |= cells[:-1] != cells[1:]
    edge[1:] |= cells[:-1] != cells[1:]
    edge[:, :-1] |= cells[:, :-1] != cells[:, 1:]
    edge[:, 1:] |= cells[:, :-1] != cells[:, 1:]
    return ndi.gaussian_filter(edge.astype(np.float32), 0.8 * s) * np.float32(s)


def _stain(ph: Phenotype, geo: _CellGeometry, bank: dict[str, np.ndarray], rng: np.random.Generator, *,
           nuclei: np.ndarray, cells: np.ndarray, rho: np.ndarray, q: np.ndarray, pn: np.ndarray,
           r: float, s: float) -> np.ndarray:
    """The five stains' optical signal, (5, Y, X) float32, before brightness, bleed-through,
    debris, blur, background and camera."""
    f32 = np.float32
    shape = nuclei.shape
    in_nuc = nuclei > 0
    in_cell = cells > 0
    q = np.where(in_cell, np.minimum(q, 1.0), f32(1.0))
    rho = np.minimum(rho, f32(4.0))
    sig = np.empty((len(CHANNELS),) + shape, dtype=np.float32)
    gain = [_per_label(geo.cell_gain[c], 0.0)[cells] for c in range(len(CHANNELS))]
    nucleoli = _nucleoli(geo, rng, shape=shape, s=s)

    # DNA: domed nuclei with chromatin texture and darker nucleoli
    chromatin = _draw(bank["chromatin"], rng)
    tex = 0.3 + 0.3 * ph.texture
    dna = _per_label(geo.dna_level)[nuclei] * (1.0 - 0.35 * np.minimum(rho, 1.0) ** 2)
    dna *= np.maximum(1.0 + tex * chromatin, 0.1) * (1.0 - 0.35 * np.minimum(nucleoli, 1.0))
    sig[0] = np.where(in_nuc, dna, 0.0)

    # cytoplasm thins towards the cell's edge
    thick = 1.0 - 0.5 * q * q

    # ER: perinuclear reticulum (also above and below the nucleus) + nuclear rim
    reticulum = _draw(bank["reticulum"], rng)
    er = np.exp(-3.0 * pn) * (1.0 + (0.25 + 0.3 * ph.texture) * reticulum) * thick
    er = np.where(in_nuc, 0.7 * er, er) + 0.15 * np.exp(-(((rho - 1.0) * r / (1.2 * s)) ** 2))
    sig[1] = _LEVELS[1] * ph.er_intensity * np.maximum(er, 0.0) * gain[1] * in_cell

    # RNA: nucleoli + cytoplasm
    rna_cyto = np.exp(-2.0 * pn) * (1.0 + (0.12 + 0.3 * ph.texture) * reticulum) * thick
    rna = np.where(in_nuc, 0.7 + 0.9 * nucleoli, np.maximum(rna_cyto, 0.0))
    sig[2] = _LEVELS[2] * ph.rna_intensity * rna * gain[2] * in_cell

    # AGP: membranes (label edges), cortical actin, Golgi blob beside the nucleus
    membrane = _membrane(cells, s)
    phi = geo.theta + np.pi * (geo.shift > 0) + rng.normal(0.0, 0.6, geo.n)  # towards the cell body
    golgi = ndi.gaussian_filter(
        _impulses(shape, geo.cy + 1.15 * geo.b * np.sin(phi), geo.cx + 1.15 * geo.b * np.cos(phi), np.ones(geo.n)),
        1.6 * s,
    ) * (2 * np.pi * (1.6 * s) ** 2)
    agp = (0.3 + 1.2 * membrane + 3.0 * golgi + 0.05 * chromatin) * (0.5 + 0.5 * thick)
    sig[3] = _LEVELS[3] * ph.agp_intensity * np.maximum(agp, 0.0) * gain[3] * in_cell

    # Mito: perinuclear network of filaments (ridges of band-pass noise) or puncta
    ridges = _draw(bank["ridge"], rng)
    puncta = _draw(bank["puncta"], rng)
    f = _per_label(geo.frag)[cells]
    mito = (0.03 + np.exp(-5.0 * pn)) * ((1.0 - f) * 1.4 * ridges + f * 1.2 * puncta)
    sig[4] = _LEVELS[4] * ph.mito_intensity * mito * gain[4] * np.where(in_nuc, 0.5, in_cell)
    sig[0] *= gain[0]
    return sig


def _optics_and_camera(sig: np.ndarray, rng: np.random.Generator, *, r: float, s: float,
                       illumination: np.ndarray | None, out_of_focus: bool, debris: bool) -> np.ndarray:
    """Debris, the optics' blur and background, illumination and the camera (shot and read
    noise, offset, saturated pixels): the (5, Y, X) float32 signal to a uint16 image."""
    size = sig.shape[-1]
    if debris:
        _add_debris(sig, rng, r, s)
    # the optics' point spread (~1.9 px at the real scale) and, out of focus, a wide defocus blur
    blur = s * math.hypot(_PSF, 3.0 if out_of_focus else 0.0)
    sig = ndi.gaussian_filter(sig, (0.0, blur, blur))
    sig += _BACKGROUND[:, None, None].astype(np.float32)
    if illumination is not None:
        sig *= illumination
    np.maximum(sig, 0.0, out=sig)
    noise = rng.standard_normal(sig.shape, dtype=np.float32)
    sig += noise * np.sqrt(sig * _GAIN + _READ_NOISE**2)
    sig += DARK_OFFSET
    if debris and rng.random() < 0.3:
        k = int(rng.integers(1, 6))
        sig[rng.integers(0, len(CHANNELS), k), rng.integers(0, size, k), rng.integers(0, size, k)] = 65535
    return np.clip(np.rint(sig), 0, 65535).astype(np.uint16)


def _connected_to_nuclei(
    nuclei: np.ndarray, cells: np.ndarray, cy: np.ndarray, cx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth made exact: each nucleus is the piece of its label that holds its centre,
    each cell the pieces of its label that hold its nucleus (competing outlines can leave a
    cell's label in stray fragments beyond a neighbour; those become background)."""
    n = len(cy)
    if n == 0:
        return nuclei, cells
    yi = np.clip(np.rint(cy).astype(np.intp), 0, nuclei.shape[0] - 1)
    xi = np.clip(np.rint(cx).astype(np.intp), 0, nuclei.shape[1] - 1)
    parts = label(nuclei, background=0, connectivity=1)
    keep = np.zeros(parts.max() + 1, dtype=bool)
    keep[parts[yi, xi]] = True
    keep[0] = False
    nuclei = np.where(keep[parts], nuclei, 0).astype(np.uint32)
    cells = np.where(cells == nuclei, cells, np.where(nuclei > 0, nuclei, cells))
    parts = label(cells, background=0, connectivity=1)
    keep = np.zeros(parts.max() + 1, dtype=bool)
    keep[parts[nuclei > 0]] = True
    keep[0] = False
    cells = np.where(keep[parts], cells, 0).astype(np.uint32)
    # every nucleus keeps at least its centre pixel (the placement keeps nuclei apart), so
    # labels stay 1..n; relabel anyway should a nucleus have vanished
    present = np.zeros(n + 1, dtype=bool)
    present[nuclei.ravel()] = True
    if not present[1:].all():
        remap = np.zeros(n + 1, dtype=np.uint32)
        remap[present] = np.arange(int(present.sum()), dtype=np.uint32)
        nuclei, cells = remap[nuclei], remap[cells]
    return nuclei, cells


def _add_debris(sig: np.ndarray, rng: np.random.Generator, r: float, s: float) -> None:
    """Debris on the optical signal (in place): small bright specks in one or two channels (a
    few per real-size field), now and then a fibre or clump bright in every channel, and an
    out-of-focus blob (a floating dead cell), dim in DNA."""
    size = sig.shape[-1]
    shape = sig.shape[1:]
    area = (size / (58.0 * r)) ** 2  # in real 1080 px fields
    k = int(rng.poisson(6.0 * area))
    sigma = 0.7 * s
    half = int(math.ceil(3 * sigma))
    for _ in range(k):
        chans = rng.choice(len(CHANNELS), size=int(rng.integers(1, 3)), replace=False)
        y, x = rng.uniform(0, size, 2)
        yi, xi = int(y), int(x)
        y0, y1, x0, x1 = max(yi - half, 0), min(yi + half + 1, size), max(xi - half, 0), min(xi + half + 1, size)
        gy = np.exp(-0.5 * ((np.arange(y0, y1) - y) / sigma) ** 2)
        gx = np.exp(-0.5 * ((np.arange(x0, x1) - x) / sigma) ** 2)
        peak = rng.uniform(0.3, 1.5, len(chans)) * _LEVELS[chans]
        sig[chans, y0:y1, x0:x1] += (peak[:, None, None] * (gy[:, None] * gx[None, :])[None]).astype(np.float32)
    if rng.random() < 0.25:
        for _ in range(int(rng.integers(1, 3))):
            steps = int(rng.integers(5, 25))
            path = np.cumsum(rng.normal(0.0, 1.5 * s, (steps, 2)), axis=0) + rng.uniform(0, size, 2)
            blob = ndi.gaussian_filter(_impulses(shape, path[:, 0], path[:, 1], np.ones(steps)), 1.2 * s)
            sig += blob[None] * (rng.uniform(2000, 8000, len(CHANNELS))[:, None, None] * s * s)
    if rng.random() < 0.15 * min(area, 1.0) ** 0.5:
        y, x = rng.uniform(0, size, 2)
        sigma = rng.uniform(1.5, 3.0) * r
        yy = np.exp(-0.5 * ((np.arange(size, dtype=np.float32) - y) / sigma) ** 2)
        xx = np.exp(-0.5 * ((np.arange(size, dtype=np.float32) - x) / sigma) ** 2)
        sig += (yy[:, None] * xx[None, :])[None] * (np.array([0.12, 0.05, 0.05, 0.04, 0.04], np.float32)
                                                     * _LEVELS.astype(np.float32))[:, None, None]


def _bleed_matrix(bleed_through: float | Mapping[tuple[str, str], float]) -> list[tuple[tuple[int, int], float]]:
    """``[((source, target), fraction), ...]`` channel indices of ``bleed_through``."""
    if isinstance(bleed_through, Mapping):
        pairs = dict(bleed_through)
    else:
        f = float(bleed_through)
        pairs = {} if f == 0 else {("DNA", "ER"): f, ("ER", "RNA"): f, ("AGP", "Mito"): f}
    out = []
    for (src, dst), fraction in pairs.items():
        if src not in CHANNELS or dst not in CHANNELS or src == dst:
            raise ValueError(f"bleed_through: ({src!r}, {dst!r}) is not a pair of two channels of {CHANNELS}")
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"bleed_through fraction must be in [0, 1], got {fraction!r} for ({src!r}, {dst!r})")
        if fraction:
            out.append(((CHANNELS.index(src), CHANNELS.index(dst)), float(fraction)))
    return out
