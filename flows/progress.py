"""Progress display for long stages: a rich progress bar on a terminal, silent elsewhere."""

from __future__ import annotations

import os
import sys
from typing import Callable

__all__ = ["stage_callback", "progress_enabled"]


def progress_enabled() -> bool:
    """Bars are shown on a terminal unless ``CMCL_PROGRESS=0`` (the CLI's ``--quiet`` sets it)."""
    flag = os.environ.get("CMCL_PROGRESS")
    return flag != "0" and (flag == "1" or sys.stderr.isatty())


def stage_callback(description: str) -> Callable[[str, int, int], None] | None:
    """A ``progress(stage, done, total)`` callback drawing one rich bar, or None when disabled."""
    if not progress_enabled():
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   transient=True)
    state: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if "id" not in state:
            bar.start()
            state["id"] = bar.add_task(description, total=total)
        bar.update(state["id"], completed=done + 1, total=total)
        if done + 1 >= total:
            bar.stop()

    return update
