"""Today's restored / failed / locked counts, kept in memory for the display.

The event loop asks for them on every snapshot, so ``counters()`` only compares
the local date with the one it counted for and returns a ready ``Counters``;
the day rolls over at local midnight. At start-up the counts are read back from
the database, so a restart keeps them. What counts as what is written down in
``station.records.sessions``: one session counts once, under the final state
the port is in (a manual retry takes it out again until it finishes anew).
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime, timedelta

from station.machine import Port, State
from station.records import db
from station.records.sessions import RESULTS
from station.snapshot import Counters

CATEGORY = {"done": "restored", "failed": "failed", "locked": "locked", "refused": "locked"}


def local_day(moment: float) -> date:
    return datetime.fromtimestamp(moment).date()


def day_bounds(day: date) -> tuple[str, str]:
    """Local midnight of ``day`` and of the next day, as stored time text."""
    start = datetime.combine(day, datetime.min.time())
    return db.iso(start.timestamp()), db.iso((start + timedelta(days=1)).timestamp())


class DayCounters:
    def __init__(self, now: Callable[[], float], initial: Counters) -> None:
        self._now = now
        self._day = local_day(now())
        self._counts = initial
        self._sessions: set[int] = set()  # slots with an identified phone
        self._counted: dict[int, tuple[str, date]] = {}  # slot -> what its session counts as, and when

    @classmethod
    def from_db(cls, conn: sqlite3.Connection, now: Callable[[], float]) -> DayCounters:
        start, end = day_bounds(local_day(now()))
        counts = Counters()
        for result, number in conn.execute("SELECT result, count(*) FROM sessions WHERE result_at >= ? "
                                           "AND result_at < ? GROUP BY result", (start, end)):
            if result in CATEGORY:
                field = CATEGORY[result]
                counts = replace(counts, **{field: getattr(counts, field) + number})
        return cls(now, counts)

    def add(self, counts: Counters) -> None:
        """Counts read from the database after this counter began (records that opened late)."""
        for field in ("restored", "failed", "locked"):
            self._add(field, getattr(counts, field))

    def counters(self) -> Counters:
        self._roll()
        return self._counts

    def observe(self, old: Port, new: Port, at: float) -> None:
        """Follow one transition of a port reported at ``at`` (the session records' rules)."""
        slot = new.slot
        if new.state is old.state:
            return
        if new.state is State.IDENTIFIED:
            self._counted.pop(slot, None)
            self._sessions.add(slot)
        elif new.state is State.EMPTY:
            self._counted.pop(slot, None)  # the session ends; its count stays
            self._sessions.discard(slot)
        elif slot not in self._sessions:
            return  # failed before identification: no session, not counted
        elif new.state in RESULTS:
            self._settle(slot, CATEGORY[RESULTS[new.state]], local_day(at))
        elif old.state in RESULTS:  # a manual retry: not finished any more
            self._settle(slot, None, local_day(at))

    def _settle(self, slot: int, category: str | None, day: date) -> None:
        self._roll()
        previous = self._counted.pop(slot, None)
        if previous is not None and previous[1] == self._day:
            self._add(previous[0], -1)
        if category is not None and day == self._day:
            self._counted[slot] = (category, day)
            self._add(category, 1)

    def _add(self, field: str, delta: int) -> None:
        self._counts = replace(self._counts, **{field: getattr(self._counts, field) + delta})

    def _roll(self) -> None:
        today = local_day(self._now())
        if today != self._day:
            self._day, self._counts = today, Counters()
