"""The IPSW cache's upkeep while the station runs.

- The catalog is fetched again once a day when the station is online, for the models wanted
  and the models of the cached builds, so each build's signing status stays current; offline,
  the saved copy stands and the fetch is tried again an hour later.
- A model whose cached builds Apple no longer signs all shows ``NOT SIGNED <build>`` on the
  display's status line (and once in the log, with what to add) before any phone of it is
  plugged in; its phones are refused at the choice of their IPSW (``IpswCache.select``).
- With ``[ipsw] prefetch`` on, ``prefetch.run`` brings the newest signed builds in during
  quiet hours, or once no port has been busy for ``idle_minutes``, its progress on the
  status line.

One asyncio task (``run``) keeps the time; the work (HTTP, hashing, downloads) runs in a
thread. A download asks ``may_go_on`` at every chunk: the loop sets it each second from the
ports, so a phone plugged in outside quiet hours pauses it within about a second.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from station.ipsw import prefetch
from station.ipsw.cache import Entry, IpswCache
from station.ipsw.catalog import version_key
from station.ipsw.errors import IpswError

log = logging.getLogger(__name__)

CATALOG_MAX_AGE_S = 86400.0  # the signing status is a day old at most, when online
RETRY_S = 3600.0  # a failed catalog fetch or download is tried again after this long
CHECK_S = 300.0  # how often to look for work
WATCH_S = 1.0  # how often to look at the ports (and pause a download)


def _local_minute() -> int:
    now = time.localtime()
    return now.tm_hour * 60 + now.tm_min


class Upkeep:
    def __init__(self, cache: IpswCache, *, seen: Callable[[], tuple[str, ...]], busy: Callable[[], bool],
                 status: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, local_minute: Callable[[], int] = _local_minute) -> None:
        self.cache = cache
        self.section = cache.section
        self.seen, self.busy, self.status = seen, busy, status
        self.clock, self.wall, self.local_minute = clock, wall, local_minute
        self.window_open = False  # quiet hours, or idle long enough: prefetch may run
        self._last_busy = clock()  # a station just started counts as busy: idle_minutes from now
        self._stop = threading.Event()
        self._refresh_after = 0.0
        self._failed: dict[str, float] = {}  # URL -> when its download failed
        self._unsigned_said = ""
        self._say: Callable[[str], None] = status  # from the worker thread: through the loop

    async def run(self) -> None:
        """Until cancelled; a download under way pauses (its part file stays) when it is."""
        loop = asyncio.get_running_loop()
        self._say = lambda text: loop.call_soon_threadsafe(self.status, text)
        watcher = asyncio.create_task(self._watch(), name="ipsw-watch")
        try:
            while True:
                await self.maintain()
                await asyncio.sleep(CHECK_S)
        finally:
            self._stop.set()
            watcher.cancel()

    async def _watch(self) -> None:
        while True:
            self.observe()
            await asyncio.sleep(WATCH_S)

    def observe(self) -> None:
        """On the loop: is the station idle enough (or in quiet hours) for prefetch to run on?"""
        now = self.clock()
        if self.busy():
            self._last_busy = now
        self.window_open = self._quiet() or now - self._last_busy >= self.section.idle_minutes * 60

    def may_go_on(self) -> bool:
        """Asked by a download at every chunk, from its thread."""
        return self.window_open and not self._stop.is_set()

    async def maintain(self) -> None:
        """One round: the catalog if it is a day old, prefetch if it may run, the NOT SIGNED line."""
        self.observe()
        wanted = await asyncio.to_thread(self._wanted)
        await self._refresh(wanted)
        if self.section.prefetch and self.window_open:
            now = self.clock()
            skip = frozenset(url for url, at in self._failed.items() if now - at < RETRY_S)
            result = await asyncio.to_thread(prefetch.run, self.cache, wanted, self.may_go_on, self._say, skip)
            self._failed.update(dict.fromkeys(result.failed, self.clock()))
        self._say_unsigned(await asyncio.to_thread(self._unsigned))

    def _wanted(self) -> tuple[str, ...]:
        """[ipsw] models first, then the models seen, the most recent first."""
        return tuple(dict.fromkeys(self.section.models + self.seen()))

    def _quiet(self) -> bool:
        window = self.section.quiet_minutes
        if window is None:
            return False
        start, end, minute = *window, self.local_minute()
        return start <= minute < end if start < end else minute >= start or minute < end

    async def _refresh(self, wanted: Iterable[str]) -> None:
        stale, fetched = await asyncio.to_thread(self._stale, wanted)
        if not stale or self.clock() < self._refresh_after:
            return
        try:
            await asyncio.to_thread(self.cache.refresh_catalog, stale)
            log.info("catalog fetched again for %s", ", ".join(stale))
        except IpswError as error:
            self._refresh_after = self.clock() + RETRY_S
            dates = ", ".join(sorted({fetched[m][:10] for m in stale if m in fetched}))
            saved = f"signing status as of the saved catalog (fetched {dates})" if dates else "no saved catalog"
            log.warning("%s; %s; tried again in an hour", error, saved)

    def _stale(self, wanted: Iterable[str]) -> tuple[tuple[str, ...], dict[str, str]]:
        """The wanted and cached models whose catalog is a day old (or was never fetched), and the
        fetch dates (in a thread: the saved catalog of every iPhone is a megabyte of JSON)."""
        cached = self.cache.entries()
        models = dict.fromkeys([*wanted, *(m for e in cached if e.usable and e.record for m in e.record.models)])
        try:
            fetched = self.cache.catalog().fetched
        except IpswError:
            fetched = {}  # unreadable: fetched again, which replaces it
        return tuple(m for m in models if self._age(fetched.get(m)) >= CATALOG_MAX_AGE_S), fetched

    def _age(self, fetched: str | None) -> float:
        if fetched is None:
            return float("inf")
        try:
            return self.wall() - datetime.fromisoformat(fetched).astimezone(UTC).timestamp()
        except ValueError:
            return float("inf")

    def _unsigned(self) -> list[tuple[str, str, str]]:
        """(model, newest cached build, what to add) of each model whose cached builds Apple no longer
        signs, every one of them (in a thread: it reads the records and the catalog)."""
        by_model: dict[str, list[Entry]] = {}
        for entry in self.cache.entries():
            if entry.usable and entry.record is not None:
                for model in entry.record.models:
                    by_model.setdefault(model, []).append(entry)
        unsigned = []
        for model, found in sorted(by_model.items()):
            if all(e.signed is False for e in found):
                newest = max(found, key=lambda e: version_key(e.record.version if e.record else ""))
                assert newest.record is not None
                unsigned.append((model, newest.record.build, self._what_to_add(model)))
        return unsigned

    def _say_unsigned(self, unsigned: list[tuple[str, str, str]]) -> None:
        """The status line says which model has only builds Apple no longer signs; the log, once, what to add."""
        text = ""
        if unsigned:
            model, build, _ = unsigned[0]
            more = f" +{len(unsigned) - 1}" if len(unsigned) > 1 else ""
            text = f"NOT SIGNED {build} {model.removeprefix('iPhone')}{more}"  # fits the 25-character line
        if text != self._unsigned_said:
            self._unsigned_said = text
            for model, _, what_to_add in unsigned:
                log.warning("%s: every cached build is one Apple no longer signs; its phones are refused until "
                            "one it signs is added (%s)", model, what_to_add)
        self.status(text)

    def _what_to_add(self, model: str) -> str:
        try:
            newest = self.cache.catalog().newest_for(model, self.section.pin.get(model), signed=True)
        except IpswError:
            newest = None
        if newest is None:
            return "the catalog lists none: station ipsw catalog refresh"
        return f"iOS {newest.version} ({newest.build}): station ipsw add {newest.url}"
