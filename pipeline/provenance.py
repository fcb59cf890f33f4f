"""Fingerprints of the code that produced a result, for cache keys ("inputs + task source").

A stage's cache key combines a fingerprint of its inputs with :func:`code_fingerprint` of the
modules that compute it, so editing the code of a stage redoes its work on the next run while
unrelated edits do not.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from functools import cache

__all__ = ["code_fingerprint"]


@cache
def code_fingerprint(*modules: str) -> str:
    """SHA-256 over the source text of the named modules (e.g. ``'pipeline.ingest'``).

    Raises
    ------
    ModuleNotFoundError
        If a module cannot be imported.
    """
    h = hashlib.sha256()
    for name in sorted(modules):
        h.update(name.encode() + b"\0" + inspect.getsource(importlib.import_module(name)).encode())
    return h.hexdigest()
