"""RDKit's log: silence it while a block runs and turn what it reported into a reason.

RDKit prints parse and valence errors to stderr; cmcl's per-molecule functions capture them
instead and return or raise them as one-line reasons (``Error`` columns, exception messages).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from rdkit import rdBase

__all__ = ["quiet_rdkit", "last_message"]

_LOG_STAMP = re.compile(r"^\[\d\d:\d\d:\d\d\]\s*")


@contextlib.contextmanager
def quiet_rdkit() -> Iterator[rdBase.CaptureErrorLog]:
    """Silence RDKit's log while the block runs, capturing its error messages.

    Yields the ``rdBase.CaptureErrorLog`` whose ``messages`` hold what RDKit reported, so
    callers can turn a failure into a reason instead of printing it.
    """
    with rdBase.BlockLogs(), rdBase.CaptureErrorLog() as capture:
        yield capture


def last_message(capture: rdBase.CaptureErrorLog) -> str | None:
    """The last non-blank line RDKit reported into ``capture``, without its time stamp; None
    when it reported nothing."""
    lines = [_LOG_STAMP.sub("", ln).strip() for ln in capture.messages.splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else None
