"""The worker's end of the report pipe: writes protocol lines, keeps percent sane and the pipe quiet."""
from __future__ import annotations

import os
import time
from collections.abc import Callable

from hw.worker.messages import Done, Failed, Kind, Message, Phase, Status, Trust, encode

MIN_INTERVAL = 0.25  # s between two percent lines of one phase: the display redraws slower than that


class Reporter:
    """Writes to ``fd`` (blocking, whole lines). Percent only grows within a phase; repeats are dropped."""

    def __init__(self, fd: int, min_interval: float = MIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fd = fd
        self._min_interval = min_interval
        self._clock = clock
        self._phase = ""
        self._percent = 0.0
        self._sent_at = 0.0

    @property
    def current_phase(self) -> str:
        return self._phase

    def phase(self, phase: str, percent: float = 0.0) -> None:
        percent = min(100.0, max(0.0, percent))
        now = self._clock()
        if phase != self._phase:
            self._phase, self._percent, self._sent_at = phase, percent, now
            self.send(Phase(phase, percent))
            return
        if percent <= self._percent:
            return
        if percent < 100.0 and now - self._sent_at < self._min_interval:
            return
        self._percent, self._sent_at = percent, now
        self.send(Phase(phase, percent))

    def status(self, text: str, code: int | None = None) -> None:
        self.send(Status(text, code))

    def trust(self, reason: str = Trust.reason) -> None:
        self.send(Trust(reason))

    def done(self) -> None:
        self.send(Done())

    def failed(self, reason: str, kind: Kind, retryable: bool) -> None:
        self.send(Failed(reason, kind, retryable))

    def send(self, message: Message) -> None:
        data = memoryview(encode(message))
        while data:
            data = data[os.write(self._fd, data):]
