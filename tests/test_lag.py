"""The event loop's lag, as the station logs it when it stops (station.lag)."""
from __future__ import annotations

import asyncio
import logging
import re
import time
import tracemalloc

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


async def test_what_the_monitor_keeps_does_not_grow_with_the_samples(monkeypatch):
    # A station runs for months at 20 samples a second: one float per sample grew its memory
    # all through bench.soak (~0.4 MB in 10 minutes).
    monkeypatch.setattr(lag, "INTERVAL_S", 0.0)  # a sample each time the loop comes round
    monitor = lag.LagMonitor()
    task = asyncio.create_task(monitor.run())
    tracemalloc.start()
    try:
        for _ in range(2_000):
            await asyncio.sleep(0)
        before = tracemalloc.take_snapshot()
        for _ in range(20_000):
            await asyncio.sleep(0)
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename")
                    if s.traceback[0].filename == lag.__file__)
    finally:
        tracemalloc.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert grown < 16_000, f"{grown} bytes more after 20,000 more samples"
    assert int(re.findall(r"over (\d+) samples", monitor.summary())[0]) >= 22_000 - 2
