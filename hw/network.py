"""Is Apple reachable? A restore needs its signing server; without it no restore starts.

A TCP connection to each host and port the restore and the lock check really use,
every ``CHECK_S`` seconds, in a thread (name resolution and connect are blocking);
the answer becomes the station-level fault ``NO NETWORK`` or clears it. The hosts
come from pymobiledevice3's own URLs: TSS is plain HTTP on port 80
(restore/tss.py ``TSS_CONTROLLER_ACTION_URL``), activation HTTPS on 443
(services/mobile_activation.py ``ACTIVATION_DEFAULT_URL``).
"""
from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from pymobiledevice3.restore.tss import TSS_CONTROLLER_ACTION_URL
from pymobiledevice3.services.mobile_activation import ACTIVATION_DEFAULT_URL

from hw.phones import LayerFault, PhoneEvent

log = logging.getLogger(__name__)


def host_and_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


ACTIVATION_HOST = host_and_port(ACTIVATION_DEFAULT_URL)
APPLE_HOSTS = (host_and_port(TSS_CONTROLLER_ACTION_URL), ACTIVATION_HOST)
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
