"""Channel maps: which vendor channel holds which Cell Painting stain, as the user gives it
(``"DNA=1,ER=2"``, a TOML/YAML file) or as unassigned raw channels (``ch<N>``)."""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Literal

from pipeline.store.paths import CHANNELS

__all__ = ["DEFAULT_CHANNEL_MAP", "ChannelSource", "CHANNEL_SOURCES", "raw_channel", "plate_channels", "read_channel_map",
           "parse_channel_map"]

#: Default vendor channel number -> Cell Painting channel name.
DEFAULT_CHANNEL_MAP: dict[str, str] = {str(i + 1): name for i, name in enumerate(CHANNELS)}

#: Where a channel map may come from (:attr:`pipeline.plates.discovery.PlateListing.channel_source`):
#: the instrument's metadata, the user (``--channels``), the pixels (DNA only), or nowhere yet.
ChannelSource = Literal["metadata", "user", "pixels", "unresolved"]
CHANNEL_SOURCES: tuple[str, ...] = typing.get_args(ChannelSource)


def raw_channel(vendor_id: str) -> str:
    """The name of a channel no stain is assigned to: its vendor number, ``'5' -> 'ch5'``."""
    return f"ch{vendor_id}"


def plate_channels(names) -> tuple[str, ...]:
    """The plate's channels in store order: the Cell Painting stains in :data:`CHANNELS` order,
    then the unassigned ``ch<N>`` channels by number."""
    names = set(names)
    raw = sorted((n for n in names if n not in CHANNELS), key=lambda n: (len(n), n))
    return tuple(c for c in CHANNELS if c in names) + tuple(raw)


_MAP_SUFFIXES = (".toml", ".yaml", ".yml")


def read_channel_map(path: str | os.PathLike) -> dict[str, str]:
    """Read a channel map file into ``{name: vendor channel}`` (not yet validated).

    TOML (stdlib ``tomllib``) or YAML (only if PyYAML is installed), either flat
    (``DNA = 1``) or under a ``channels`` table (``[channels]`` / ``channels:``).

    Raises
    ------
    ValueError
        Naming the file when it cannot be parsed, has an unknown suffix, or is not a table of
        names to channel numbers.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _MAP_SUFFIXES:
        raise ValueError(f"{path}: channel map files must be {', '.join(_MAP_SUFFIXES)}; got {suffix or 'no suffix'}")
    if suffix == ".toml":
        import tomllib as parser

        load = parser.loads
    else:
        try:
            import yaml as parser
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); use TOML instead") from None
        load = parser.safe_load
    try:
        data = load(path.read_text())
    except Exception as exc:  # noqa: BLE001 - OSError, TOMLDecodeError, yaml.YAMLError: re-raised naming the file
        raise ValueError(f"{path}: cannot read channel map: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("channels"), dict):
        data = data["channels"]
    if not isinstance(data, dict) or not data or not all(
            isinstance(v, (int, str)) and not isinstance(v, bool) for v in data.values()):
        raise ValueError(f"{path}: a channel map is a table NAME = NUMBER (e.g. DNA = 1); got {data!r}")
    return {str(k): str(v) for k, v in data.items()}


def parse_channel_map(spec: str | os.PathLike | dict[str, str] | None) -> dict[str, str]:
    """Parse ``"DNA=1,ER=2,RNA=3,AGP=4,Mito=5"`` into ``{"1": "DNA", ...}``.

    A map may name any subset of the five channels that contains DNA (``"DNA=1"``,
    ``"DNA=1,RNA=2,AGP=3"``); vendor channels it does not name are ignored at ingestion.
    ``None`` gives the default (w1..w5 = DNA, ER, RNA, AGP, Mito). A dict is taken as
    ``{vendor channel: name}`` already. A path (a ``Path``, or a string ending in ``.toml``,
    ``.yaml`` or ``.yml``) is read with :func:`read_channel_map`.

    Raises
    ------
    ValueError
        On malformed entries, unknown channel names or repeated vendor numbers (naming the file
        when the map came from one).
    """
    if spec is None:
        return dict(DEFAULT_CHANNEL_MAP)
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and spec.strip().lower().endswith(_MAP_SUFFIXES)):
        source = Path(spec)
        try:
            return parse_channel_map(",".join(f"{k}={v}" for k, v in read_channel_map(source).items()))
        except ValueError as exc:
            raise ValueError(str(exc) if str(source) in str(exc) else f"{source}: {exc}") from None
    if isinstance(spec, dict):
        mapping = {str(k): v for k, v in spec.items()}
    else:
        mapping = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if "=" not in part:
                raise ValueError(f"channel map entry {part!r} is not NAME=NUMBER (e.g. DNA=1)")
            name, num = (s.strip() for s in part.split("=", 1))
            if num in mapping:
                raise ValueError(f"channel map: vendor channel {num} given twice ({mapping[num]}, {name})")
            mapping[num] = name
    unknown = sorted(set(mapping.values()) - set(CHANNELS))
    if unknown:
        raise ValueError(f"channel map names {unknown} are not Cell Painting channels {list(CHANNELS)}")
    if "DNA" not in mapping.values():
        raise ValueError(f"channel map must name the DNA channel (nuclei are found on it); got {spec!r}")
    repeated = sorted({n for n in mapping.values() if list(mapping.values()).count(n) > 1})
    if repeated:
        raise ValueError(f"channel map names {repeated} more than once; got {spec!r}")
    return mapping
