"""Progress display for long stages: one bar with an ETA on a terminal, plain lines when forced,
silent elsewhere.

Every verb that can run over a minute (ingest, profile, train, evaluate, finetune) reports
through :class:`StepProgress`, so all of them look alike and ``--quiet`` hides all of them:

* on a terminal (stderr is a TTY): a transient rich bar ``description ━━━━ 3/10 0:00:42``;
* with ``CMCL_PROGRESS=1`` and no terminal (logs, CI, tests): one line per step, at most one
  every few seconds, ``description: 3/10 (label), ETA 42 s``;
* with ``CMCL_PROGRESS=0`` (the CLI's ``-q``/``--quiet`` sets it) or no terminal: nothing.

Usage, from any flow (or a pipeline function that takes a callback)::

    bar = StepProgress("profiles", total=len(plates))
    for plate in plates:
        ...
        bar.advance(label=plate)
    bar.close()

:func:`step_progress` is the same as a plain callable; :func:`stage_callback` adapts it to
the ``progress(stage, done, total)`` callbacks of :mod:`pipeline.ingest.run`, :func:`count_callback`
to ``progress(done, total, info)`` (training loops: :func:`cmcl_model.train.loop.train`; a
fine-tuning loop can take the same).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

__all__ = ["StepProgress", "step_progress", "stage_callback", "count_callback", "progress_enabled", "progress_mode"]

#: Seconds between two plain progress lines (the last step is always printed).
LINE_INTERVAL_S = 5.0


def progress_mode() -> str:
    """``'bar'`` on a terminal, ``'lines'`` when ``CMCL_PROGRESS=1`` without one, else ``'off'``
    (``CMCL_PROGRESS=0`` always wins: the CLI's ``--quiet``)."""
    flag = os.environ.get("CMCL_PROGRESS")
    if flag == "0":
        return "off"
    if sys.stderr.isatty():
        return "bar"
    return "lines" if flag == "1" else "off"


def progress_enabled() -> bool:
    """Progress is shown on a terminal unless ``CMCL_PROGRESS=0``, or anywhere with ``CMCL_PROGRESS=1``."""
    return progress_mode() != "off"


def _eta(seconds: float) -> str:
    s = int(round(seconds))
    if s < 120:
        return f"{s} s"
    return f"{s // 60} min {s % 60:02d} s" if s < 7200 else f"{s // 3600} h {s % 3600 // 60:02d} min"


class StepProgress:
    """One progress display over ``total`` steps with an ETA (see the module docstring).

    Parameters
    ----------
    description : str
        What is progressing (``'profiles'``, ``'T1: segment'``).
    total : int
        Number of steps; :meth:`update` may change it.
    mode : {'bar', 'lines', 'off'}, optional
        Default: :func:`progress_mode`.
    """

    def __init__(self, description: str, total: int, *, mode: str | None = None) -> None:
        self.description = description
        self.total = max(int(total), 1)
        self.done = 0
        self.mode = mode or progress_mode()
        self._first: tuple[float, int] | None = None  # (time, steps done) at the first update
        self._last_line = -float("inf")
        self._bar = None
        self._task = None

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[label]}"), TimeRemainingColumn(),
                             console=Console(stderr=True), transient=True)
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=self.total, completed=self.done, label="")

    def eta_seconds(self) -> float | None:
        """Seconds left at the pace since the first update (which may include start-up costs such
        as worker processes starting); None until a second update."""
        if self._first is None or self.done <= self._first[1]:
            return None
        t1, d1 = self._first
        return (time.monotonic() - t1) / (self.done - d1) * max(self.total - self.done, 0)

    def update(self, done: int, *, total: int | None = None, label: str = "") -> None:
        """Set the number of finished steps (and optionally the total); closes itself at the end."""
        if self.mode == "off":
            return
        if total is not None:
            self.total = max(int(total), 1)
        self.done = min(int(done), self.total)
        if self._first is None:
            self._first = (time.monotonic(), self.done)
        if self.mode == "bar":
            if self._bar is None:
                self._start_bar()
            self._bar.update(self._task, completed=self.done, total=self.total, label=label)
        else:
            now = time.monotonic()
            if now - self._last_line >= LINE_INTERVAL_S or self.done >= self.total:
                self._last_line = now
                eta = self.eta_seconds()
                what = f" ({label})" if label else ""
                tail = ", done" if self.done >= self.total else f", ETA {_eta(eta)}" if eta is not None else ""
                # written, not print()ed: a flow's log_prints would turn a print into a Prefect log record
                sys.stderr.write(f"{self.description}: {self.done}/{self.total}{what}{tail}\n")
                sys.stderr.flush()
        if self.done >= self.total:
            self.close()

    def advance(self, steps: int = 1, *, label: str = "") -> None:
        """One (or ``steps``) more step(s) finished."""
        self.update(self.done + steps, label=label)

    def close(self) -> None:
        """Remove the bar (idempotent)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> "StepProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def step_progress(description: str, total: int) -> Callable[[str], None]:
    """A ``tick(label)`` callable advancing a :class:`StepProgress` by one step (a no-op when off)."""
    bar = StepProgress(description, total)
    return lambda label="": bar.advance(label=label)


def stage_callback(description: str) -> Callable[[str, int, int], None] | None:
    """A ``progress(stage, done, total)`` callback (``done`` counted from 0, as
    :mod:`pipeline.ingest.run` reports it) drawing one :class:`StepProgress`, or None when off."""
    if not progress_enabled():
        return None
    bar = StepProgress(description, 1)

    def update(stage: str, done: int, total: int) -> None:
        bar.update(done + 1, total=total, label=stage)

    return update


def count_callback(description: str) -> Callable[[int, int, str], None] | None:
    """A ``progress(done, total, info)`` callback (``done`` steps finished of ``total``) drawing
    one :class:`StepProgress`, or None when off. For loops that know their step count, such as
    :func:`cmcl_model.train.loop.train`."""
    if not progress_enabled():
        return None
    bar = StepProgress(description, 1)

    def update(done: int, total: int, info: str = "") -> None:
        bar.update(done, total=total, label=info)

    return update
