"""The live page's Server-Sent Events: the station's status, at most a few times a second.

Every change of the station (a progress report, a button) marks the feed; it sends at most
every ``MIN_INTERVAL_S`` and, when nothing changed, again every ``QUIET_S`` (ETAs run on, and a
proxy sees the stream is alive). Each client keeps only the newest message: a slow client
skips what it missed instead of queueing it. A client that leaves is dropped when its stream
ends (Starlette cancels it on the disconnect); ``close`` ends every stream at once, so the
server stops without waiting for them.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.25
QUIET_S = 5.0


class _Client:
    def __init__(self, reveal: bool) -> None:
        self.reveal = reveal
        self.ready = asyncio.Event()


class Feed:
    def __init__(self, status: Callable[[bool], dict[str, Any]]) -> None:
        self._status = status  # status(reveal) -> the document sent
        self._clients: set[_Client] = set()
        self._pending: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def clients(self) -> int:
        return len(self._clients)

    def changed(self) -> None:
        """The station changed (called on the loop): wake the clients soon, once."""
        if self._clients and self._pending is None and not self._closed:
            self._pending = asyncio.get_running_loop().call_later(MIN_INTERVAL_S, self._wake)

    def _wake(self) -> None:
        self._pending = None
        for client in self._clients:
            client.ready.set()

    def close(self) -> None:
        self._closed = True
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        for client in self._clients:
            client.ready.set()

    async def stream(self, reveal: bool, peer: str) -> AsyncIterator[str]:
        """One client's events: the status now, then after each change, until closed."""
        client = _Client(reveal)
        self._clients.add(client)
        log.info("web: %s follows the live page (%d following)", peer, len(self._clients))
        try:
            while not self._closed:
                yield _event(self._status(client.reveal))
                client.ready.clear()
                try:
                    async with asyncio.timeout(QUIET_S):
                        await client.ready.wait()
                except TimeoutError:
                    pass
        finally:
            self._clients.discard(client)
            log.info("web: %s left the live page", peer)


def _event(document: dict[str, Any]) -> str:
    return f"event: status\ndata: {json.dumps(document, ensure_ascii=False, separators=(',', ':'))}\n\n"
