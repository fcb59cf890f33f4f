"""Rendering of one synthetic Cell Painting field and of the simulated microscope's flat fields.

:func:`render_field` draws one 5-channel field (DNA, ER, RNA, AGP, Mito) plus its nuclei and cell
label images, with camera offset, shot and read noise, illumination, debris, saturation and
optional defocus; :func:`illumination_fields` gives the microscope's flat fields.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.ndimage as ndi
from scipy.spatial import cKDTree

from pipeline.store import CHANNELS
from pipeline.synthetic.phenotype import Phenotype

__all__ = ["DARK_OFFSET", "illumination_fields", "render_field"]

#: Camera dark offset in ADU, added to every pixel.
DARK_OFFSET: float = 100.0

#: Expected cells per (nucleus_radius ** 2) of field area, untreated.
_CELL_DENSITY = 1.0 / 32.0
#: Signal levels (ADU above offset) before illumination: nucleus DNA, ER, RNA, AGP, Mito.
_LEVELS = np.array([2400.0, 900.0, 700.0, 800.0, 1100.0])
#: Autofluorescent background (ADU above offset) per channel.
_BACKGROUND = np.array([40.0, 70.0, 55.0, 60.0, 45.0])
_READ_NOISE = 3.0
_GAIN = 1.0  # ADU per photo-electron


def illumination_fields(size: int, seed: int) -> np.ndarray:
    """Flat fields of the simulated microscope ``seed``.

    Each channel is a smooth vignetting (off-centre quadratic fall-off) times a linear
    gradient, different per channel.

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
        cy, cx = rng.uniform(-0.15, 0.15, 2)
        vignette = 1.0 - rng.uniform(0.25, 0.45) * ((yy - cy) ** 2 + (xx - cx) ** 2) / 0.5
        gy, gx = rng.uniform(-0.25, 0.25, 2)
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
    dots = (np.random.default_rng([0x7E57, size, 4]).random((size, size)) < 0.05).astype(float)
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


def _place_centres(
    rng: np.random.Generator, size: int, radius: float, n: int, n_nominal: float
) -> np.ndarray:
    """(n', 2) float centres (y, x): a jittered grid at nominal density, n sites kept, some pairs."""
    spacing = math.sqrt(size * size * 0.85 / max(n_nominal, 1.0))
    k = max(1, int(size // spacing))
    spacing = size / k
    gy, gx = np.mgrid[0:k, 0:k].reshape(2, -1).astype(float)
    sites = (np.stack([gy, gx], axis=1) + 0.5) * spacing
    sites += rng.uniform(-0.3, 0.3, sites.shape) * spacing + rng.uniform(0.0, spacing, 2)
    sites %= size  # random grid phase: no cell pattern fixed to the image frame
    n = min(n, len(sites))
    centres = sites[rng.choice(len(sites), size=n, replace=False)]
    if n >= 2:  # some touching pairs/clumps: pull ~12 % of cells next to their neighbour
        _, nn = cKDTree(centres).query(centres, k=2)
        movers = np.flatnonzero(rng.random(n) < 0.12)
        for i in movers:
            j = nn[i, 1]
            d = centres[i] - centres[j]
            dist = float(np.hypot(*d))
            if dist > 1e-6:
                centres[i] = centres[j] + d / dist * radius * rng.uniform(1.8, 2.2)
    return np.clip(centres, 1.0, size - 2.0)


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one Cell Painting field.

    Cells sit on a jittered grid (with some touching pairs); nuclei are textured ellipses cut by
    their Voronoi neighbours; cells grow from the nuclei to a noisy radius, limited by the
    neighbouring cells. DNA: chromatin texture, bright small mitotic/apoptotic nuclei; ER:
    perinuclear reticulum and nuclear rim; RNA: nucleoli plus cytoplasm; AGP: membranes and a
    Golgi blob; Mito: perinuclear filaments or puncta (``mito_fragmentation``). The camera adds
    :data:`DARK_OFFSET`, shot noise (normal approximation of Poisson, gain 1 ADU/e-) and
    Gaussian read noise, after the illumination field has multiplied the signal.

    Parameters
    ----------
    phenotype : Phenotype
        Effective phenotype (see :func:`effective_phenotype`).
    size : int
        Field edge in pixels (>= 32).
    nucleus_radius : float
        Typical nucleus radius in pixels; cell count scales with ``size**2 / nucleus_radius**2``
        (about 32 cells at size 256, radius 8, before toxicity).
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
        Allow occasional debris and a few saturated pixels.

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
        If ``size`` or ``nucleus_radius`` is out of range or ``illumination`` has the wrong shape.
    """
    _check_size(size)
    if not 2.0 <= nucleus_radius <= size / 4:
        raise ValueError(f"nucleus_radius must be in [2, size/4={size / 4}], got {nucleus_radius!r}")
    if illumination is not None and illumination.shape != (len(CHANNELS), size, size):
        raise ValueError(
            f"illumination must have shape {(len(CHANNELS), size, size)}, got {illumination.shape}"
        )
    r = float(nucleus_radius)
    s = r / 8.0  # texture scale
    shape = (size, size)
    ph = phenotype

    # ---- cell placement and per-cell parameters ----------------------------------------------
    n_nominal = _CELL_DENSITY * size * size / (r * r) * cell_density
    n = int(rng.poisson(n_nominal * (1.0 - min(ph.toxicity, 0.95))))
    centres = _place_centres(rng, size, r, n, n_nominal) if n else np.zeros((0, 2))
    n = len(centres)
    special = rng.random(n) < 0.03 + 0.15 * ph.toxicity  # mitotic / apoptotic
    area = ph.nuclear_area * rng.lognormal(0.0, 0.15, n)
    elong = 1.0 + np.abs(rng.normal(0.0, 0.22, n))
    a = r * np.sqrt(area * elong)
    b = r * np.sqrt(area / elong)
    a[special] *= 0.55
    b[special] *= 0.55
    theta = rng.uniform(0.0, np.pi, n)
    dna_level = _LEVELS[0] * ph.dna_intensity * rng.lognormal(0.0, 0.12, n)
    dna_level[special] *= 2.4
    cyto = 1.3 * r * ph.cell_size * rng.lognormal(0.0, 0.18, n)
    cyto[special] = 0.5 * r
    frag = np.clip(0.25 + 0.75 * ph.mito_fragmentation + rng.normal(0.0, 0.06, n), 0.0, 1.0)
    cell_gain = rng.lognormal(0.0, 0.1, (len(CHANNELS), n))

    # Prepend a background entry so that arrays can be gathered with label images directly.
    def per_label(values: np.ndarray, background: float = 0.0) -> np.ndarray:
        return np.concatenate([[background], values]).astype(np.float32)

    # ---- nuclei: ellipses, assigned to the nearest centre (Voronoi) ---------------------------
    seeds = np.zeros(shape, dtype=np.int32)
    cy, cx = centres[:, 0], centres[:, 1]
    seeds[np.rint(cy).astype(np.intp), np.rint(cx).astype(np.intp)] = np.arange(1, n + 1)
    if n:
        iy, ix = ndi.distance_transform_edt(seeds == 0, return_distances=False, return_indices=True)
        owner = seeds[iy, ix]
    else:
        owner = np.zeros(shape, dtype=np.int32)
    yy, xx = np.indices(shape, dtype=np.float32)
    dy = yy - per_label(cy)[owner]
    dx = xx - per_label(cx)[owner]
    cos_t, sin_t = per_label(np.cos(theta)), per_label(np.sin(theta))
    u = dx * cos_t[owner] + dy * sin_t[owner]
    v = dy * cos_t[owner] - dx * sin_t[owner]
    rho = np.sqrt((u / per_label(a, 1.0)[owner]) ** 2 + (v / per_label(b, 1.0)[owner]) ** 2)
    bank = _texture_bank(size, s, r)
    rho *= 1.0 + 0.07 * _draw(bank["rough"], rng)
    nuclei = np.where((rho < 1.0) & (owner > 0), owner, 0).astype(np.uint32)
    in_nuc = nuclei > 0

    # ---- cells: grow from nuclei to a noisy radius, split by nearest nucleus -------------------
    if n:
        dist, (jy, jx) = ndi.distance_transform_edt(~in_nuc, return_indices=True)
        dist = dist.astype(np.float32)
        near = nuclei[jy, jx]
        limit = per_label(cyto)[near] * (1.0 + 0.3 * _draw(bank["limit"], rng))
        cells = np.where(dist <= limit, near, 0).astype(np.uint32)
    else:
        dist = np.full(shape, np.inf, dtype=np.float32)
        cells = np.zeros(shape, dtype=np.uint32)
    in_cell = cells > 0
    cytoplasm = in_cell & ~in_nuc
    q = np.where(in_cell, dist / per_label(cyto, 1.0)[cells], np.float32(1.0))

    sig = np.empty((len(CHANNELS),) + shape, dtype=np.float32)
    gain = [per_label(cell_gain[c], 0.0)[cells] for c in range(len(CHANNELS))]

    # DNA: domed nuclei with chromatin texture
    chromatin = _draw(bank["chromatin"], rng)
    tex = 0.12 + 0.3 * ph.texture
    dna = per_label(dna_level)[nuclei] * (1.0 - 0.3 * np.minimum(rho, 1.0) ** 2)
    sig[0] = np.where(in_nuc, dna * np.maximum(1.0 + tex * chromatin, 0.1), 0.0)

    # ER: perinuclear reticulum + nuclear rim
    reticulum = _draw(bank["reticulum"], rng)
    er = np.exp(-1.6 * q) * (1.0 + (0.35 + 0.3 * ph.texture) * reticulum)
    er += 0.8 * np.exp(-(((rho - 1.0) * r / (1.2 * s)) ** 2))
    sig[1] = _LEVELS[1] * ph.er_intensity * np.where(in_nuc, 0.15, np.maximum(er, 0.0)) * gain[1]
    sig[1] *= in_cell

    # RNA: nucleoli + cytoplasm
    k_nucleoli = np.where(special, 0, rng.integers(1, 5, n))
    owner_idx = np.repeat(np.arange(n), k_nucleoli)
    ang = rng.uniform(0, 2 * np.pi, owner_idx.size)
    rad = 0.5 * np.sqrt(rng.random(owner_idx.size))
    uu, vv = rad * a[owner_idx] * np.cos(ang), rad * b[owner_idx] * np.sin(ang)
    ny = cy[owner_idx] + uu * np.sin(theta[owner_idx]) + vv * np.cos(theta[owner_idx])
    nx = cx[owner_idx] + uu * np.cos(theta[owner_idx]) - vv * np.sin(theta[owner_idx])
    nucleoli = ndi.gaussian_filter(
        _impulses(shape, ny, nx, rng.uniform(0.6, 1.0, owner_idx.size)), 1.1 * s
    ) * (2 * np.pi * (1.1 * s) ** 2)
    rna_cyto = (1.0 - 0.5 * q) * (1.0 + (0.2 + 0.3 * ph.texture) * reticulum)
    rna = np.where(in_nuc, 0.45 + 2.2 * nucleoli, np.maximum(rna_cyto, 0.0))
    sig[2] = _LEVELS[2] * ph.rna_intensity * rna * gain[2] * in_cell

    # AGP: membranes (label edges), cortical actin, Golgi blob beside the nucleus
    edge = np.zeros(shape, dtype=bool)
    edge[:-1] |= cells[:-1] != cells[1:]
    edge[1:] |= cells[:-1] != cells[1:]
    edge[:, :-1] |= cells[:, :-1] != cells[:, 1:]
    edge[:, 1:] |= cells[:, :-1] != cells[:, 1:]
    membrane = ndi.gaussian_filter(edge.astype(np.float32), 0.8 * s)
    phi = rng.uniform(0, 2 * np.pi, n)
    golgi = ndi.gaussian_filter(
        _impulses(shape, cy + 1.1 * b * np.sin(phi), cx + 1.1 * b * np.cos(phi), np.ones(n)),
        1.6 * s,
    ) * (2 * np.pi * (1.6 * s) ** 2)
    agp = 0.3 + 1.6 * membrane + 1.2 * golgi + 0.1 * chromatin
    sig[3] = _LEVELS[3] * ph.agp_intensity * np.maximum(agp, 0.0) * gain[3] * in_cell

    # Mito: perinuclear network of filaments (ridges of band-pass noise) or puncta
    ridges = _draw(bank["ridge"], rng)
    puncta = _draw(bank["puncta"], rng)
    f = per_label(frag)[cells]
    mito = np.exp(-1.3 * q) * ((1.0 - f) * 1.4 * ridges + f * 1.2 * puncta)
    sig[4] = _LEVELS[4] * ph.mito_intensity * mito * gain[4] * cytoplasm

    sig[0] *= gain[0]
    sig *= brightness
    sig += _BACKGROUND[:, None, None].astype(np.float32)

    # ---- debris and defocus (optical) --------------------------------------------------------
    if debris and rng.random() < 0.25:
        for _ in range(int(rng.integers(1, 3))):
            steps = int(rng.integers(5, 25))
            path = np.cumsum(rng.normal(0.0, 1.5 * s, (steps, 2)), axis=0) + rng.uniform(0, size, 2)
            blob = ndi.gaussian_filter(
                _impulses(shape, path[:, 0], path[:, 1], np.ones(steps)), 1.2 * s
            )
            sig += blob[None] * (rng.uniform(2000, 8000, len(CHANNELS))[:, None, None] * s * s)
    if out_of_focus:
        sig = ndi.gaussian_filter(sig, (0.0, 3.0 * s, 3.0 * s))

    # ---- camera --------------------------------------------------------------------------------
    if illumination is not None:
        sig *= illumination
    np.maximum(sig, 0.0, out=sig)
    noise = rng.standard_normal(sig.shape, dtype=np.float32)
    sig += noise * np.sqrt(sig * _GAIN + _READ_NOISE**2)
    sig += DARK_OFFSET
    if debris and rng.random() < 0.3:
        k = int(rng.integers(1, 6))
        sig[rng.integers(0, len(CHANNELS), k), rng.integers(0, size, k), rng.integers(0, size, k)] = 65535
    image = np.clip(np.rint(sig), 0, 65535).astype(np.uint16)
    cells_out = cells.astype(np.uint32)
    return image, nuclei, cells_out

