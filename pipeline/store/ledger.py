"""The store's ingestion ledger: which plate was ingested from what, and whether it completed.

The ledger (``tables/ledger.parquet``) is the single source of truth for "this plate is complete":
outputs of a plate whose ledger row is not ``complete`` with the current fingerprint are redone.
Updates rewrite the table atomically under a store-wide lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pandas as pd

from pipeline.store.schema import write_table
from pipeline.store.paths import Store

__all__ = ["read_ledger", "ledger_entry", "update_ledger", "file_lock", "LockTimeout"]


class LockTimeout(RuntimeError):
    """Another process holds the lock for longer than the caller wanted to wait."""


@contextmanager
def file_lock(path: Path, *, timeout: float | None = None, poll: float = 0.2) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block.

    ``timeout=None`` waits forever; ``0`` fails at once. Raises :class:`LockTimeout` naming the
    lock file. The lock dies with its process, so a killed run never leaves a stale lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if timeout is not None and time.monotonic() - start >= timeout:
                    raise LockTimeout(f"{path} is held by another cmcl process") from None
                time.sleep(poll)
        yield
    finally:
        os.close(fd)


def read_ledger(store: Store) -> pd.DataFrame:
    """All ledger rows (empty frame with the declared columns if none)."""
    return store.read("ledger")


def ledger_entry(store: Store, plate: str) -> dict | None:
    """The ledger row of ``plate`` as a dict, or None."""
    led = read_ledger(store)
    rows = led[led["Metadata_Plate"] == plate]
    return None if rows.empty else rows.iloc[-1].to_dict()


def update_ledger(store: Store, entry: dict) -> None:
    """Insert or replace the row of ``entry['Metadata_Plate']`` (atomic, store-wide lock)."""
    entry = {**entry, "UpdatedAt": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with file_lock(store.lock_path("ledger")):
        led = read_ledger(store)
        led = led[led["Metadata_Plate"] != entry["Metadata_Plate"]]
        led = pd.concat([led, pd.DataFrame([entry])], ignore_index=True) if len(led) else pd.DataFrame([entry])
        write_table(led.sort_values("Metadata_Plate", ignore_index=True), "ledger", store.table_path("ledger"))
