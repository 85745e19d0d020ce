"""The event loop's lag, as the station logs it when it stops (station.lag)."""
from __future__ import annotations

import asyncio
import logging
import re
import time

from station import lag


async def test_a_held_loop_shows_in_the_lag_and_in_the_log(monkeypatch, caplog):
    monkeypatch.setattr(lag, "STALL_S", 0.15)
    monitor = lag.LagMonitor()
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.3)
    time.sleep(0.2)  # what a synchronous call on the loop does to every port
    await asyncio.sleep(0.2)
    task.cancel()
    with caplog.at_level(logging.WARNING):
        await asyncio.gather(task, return_exceptions=True)
    p50, p99, most = map(float, re.findall(r"([\d.]+) ms", monitor.summary()))
    assert most >= 150 and p50 < 50, monitor.summary()
    assert "the event loop was held up for 0.2 s" in caplog.text
