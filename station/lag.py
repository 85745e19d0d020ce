"""How late the event loop runs: every button, redraw and phone event waits behind whatever
holds it. Sampled all the time (a timer that should fire every ``INTERVAL_S``), said in the log
when the station stops, and a stall worth knowing about said when it happens.

The samples are counted in buckets 2% wide, not kept one by one: a station runs for months at
20 samples a second, and a list of them grew its memory all the while (bench.soak). The
percentiles are then within 2% (the maximum exact) and cover the whole run."""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)

INTERVAL_S = 0.05
STALL_S = 1.0  # one late wake-up this long is a log line of its own
GROWTH = 1.02  # each bucket's upper edge is 2% above its lower one
FLOOR_S = 1e-4  # lags under 0.1 ms share the first bucket


class LagMonitor:
    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()  # bucket -> samples in it (a few hundred at most)
        self.samples = 0
        self.worst = 0.0
        # Called with each sample, on the loop (the web's /metrics keeps a histogram of them).
        self.observers: list[Callable[[float], None]] = []

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(INTERVAL_S)
            late = max(0.0, time.perf_counter() - started - INTERVAL_S)
            self.add(late)
            if late >= STALL_S:
                log.warning("the event loop was held up for %.1f s", late)

    def add(self, late: float) -> None:
        self.buckets[_bucket(late)] += 1
        self.samples += 1
        self.worst = max(self.worst, late)
        for observe in self.observers:
            observe(late)

    def summary(self) -> str:
        if not self.samples:
            return "event loop lag: no samples"
        ordered = sorted(self.buckets.items())

        def at(share: float) -> float:
            rank, seen = min(self.samples - 1, int(share * self.samples)), 0
            for bucket, count in ordered:
                seen += count
                if seen > rank:
                    return min(_upper(bucket), self.worst) * 1000
            return self.worst * 1000
        return (f"event loop lag: p50 {at(0.50):.1f} ms, p99 {at(0.99):.1f} ms, "
                f"max {self.worst * 1000:.1f} ms over {self.samples} samples")


def _bucket(late: float) -> int:
    return 0 if late < FLOOR_S else 1 + int(math.log(late / FLOOR_S, GROWTH))


def _upper(bucket: int) -> float:
    """The bucket's upper edge: a percentile is never said lower than it was."""
    return FLOOR_S * GROWTH ** bucket
