"""Atomic file writes: a temporary file in the target's folder, then one rename.

A reader sees the old file or the new one, never half of one; a failed write (an exception,
Ctrl-C) removes its temporary file. Every cmcl module that replaces a small text file (reports,
run configs, import indexes, benchmark records) writes through :func:`write_text_atomic`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_text_atomic"]


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its folder; returns the path.

    Raises
    ------
    OSError
        If the folder cannot be created or written; no temporary file is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
