"""Progress bars of long `station ipsw` work (add, verify, prune): rich's, with rate and time left.

Drawn only when stderr is a terminal; to a file or a pipe (a script, a log, a test) nothing is
written, and the command's own lines are all there is. The bar starts with the first progress,
so work that turns out to have nothing to do draws none, and it always ends on a line of its
own with the cursor shown again, whether the work finished, failed or was interrupted.
"""
from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TaskProgressColumn, TextColumn,
                           TimeRemainingColumn, TransferSpeedColumn)


class ProgressBar:
    """A ``Progress`` callback, ``bar(done, total)`` in bytes; a context manager that ends the bar."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        stream = stream or sys.stderr
        self._label = label
        self._progress: Progress | None = None
        if stream.isatty():
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(),
                console=Console(file=stream), auto_refresh=True, refresh_per_second=4)
        self._task: TaskID | None = None

    def __call__(self, done: int, total: int | None = None) -> None:
        if self._progress is None:
            return
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=total)
        self._progress.update(self._task, completed=done, total=total)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.stop()


def gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"
