"""pipeline.store.atomic: one rename per write, nothing left behind on failure."""

from __future__ import annotations

import pytest

from pipeline.store.atomic import write_text_atomic


def test_write_replaces_whole_file_and_creates_folder(tmp_path):
    target = tmp_path / "a" / "b" / "metrics.json"
    assert write_text_atomic("first", target) == target
    write_text_atomic("second, longer text ✓", target)
    assert target.read_text(encoding="utf-8") == "second, longer text ✓"
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "config.json"
    write_text_atomic("old", target)
    with pytest.raises(TypeError):
        write_text_atomic(b"not text", target)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
