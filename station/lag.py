"""How late the event loop runs: every button, redraw and phone event waits behind whatever
holds it. Sampled all the time (a timer that should fire every ``INTERVAL_S``), said in the log
when the station stops, and a stall worth knowing about said when it happens."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

log = logging.getLogger(__name__)

INTERVAL_S = 0.05
KEPT = 72_000  # about an hour of samples: enough for percentiles, bounded for a station that runs for months
STALL_S = 1.0  # one late wake-up this long is a log line of its own


class LagMonitor:
    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=KEPT)

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(INTERVAL_S)
            late = max(0.0, time.perf_counter() - started - INTERVAL_S)
            self.samples.append(late)
            if late >= STALL_S:
                log.warning("the event loop was held up for %.1f s", late)

    def summary(self) -> str:
        if not self.samples:
            return "event loop lag: no samples"
        ordered = sorted(self.samples)

        def at(share: float) -> float:
            return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000
        return (f"event loop lag: p50 {at(0.50):.1f} ms, p99 {at(0.99):.1f} ms, "
                f"max {ordered[-1] * 1000:.1f} ms over {len(ordered)} samples")
