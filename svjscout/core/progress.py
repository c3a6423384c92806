"""Rich progress bars on stderr, switched off with ``SVJSCOUT_NO_PROGRESS=1`` (as in the tests)."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_enabled(default: bool = True) -> bool:
    """Whether progress bars are shown (off when ``SVJSCOUT_NO_PROGRESS`` is set)."""
    return default and not os.environ.get("SVJSCOUT_NO_PROGRESS")


def make_progress() -> Progress:
    """A rich :class:`~rich.progress.Progress` writing to stderr."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not progress_enabled(),
    )
