"""The IPSW cache as the page and /metrics show it: read on a thread (it stats the files and
reads their verification records), at start, every ``REFRESH_S``, and soon after a restore
picked an IPSW; views read the last list."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from station.ipsw.cache import Entry, IpswCache

log = logging.getLogger(__name__)

REFRESH_S = 60.0


class CacheView:
    def __init__(self, cache: IpswCache, on_read: Callable[[list[Entry]], None]) -> None:
        self._cache = cache
        self._on_read = on_read
        self.entries: list[Entry] = []
        self._again = asyncio.Event()
        self._problem = ""

    def refresh_soon(self) -> None:
        self._again.set()

    def on_firmware(self, slot: int, build: str, version: str, sha256: str, tool: str = "") -> None:
        """A restore picked an IPSW: read the cache again (its size counts the bytes sent)."""
        if sha256:
            self.refresh_soon()

    def on_transition(self, old: object, new: object, event: object, at: float) -> None:
        pass

    async def run(self) -> None:
        while True:
            self._again.clear()
            try:
                self.entries = await asyncio.to_thread(self._cache.entries)
                self._problem = ""
            except Exception as error:  # noqa: BLE001 - an unreadable cache is said, the page goes on
                if str(error) != self._problem:
                    log.warning("web: cannot read the IPSW cache: %s", error)
                self._problem = str(error)
            self._on_read(self.entries)
            try:
                async with asyncio.timeout(REFRESH_S):
                    await self._again.wait()
            except TimeoutError:
                pass
