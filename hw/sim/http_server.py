"""A local HTTP server in a thread: how the simulation stands in for Apple's servers.

pymobiledevice3 talks to them with blocking ``requests`` from worker threads, so the
stand-in answers from a thread of its own, whatever event loop (or none) the caller
runs. The answering is the stand-in's: ``answer(path, body)`` returns (status, content
type, body), or None to hang up without a word, as a dropped connection does.
"""
from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)

Answer = tuple[int, str, bytes] | None
Answering = Callable[[str, bytes], Answer]


class LocalHttpServer:
    def __init__(self, name: str, answer: Answering, host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.name = name  # in thread names and log lines
        self.host = host
        self.port = port  # 0: any free port; the gadget phones' VM serves Apple's own (80, 443)
        self.tls = tls
        self._answer = answer
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError(f"{self.name} server is not running")
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self._httpd.server_address[1]}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> None:
        if self._httpd is not None:
            return
        self._httpd = _Server((self.host, self.port), _Handler, self)
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),  # quick shutdown
                                        name=f"sim-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is None or self._thread is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()  # joins the request threads
        self._thread.join()
        self._httpd, self._thread = None, None

    def answer(self, path: str, body: bytes) -> Answer:
        return self._answer(path, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # so server_close() joins request threads: no thread outlives stop()

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 local: LocalHttpServer) -> None:
        super().__init__(address, handler)
        self.local = local


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        answer = self.server.local.answer(self.path, self.rfile.read(length))
        if answer is None:
            self.close_connection = True
            return
        status, content_type, payload = answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(f"{self.server.local.name} server: " + format, *args)
