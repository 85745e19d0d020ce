"""Station time. A simulated run plays its scenario faster than real time."""
from __future__ import annotations

import asyncio
import time


class Clock:
    """Seconds since start on the station's timeline; ``speed`` > 1 makes it run fast.

    A simulated run's clock starts when the simulated bench is up, so that a
    scenario's second 0 is the moment phones can first be seen, however long
    the bench took to start.
    """

    def __init__(self, speed: float = 1.0, started: bool = True) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start = time.monotonic()
        self._started = asyncio.Event()
        if started:
            self._started.set()

    def start(self) -> None:
        self._start = time.monotonic()
        self._started.set()

    def now(self) -> float:
        if not self._started.is_set():
            return 0.0
        return (time.monotonic() - self._start) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)

    async def sleep_until(self, moment: float) -> None:
        await self._started.wait()
        await self.sleep(moment - self.now())
