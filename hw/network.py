"""Is Apple reachable? A restore needs its signing server; without it no restore starts.

A TCP connection to the signing server's port, every ``CHECK_S`` seconds, in a
thread (name resolution and connect are blocking); the answer becomes the
station-level fault ``NO NETWORK`` or clears it.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from hw.phones import LayerFault, PhoneEvent

log = logging.getLogger(__name__)

APPLE_HOSTS = (("gs.apple.com", 443), ("albert.apple.com", 443))  # signing (TSS), activation
CHECK_S = 30.0
CONNECT_TIMEOUT_S = 5.0


def apple_reachable(hosts: tuple[tuple[str, int], ...] = APPLE_HOSTS) -> str | None:
    """None when every host answers, else why not."""
    for host, port in hosts:
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as error:
            return f"{host}:{port}: {error.strerror or error}"
    return None


async def watch_network(emit: Callable[[PhoneEvent], None],
                        hosts: tuple[tuple[str, int], ...] = APPLE_HOSTS,
                        interval: float = CHECK_S) -> None:
    while True:
        problem = await asyncio.to_thread(apple_reachable, hosts)
        if problem:
            log.debug("Apple unreachable: %s", problem)
        emit(LayerFault("network", "NO NETWORK" if problem else None))
        await asyncio.sleep(interval)
