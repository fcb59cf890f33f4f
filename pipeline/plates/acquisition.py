"""What the microscope wrote about a plate, vendor-neutral: channel names, wavelengths, pixel
size, objective (:class:`Acquisition`), and which Cell Painting stain each channel holds.

Each vendor's reader lives with its layout in :mod:`pipeline.plates.vendors`: the Harmony index
and TIFF descriptions in :mod:`~pipeline.plates.vendors.phenix`, the ``.HTD`` file in
:mod:`~pipeline.plates.vendors.imagexpress`, LoadData metadata columns in
:mod:`~pipeline.plates.vendors.loaddata`; each returns an :class:`Acquisition`.

:func:`stain_role` maps a stain or dye name to its Cell Painting role (Hoechst/DAPI -> DNA,
ConA/Alexa 488 -> ER, SYTO 14/"488 long" -> RNA, phalloidin/WGA/Alexa 568 -> AGP,
MitoTracker/Alexa 647 -> Mito; brightfield and phase contrast -> ``None``, not a stain) and
:func:`auto_channel_map` builds a whole channel map from an :class:`Acquisition`.
Nothing here reads pixels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.store.paths import CHANNELS

__all__ = [
    "ChannelInfo",
    "Acquisition",
    "AcquisitionError",
    "stain_role",
    "auto_channel_map",
    "describe_channel_map",
]


class AcquisitionError(ValueError):
    """A metadata file cannot be read, or its channels cannot be mapped to Cell Painting roles."""


@dataclass(frozen=True)
class ChannelInfo:
    """One acquired channel as the instrument names it.

    Attributes
    ----------
    id : str
        The vendor channel number as it appears in file names (``ch5`` -> ``'5'``, ``w2`` ->
        ``'2'``) or, for LoadData, the column suffix (``OrigDNA`` -> ``'DNA'``).
    name : str
        Stain / channel name (``'HOECHST 33342'``, ``'Brightfield'``).
    excitation_nm, emission_nm : float or None
        Main excitation and emission wavelengths (nm).
    exposure_s : float or None
        Exposure time (s).
    """

    id: str
    name: str
    excitation_nm: float | None = None
    emission_nm: float | None = None
    exposure_s: float | None = None


@dataclass(frozen=True)
class Acquisition:
    """Acquisition metadata of one plate (every field optional but ``source``).

    Attributes
    ----------
    source : Path
        The file it was read from.
    plate : str or None
        Plate id / barcode.
    wells : tuple of str
        Wells imaged (``'A01'``).
    n_fields : int or None
        Fields per well (the largest field id seen).
    channels : tuple of ChannelInfo
        In vendor channel order.
    pixel_size_um : (float, float) or None
        (y, x) physical pixel size in micrometres.
    objective : str or None
        E.g. ``'20x, NA 1.0'``.
    flatfield : dict
        Vendor channel id -> Harmony flat-field profile (the parsed ``FlatfieldProfile`` dict).
    """

    source: Path
    plate: str | None = None
    wells: tuple[str, ...] = ()
    n_fields: int | None = None
    channels: tuple[ChannelInfo, ...] = ()
    pixel_size_um: tuple[float, float] | None = None
    objective: str | None = None
    flatfield: dict[str, dict] = field(default_factory=dict)

    def channel(self, vendor_id: str) -> ChannelInfo | None:
        return next((c for c in self.channels if c.id == str(vendor_id)), None)


# ----------------------------------------------------------------------------- stain names
# Checked in order; the first pattern that matches a (lower-cased) channel name decides. '488 long'
# (SYTO 14 through the long-pass filter) must be tested before plain 'alexa 488'.
_NOT_A_STAIN = re.compile(r"bright\s*field|\bbf\b|phase|\bdpc\b|transmi|\bdic\b")
_ROLE_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("DNA", re.compile(r"hoechst|dapi|draq\s*5|\bdna\b|origdna")),
    ("RNA", re.compile(r"syto|488\s*long|\brna\b|origrna")),
    ("ER", re.compile(r"concanavalin|\bcon\s*a\b|alexa\s*(fluor\s*)?488|\ber\b|origer")),
    ("AGP", re.compile(r"phalloidin|\bwga\b|wheat germ|alexa\s*(fluor\s*)?5(46|55|68|94)|\bagp\b|origagp|actin|golgi")),
    ("Mito", re.compile(r"mito|alexa\s*(fluor\s*)?6(33|47)|origmito")),
    # ImageXpress wave names are filter sets; Bray et al. 2016 (Nat. Protoc.) Cell Painting:
    # DAPI = Hoechst, FITC = ConA, Cy3 = SYTO 14, Texas Red = phalloidin + WGA, Cy5 = MitoTracker
    ("ER", re.compile(r"\bfitc\b|\bgfp\b")),
    ("RNA", re.compile(r"\bcy\s*3\b|\btritc\b")),
    ("AGP", re.compile(r"texas\s*red|\btx\s*red\b")),
    ("Mito", re.compile(r"\bcy\s*5\b")),
)


def stain_role(name: str) -> str | None:
    """The Cell Painting role of a stain or channel name, or None (brightfield, unknown).

    Examples
    --------
    >>> [stain_role(n) for n in ("HOECHST 33342", "488 long", "Alexa 488", "Alexa 568", "Alexa 647")]
    ['DNA', 'RNA', 'ER', 'AGP', 'Mito']
    >>> stain_role("Brightfield") is None
    True
    """
    s = name.strip().lower().replace("_", " ")
    if _NOT_A_STAIN.search(s):
        return None
    for role, pattern in _ROLE_PATTERNS:
        if pattern.search(s):
            return role
    return None


def auto_channel_map(acq: Acquisition) -> dict[str, str]:
    """``{vendor channel id: role}`` from the channel names of ``acq``.

    Channels whose name maps to no role (brightfield, digital phase, unknown dyes) are left out:
    the plate keeps the roles it has (DNA at least).

    Raises
    ------
    AcquisitionError
        When two channels map to the same role, or no channel is a DNA stain; the message names
        the file and lists the channel names so that ``--channels`` can be given instead.
    """
    mapping: dict[str, str] = {}
    seen: dict[str, str] = {}
    names = ", ".join(f"{c.id}={c.name!r}" for c in acq.channels)
    for c in acq.channels:
        role = stain_role(c.name)
        if role is None:
            continue
        if role in seen:
            raise AcquisitionError(f"{acq.source}: channels {seen[role]} and {c.id} both look like {role} "
                                   f"({names}); give --channels")
        seen[role] = c.id
        mapping[c.id] = role
    if "DNA" not in mapping.values():
        raise AcquisitionError(f"{acq.source}: no channel is a DNA stain (Hoechst, DAPI) among {names or 'none'}; "
                               f"give --channels")
    return mapping


#: How each channel-map source is said in a summary.
_SOURCE_TEXT = {"metadata": "the instrument's metadata", "user": "--channels",
                "pixels": "the pixels (DNA only; no metadata names the other stains)", "unresolved": "not yet known"}


def describe_channel_map(mapping: dict[str, str], acq: Acquisition | None = None, *, source: str | None = None) -> str:
    """One line: ``'DNA=ch5 (HOECHST 33342), ER=ch4 (Alexa 488), ...; ignored: ch6 (Brightfield)'``.

    Channels mapped to no stain (``ch<N>``, kept raw) are listed as ``unassigned``; with
    ``source`` (:data:`pipeline.plates.channel_maps.CHANNEL_SOURCES`) the line ends with where the map
    comes from (``'; source: the instrument's metadata'``). LoadData channels, named by their
    column, read ``OrigDNA``; vendor channel numbers read ``ch5``.
    """
    def label(vid: str) -> str:
        info = acq.channel(vid) if acq is not None else None
        return (f"ch{vid}" if vid.isdigit() else f"Orig{vid}") + (f" ({info.name})" if info is not None else "")

    by_role = {role: vid for vid, role in mapping.items()}
    parts = [f"{r}={label(by_role[r])}" for r in CHANNELS if r in by_role]
    raw = sorted((v for v, r in mapping.items() if r not in CHANNELS), key=lambda v: (len(v), v))
    ignored = [label(c.id) for c in (acq.channels if acq is not None else ()) if c.id not in mapping]
    return (", ".join(parts) + (f"; unassigned: {', '.join(label(v) for v in raw)}" if raw else "")
            + (f"; ignored: {', '.join(ignored)}" if ignored else "")
            + (f"; source: {_SOURCE_TEXT.get(source, source)}" if source else ""))
