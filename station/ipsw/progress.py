"""A one-line progress bar on a terminal; silent when stderr is a file or a pipe (logs, tests)."""
from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class ProgressBar:
    def __init__(self, label: str, stream: TextIO | None = None, interval_s: float = 0.25) -> None:
        self._label, self._stream, self._interval = label, stream or sys.stderr, interval_s
        self._enabled = self._stream.isatty()
        self._started = self._shown = time.monotonic()
        self._drawn = False

    def __call__(self, done: int, total: int | None = None) -> None:
        now = time.monotonic()
        if not self._enabled or now - self._shown < self._interval:
            return
        self._shown = now
        rate = done / max(now - self._started, 1e-6)
        if total:
            filled = int(WIDTH * min(done / total, 1.0))
            bar = f"[{'#' * filled}{'-' * (WIDTH - filled)}] {done * 100 // total:3d}% {gb(done)}/{gb(total)}"
        else:
            bar = gb(done)
        self._stream.write(f"\r{self._label} {bar} {rate / 1e6:.0f} MB/s ")
        self._stream.flush()
        self._drawn = True

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()


def gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"
