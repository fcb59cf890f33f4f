"""IngestSettings: every choice declared once (a Literal and its tuple), every field checked."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from pipeline.features.choices import FEATURE_SETS
from pipeline.images.choices import ILLUMINATION_METHODS
from pipeline.images.qc import CYTO_CHANNELS
from pipeline.images.choices import SEGMENTERS
from pipeline.ingest import settings as s
from pipeline.plates.discovery import LAYOUTS


def _choices(field: str) -> tuple[str, ...]:
    """The values the annotation of ``IngestSettings.<field>`` allows (a Literal, or a Union of them)."""
    hint = typing.get_type_hints(s.IngestSettings)[field]
    out: list[str] = []
    for part in typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,):
        out += typing.get_args(part)
    return tuple(out)


@pytest.mark.parametrize("field, declared", [
    ("layout", ("auto", *LAYOUTS)), ("illumination_method", ILLUMINATION_METHODS), ("cyto_channel", CYTO_CHANNELS),
    ("border", s.BORDERS), ("segmenter", tuple(SEGMENTERS)), ("features", (*FEATURE_SETS, "none")),
])
def test_each_choice_is_declared_once_and_the_annotation_says_it(field, declared):
    assert _choices(field) == declared
    for value in declared:  # every declared choice is accepted ...
        if field == "segmenter" and value == "cellpose":
            continue  # (needs a weights file)
        assert getattr(s.IngestSettings(**{field: value}), field) == value
    with pytest.raises(ValueError, match=f"{field} 'nope' is not one of {', '.join(map(repr, declared))}"):
        s.IngestSettings(**{field: "nope"})  # ... and the error lists them all


@pytest.mark.parametrize("field, value, message", [
    ("crops_chunk", 0, "crops_chunk must be >= 1; got 0"),
    ("crops_shard", 24, "crops_shard (24) must be a positive multiple of crops_chunk (16)"),
    ("field_tile_size", 4, "field_tile_size must be >= 8; got 4"),
    ("cellpose_diameter", 0, "cellpose_diameter must be > 0; got 0"),
    ("illumination_max_fields", True, "illumination_max_fields must be an integer; got True"),
    ("allow_outside", "yes", "allow_outside must be True or False; got 'yes'"),
])
def test_bad_values_fail_once_naming_the_field(field, value, message):
    with pytest.raises(ValueError) as info:
        s.IngestSettings(**{field: value})
    assert str(info.value) == message


def test_cellpose_needs_a_local_weights_file(tmp_path):
    with pytest.raises(ValueError, match="needs cellpose_model"):
        s.IngestSettings(segmenter="cellpose")
    with pytest.raises(FileNotFoundError, match="cyto3"):
        s.IngestSettings(segmenter="cellpose", cellpose_model=str(tmp_path / "absent.pt"))


def test_key_is_canonical_and_covers_every_field():
    a, b = s.IngestSettings(crop_size=32), s.IngestSettings(crop_size=32)
    assert a.key() == b.key() != s.IngestSettings().key()
    assert all(f'"{f.name}"' in a.key() for f in dataclasses.fields(s.IngestSettings))
