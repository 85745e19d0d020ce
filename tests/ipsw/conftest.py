"""IPSW test fixtures: a loopback catalog/file server, test IPSWs, and no other network."""
from __future__ import annotations

import errno
import json
import logging
import re
import socket
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import station.cli
from station.config import IpswSection

from .factory import build_ipsw, firmware, synthetic_manifest, tree

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach a host other than this one fails the way an offline station does."""
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise OSError(errno.ENETUNREACH, f"tests may not contact {address[0]}")
        return real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in LOOPBACK and host is not None:
            raise socket.gaierror(socket.EAI_NONAME, f"tests may not resolve {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@dataclass
class Server:
    """What the loopback server publishes: a catalog per model and files (with Range support)."""

    url: str = ""
    catalog: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)  # file name -> bytes the next reply sends
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def catalog_url(self) -> str:
        return self.url + "/v4/device/{identifier}?type=ipsw"

    def publish(self, path: Path, models: tuple[str, ...], version: str, build: str, **changes: Any) -> str:
        """Serve ``path`` and list it in the catalog of each model, as ipsw.me does."""
        url = f"{self.url}/files/{urllib.parse.quote(path.name)}"
        self.files[path.name] = path
        for model in models:
            self.catalog.setdefault(model, []).append(firmware(path, url, model, version, build, **changes))
        return url


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        state: Server = self.server.state
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        state.requests.append((path, self.headers.get("Range")))
        if path.startswith("/v4/device/"):
            model = path.rsplit("/", 1)[-1]
            if model not in state.catalog:
                return self.send_error(404)
            return self._send(200, json.dumps({"identifier": model, "firmwares": state.catalog[model]}).encode(),
                              "application/json")
        name = path.removeprefix("/files/")
        if name not in state.files:
            return self.send_error(404)
        self._send_file(state, name)

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_file(self, state: Server, name: str) -> None:
        data = state.files[name].read_bytes()
        etag = f'"{len(data)}"'
        start = 0
        wanted = self.headers.get("Range")
        if wanted and self.headers.get("If-Range") in (None, etag):
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                return self.send_error(416)
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", etag)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        body = data[start:]
        cut = state.cut_after.pop(name, None)
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            self.close_connection = True


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = Server(url=f"http://127.0.0.1:{httpd.server_address[1]}")  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield httpd.state  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def section(tmp_path: Path, server: Server) -> IpswSection:
    return IpswSection(cache_dir=tmp_path / "cache", catalog_url=server.catalog_url,
                       download_timeout_s=5.0, download_retries=2)


@pytest.fixture
def offline_section(tmp_path: Path) -> IpswSection:
    """A catalog URL on a loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return IpswSection(cache_dir=tmp_path / "cache", catalog_url=f"http://127.0.0.1:{port}/{{identifier}}",
                       download_timeout_s=2.0, download_retries=0)


@pytest.fixture
def ipsw14_7(tmp_path: Path) -> Path:
    """iOS 18.0.1 for iPhone14,7, with a synthetic manifest."""
    return build_ipsw(tmp_path / "iPhone14,7_18.0.1_22A3370_Restore.ipsw", synthetic_manifest())


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `station ...` in-process with a config whose [ipsw] table is ``section``; only the ipsw commands."""
    monkeypatch.setattr(station.cli, "COMMAND_MODULES", ("station.ipsw.cli",))

    def run(section: IpswSection, *argv: str) -> int:
        config = tmp_path / "station.toml"
        pins = "".join(f'"{k}" = "{v}"\n' for k, v in section.pin.items())
        config.write_text(f'[ipsw]\ncache_dir = "{section.cache_dir}"\ncatalog_url = "{section.catalog_url}"\n'
                          f"download_timeout_s = {section.download_timeout_s}\n"
                          f"download_retries = {section.download_retries}\n[ipsw.pin]\n{pins}")
        # Outside pytest nothing configures logging: a warning reaches stderr through logging.lastResort.
        # pytest's own handler hides it, so this one puts it back where an operator would see it.
        last_resort = logging.StreamHandler(sys.stderr)
        last_resort.setLevel(logging.WARNING)
        logging.getLogger().addHandler(last_resort)
        try:
            return station.cli.main([*argv, "--config", str(config)])
        finally:
            logging.getLogger().removeHandler(last_resort)

    return run


@pytest.fixture
def cache_with_one(cli, server: Server, section: IpswSection, tmp_path: Path, capsys) -> dict:
    """A cache holding one verified IPSW; returns its file tree to compare with afterwards."""
    good = build_ipsw(tmp_path / "iPhone15,4_18.0.1_22A3370_Restore.ipsw", synthetic_manifest(("iPhone15,4",)))
    server.publish(good, ("iPhone15,4",), "18.0.1", "22A3370")
    assert cli(section, "ipsw", "add", str(good)) == 0
    capsys.readouterr()
    return tree(section.cache_dir)


def fails_one_line(capsys, code: int, pattern: str) -> None:
    """The command failed with exactly one line on stderr, matching ``pattern``, and printed nothing else."""
    out, err = capsys.readouterr()
    assert code != 0
    assert out == "" and err.count("\n") == 1 and err.endswith("\n"), err
    assert re.match(pattern, err), err


class _ScriptedHandler(BaseHTTPRequestHandler):
    """Answers every GET with the server's ``steps``: bytes are sent as they are, a float is a pause."""

    server: Any

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.close_connection = True
        try:
            for step in self.server.steps:
                if isinstance(step, float):
                    if self.server.stopping.wait(step):
                        return
                else:
                    self.wfile.write(step)
                    self.wfile.flush()
        except OSError:  # the client gave up
            pass


@pytest.fixture
def scripted() -> Iterator[Any]:
    """A loopback server whose reply is written by the test (``steps``), e.g. a bad header or a slow body."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedHandler)
    httpd.daemon_threads = True
    httpd.steps = []  # type: ignore[attr-defined]
    httpd.stopping = threading.Event()  # type: ignore[attr-defined]
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield httpd
    httpd.stopping.set()  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()
