"""Atomic file writes: a temporary file in the target's folder, then one rename.

A reader sees the old file or the new one, never half of one; a failed write (an exception,
Ctrl-C) removes its temporary file. Every cmcl module that replaces a file writes through
:func:`atomic_path` (Parquet tables: :func:`pipeline.store.schema.write_table`) or, for a small
text file (reports, run configs, import indexes, benchmark records), :func:`write_text_atomic`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_text_atomic"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (its folder created) to write; on leaving the block
    it replaces ``path`` in one rename, or, if the block raised, is removed.

    Examples
    --------
    >>> with atomic_path(out) as tmp:  # doctest: +SKIP
    ...     pq.write_table(table, tmp)

    Raises
    ------
    OSError
        If the folder cannot be created or written; no temporary file is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its folder; returns the path.

    Raises
    ------
    OSError
        If the folder cannot be created or written; no temporary file is left behind.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
