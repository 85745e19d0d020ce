"""Per-port statistics from the records: which hub port fails or retries more than the others.

A bad cable or a worn hub port shows as restores on one slot that fail, or need
another attempt, far more often than on the rest of the hub; a problem of the
whole station (no network, no IPSW) hits every port alike and flags none.

Read from the sessions of the last ``WINDOW_DAYS`` (by ``restore_started_at``):
a session's ``attempts`` counts its restores, so ``attempts - 1`` went wrong
and were tried again, and a session whose result is ``failed`` lost its last
attempt too. A port is flagged when, over at least ``MIN_ATTEMPTS`` attempts,
``MIN_TROUBLES`` or more went wrong, at least ``FLAG_RATE`` of them, and at
least ``FLAG_FACTOR`` times the rate of the other ports together.

Nothing here writes: the station reads the database (read-only) in a thread
after each write of its records, and the counters screen shows the result.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from station.records import db
from station.records.counters import day_bounds
from station.snapshot import PortFlag

WINDOW_DAYS = 7
MIN_ATTEMPTS = 3
MIN_TROUBLES = 2
FLAG_RATE = 0.25
FLAG_FACTOR = 2.0


@dataclass(frozen=True)
class SlotStats:
    slot: int
    restores: int = 0  # sessions with at least one restore
    attempts: int = 0
    retries: int = 0  # attempts after a session's first
    failed: int = 0  # sessions that ended failed

    @property
    def troubles(self) -> int:
        """Attempts that went wrong: each retry followed one, and a failed session's last one."""
        return self.retries + self.failed

    @property
    def rate(self) -> float:
        return self.troubles / self.attempts if self.attempts else 0.0


@dataclass(frozen=True)
class PortStats:
    slots: tuple[SlotStats, ...] = ()
    retried_today: int = 0  # sessions of today (local day) that needed more than one attempt
    flags: tuple[PortFlag, ...] = ()  # worst first


def read(conn: sqlite3.Connection, now: float, days: int = WINDOW_DAYS) -> PortStats:
    since = db.iso(now - days * 86400)
    start, end = day_bounds(datetime.fromtimestamp(now).date())
    slots = tuple(SlotStats(slot, restores, attempts, retries, failed) for slot, restores, attempts, retries, failed
                  in conn.execute(
                      "SELECT slot, count(*), sum(attempts), sum(attempts - 1),"
                      " sum(CASE WHEN result = 'failed' THEN 1 ELSE 0 END)"
                      " FROM sessions WHERE attempts > 0 AND restore_started_at >= ?"
                      " GROUP BY slot ORDER BY slot", (since,)))
    (retried,) = conn.execute("SELECT count(*) FROM sessions WHERE attempts > 1 AND restore_started_at >= ?"
                              " AND restore_started_at < ?", (start, end)).fetchone()
    return PortStats(slots, retried, flagged(slots))


def flagged(slots: tuple[SlotStats, ...]) -> tuple[PortFlag, ...]:
    """The ports to look at, worst first (see the module's docstring for the rule)."""
    total_troubles = sum(s.troubles for s in slots)
    total_attempts = sum(s.attempts for s in slots)
    flags = []
    for stats in slots:
        if stats.attempts < MIN_ATTEMPTS or stats.troubles < MIN_TROUBLES or stats.rate < FLAG_RATE:
            continue
        others_attempts = total_attempts - stats.attempts
        others_rate = (total_troubles - stats.troubles) / others_attempts if others_attempts else 0.0
        if stats.rate >= FLAG_FACTOR * others_rate:
            flags.append(stats)
    flags.sort(key=lambda s: (-s.rate, -s.troubles, s.slot))
    return tuple(PortFlag(s.slot, s.troubles, s.attempts) for s in flags)


def load(state_dir: Path, now: float) -> PortStats | None:
    """The statistics of the records in ``state_dir``; None when they cannot be read now
    (no records yet, a locked or broken file: the records' own fault says why)."""
    try:
        conn = db.open_existing(state_dir)
    except Exception:  # noqa: BLE001 - RecordsUnavailable, sqlite3.Error: nothing to show, nothing to add
        return None
    try:
        return read(conn, now)
    except sqlite3.Error:
        return None
    finally:
        conn.close()

