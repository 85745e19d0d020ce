"""Station time. A simulated run plays its scenario faster than real time."""
from __future__ import annotations

import asyncio
import time


class Clock:
    """Seconds since start on the station's timeline; ``speed`` > 1 makes it run fast."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._start) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)

    async def sleep_until(self, moment: float) -> None:
        await self.sleep(moment - self.now())
