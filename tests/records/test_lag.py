"""The event loop stays responsive while the recorder writes a burst."""
from __future__ import annotations

import asyncio
import statistics
import time

from station.records import db
from station.records.recorder import Recorder

from . import helpers
from .helpers import Phone

TICK = 0.002


async def probe(lags: list[float], stop: asyncio.Event) -> None:
    """How late a timer fires: what every other task on the loop would feel."""
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(TICK)
        lags.append(time.perf_counter() - start - TICK)


async def burst(recorder: Recorder, sessions: int) -> None:
    phones = [Phone(recorder, slot) for slot in range(1, 17)]
    histories = [helpers.clean_restore, helpers.failed_then_retried, helpers.locked]
    for n in range(sessions):
        histories[n % 3](phones[n % 16], n)
        await asyncio.sleep(0)  # the station's loop runs one port's step at a time


async def run(recorder: Recorder, sessions: int) -> list[float]:
    lags: list[float] = []
    stop = asyncio.Event()
    task = asyncio.create_task(probe(lags, stop))
    await burst(recorder, sessions)
    assert await asyncio.to_thread(recorder.flush, 30)  # keep probing until the writer caught up
    stop.set()
    await task
    return lags


def test_loop_lag_while_writing(station):
    with Recorder(station) as recorder:
        lags = asyncio.run(run(recorder, 1500))
    conn = db.open_existing(station.state_dir)
    assert conn.execute("SELECT count(*) FROM sessions WHERE seq IS NOT NULL").fetchone()[0] == 1500
    conn.close()
    p99 = statistics.quantiles(lags, n=100)[98]
    assert p99 < 0.010, f"p99 loop lag {p99 * 1000:.1f} ms over {len(lags)} ticks"
