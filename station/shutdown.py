"""Stopping without cutting a restore in half: the first SIGTERM drains, a second one stops.

On the first signal no new restore starts and the running ones go on to their end (a
phone cut off mid-flash is left in recovery and has to be restored again), for at most
``[station] stop_grace_s``; then, or at a second signal, the station stops and what was
still running is recorded as interrupted. Under systemd the drain outlasts
``TimeoutStopSec`` only while the loop keeps asking for more time (station.systemd), so a
station that hangs while draining is still killed (station/system/station.service).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from station.core import Station

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often the drain looks whether the last restore has ended


class GracefulStop:
    def __init__(self, station: Station, stop: asyncio.Event, grace_s: float,
                 on_draining: Callable[[], None] = lambda: None) -> None:
        self.station = station
        self.stop = stop
        self.grace_s = grace_s
        self.on_draining = on_draining
        self._drain: asyncio.Task[None] | None = None

    def signal(self) -> None:
        """SIGTERM or SIGINT, on the event loop."""
        running = self.station.restores_running
        if self._drain is not None or running == 0:
            if self._drain is not None:
                log.warning("stopping now: restores still running are recorded as interrupted")
            self.stop.set()
            return
        log.warning("stopping: %d restore(s) finish first (up to %.0f s); no new one starts; "
                    "signal again to stop now", running, self.grace_s)
        self.station.begin_stopping()
        self.on_draining()
        self._drain = asyncio.create_task(self._wait(), name="drain")

    def cancel(self) -> None:
        if self._drain is not None:
            self._drain.cancel()

    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_s
        while self.station.restores_running and loop.time() < deadline:
            await asyncio.sleep(POLL_S)
        if self.station.restores_running:
            log.warning("stopping: %.0f s passed with restores still running", self.grace_s)
        self.stop.set()
