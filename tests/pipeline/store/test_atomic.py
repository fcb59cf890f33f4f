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


def test_atomic_path_renames_on_success_and_removes_on_any_failure(tmp_path):
    from pipeline.store.atomic import atomic_path

    target = tmp_path / "t" / "table.parquet"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target and not target.exists()
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C mid-write: the old file stays, no temporary
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"new" and [p.name for p in target.parent.iterdir()] == ["table.parquet"]
