"""uvicorn on the station's own event loop, on a socket the station binds itself.

Binding here, not in uvicorn, makes a port in use or an address that cannot be had one log line
and a display fault (``WEB: port 8080 in use``) instead of uvicorn's ``sys.exit``; the station
runs on, and tries the address again every ``RETRY_S``. uvicorn's own signal handling is left
out: the station's loop owns SIGINT and SIGTERM (its graceful stop), and uvicorn would replace
them for as long as it serves. ``stop`` ends the live streams first, so the server shuts down in
well under a second, and closes the socket: nothing is left behind.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI

from station.web.feed import Feed

log = logging.getLogger(__name__)

RETRY_S = 30.0
SHUTDOWN_S = 1.0  # uvicorn's graceful shutdown: then what still runs is cancelled
MAX_CONNECTIONS = 64  # beyond: 503, so no crowd of pages can take the loop from the phones
FAULT_SOURCE = "web"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the station's loop handles the signals (station.shutdown.GracefulStop)


class WebServer:
    def __init__(self, app: FastAPI, feed: Feed, host: str, port: int,
                 set_fault: Callable[[str, str | None], None]) -> None:
        self._app, self._feed = app, feed
        self.host, self.port = host, port
        self._set_fault = set_fault
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._said = ""  # the last bind error logged: said once, not every retry

    def start(self) -> None:
        # uvicorn narrates its start and stop at INFO: the station's log says what matters itself.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="web")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._feed.close()
        if self._server is None:
            self._task.cancel()  # still waiting to bind: nothing is served
        else:
            self._server.should_exit = True
        done, _ = await asyncio.wait({self._task}, timeout=SHUTDOWN_S + 2.0)
        if not done:
            log.error("web: the server did not stop within %.0f s: cancelled", SHUTDOWN_S + 2.0)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            sock = self._bind()
            if sock is not None:
                break
            await asyncio.sleep(RETRY_S)
        if self._said:
            log.info("web: listening on %s now", self._where)
            self._set_fault(FAULT_SOURCE, None)
        config = uvicorn.Config(self._app, log_config=None, lifespan="off", access_log=False,
                                timeout_graceful_shutdown=SHUTDOWN_S, proxy_headers=False,
                                server_header=False, limit_concurrency=MAX_CONNECTIONS)
        self._server = _Server(config)
        log.info("web: the status page is on http://%s/", self._where)
        try:
            await self._server.serve(sockets=[sock])
        finally:
            sock.close()

    @property
    def _where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _bind(self) -> socket.socket | None:
        """The listening socket, or None with the reason logged once and shown on the display."""
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as error:
            return self._failed(f"cannot listen on {self._where}: {error.strerror or error}", "WEB: no address")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
        except OSError as error:
            sock.close()
            if error.errno == errno.EADDRINUSE:
                return self._failed(f"port {self.port} on {self.host} is in use (another program, or "
                                    "another station: [web] port)", f"WEB: port {self.port} in use")
            return self._failed(f"cannot listen on {self._where}: {error.strerror or error}",
                                "WEB: cannot listen")
        return sock

    def _failed(self, reason: str, fault: str) -> None:
        if reason != self._said:
            log.error("web: %s; the station runs on without its page, trying again every %.0f s",
                      reason, RETRY_S)
            self._said = reason
        self._set_fault(FAULT_SOURCE, fault)
        return None
