"""Progress of ``cmcl finetune``: one display over methods x seeds x epochs, with an ETA and the
running validation score (a rich bar on a terminal, plain lines elsewhere; none under ``-q``)."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from flows.progress import progress_enabled

__all__ = ["finetune_progress", "format_eta"]


def format_eta(seconds: float) -> str:
    """``'1 h 02 min'``, ``'4 min 05 s'`` or ``'12 s'``."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def _lines(description: str, stream: TextIO, every_s: float) -> Callable[[int, int, str], None]:
    t0 = time.monotonic()
    state = {"last": -float("inf")}

    def update(done: int, total: int, text: str) -> None:
        now = time.monotonic()
        if done < total and now - state["last"] < every_s:
            return
        state["last"] = now
        eta = (now - t0) / max(done, 1) * (total - done)
        stream.write(f"{description}: {done}/{total} epochs, ETA {format_eta(eta)} | {text}\n")
        stream.flush()

    return update


def _bar(description: str) -> Callable[[int, int, str], None]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
                   TimeRemainingColumn(), TextColumn("{task.fields[status]}"), transient=True)
    state: dict[str, int] = {}

    def update(done: int, total: int, text: str) -> None:
        if "id" not in state:
            bar.start()
            state["id"] = bar.add_task(description, total=total, status="")
        bar.update(state["id"], completed=done, total=total, status=text)
        if done >= total:
            bar.stop()

    return update


def finetune_progress(description: str, *, stream: TextIO | None = None,
                      every_s: float = 10.0) -> Callable[[int, int, str], None] | None:
    """A ``progress(done, total, text)`` callback for :func:`cmcl_model.finetune.run.run_methods`,
    or None when progress is off (``-q``, or not a terminal without ``CMCL_PROGRESS=1``).

    On a terminal: one rich bar (epochs done of all methods x seeds x epochs, time remaining,
    the current method, seed, epoch and validation score). Elsewhere: one line at the first
    update, then at most every ``every_s`` seconds, and at the end, each with an ETA.
    """
    if not progress_enabled():
        return None
    stream = stream or sys.stderr
    if stream.isatty():
        return _bar(description)
    return _lines(description, stream, every_s)
