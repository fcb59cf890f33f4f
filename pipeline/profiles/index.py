"""Which files ``cmcl import-profiles`` has imported into a store (``tables/profiles/imports.json``).

An import is keyed by the file's bytes and the import's settings (compound map, column map,
name table, code), so importing the same files again adds nothing, and a file imported again
with other bytes or settings replaces its earlier import instead of adding beside it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pipeline.store.atomic import write_text_atomic

__all__ = ["load_index", "save_index", "import_id", "find_import", "superseded"]


def load_index(path: Path) -> dict[str, dict[str, Any]]:
    """``{import_id: entry}`` (empty when nothing was imported)."""
    return json.loads(path.read_text()) if path.is_file() else {}


def save_index(path: Path, index: dict[str, dict[str, Any]]) -> None:
    """Write the index atomically."""
    write_text_atomic(json.dumps(index, indent=1, sort_keys=True, default=str), path)


def import_id(file_name: str, content: str, settings: str) -> str:
    """``<file stem>-<12 hex digits>``: readable, and unique per (bytes, settings)."""
    import hashlib

    stem = re.sub(r"(\.(csv|tsv|txt|parquet|pq))?(\.gz)?$", "", file_name, flags=re.IGNORECASE)
    stem = re.sub(r"[^0-9A-Za-z_.-]+", "_", stem).strip("._") or "profiles"
    return f"{stem}-{hashlib.sha256((content + settings).encode()).hexdigest()[:12]}"


def find_import(index: dict[str, dict[str, Any]], content: str, settings: str) -> str | None:
    """The import of these bytes with these settings, if any."""
    return next((k for k, e in index.items() if e.get("content") == content and e.get("settings") == settings), None)


def superseded(index: dict[str, dict[str, Any]], file_name: str, content: str) -> list[str]:
    """Earlier imports a new import of ``file_name`` with ``content`` replaces: same file name or
    same bytes (under another name)."""
    return sorted(k for k, e in index.items() if e.get("file") == file_name or e.get("content") == content)
