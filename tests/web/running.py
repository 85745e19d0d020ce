"""A simulated station serving its page on a free loopback port, played by `station run --sim`
in a process of its own (the station owns its loop's signals), and asked over real HTTP."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "shop-token-7f3a"
# Keeps the station running after the scenario's phones are done (a scenario is over only once
# its last press is played): the tests look at the end and then stop it with SIGTERM.
STAY_UP = '\n[[press]]\nat = 30000\nbutton = "back"\n'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Running:
    process: subprocess.Popen[str]
    base: str  # http://127.0.0.1:PORT
    folder: Path
    config: Path

    def call(self, path: str, method: str = "GET", token: str | None = None,
             body: bytes | None = None) -> tuple[int, Any]:
        """(status, parsed JSON or text) of one request."""
        request = urllib.request.Request(self.base + path, method=method, data=body)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, _parsed(response.read(), response.headers.get_content_type())
        except urllib.error.HTTPError as error:
            return error.code, _parsed(error.read(), error.headers.get_content_type())

    def status(self, token: str | None = TOKEN) -> dict[str, Any]:
        code, document = self.call("/api/status", token=token)
        assert code == 200, document
        return document

    def port(self, slot: int, token: str | None = TOKEN) -> dict[str, Any]:
        return self.status(token)["ports"][slot - 1]

    def wait_for(self, what: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60.0,
                 token: str | None = TOKEN) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            document = self.status(token)
            if done(document):
                return document
            assert self.process.poll() is None, f"the station stopped: {self.log()[-2000:]}"
            assert time.monotonic() < deadline, f"never {what}: {[(p['slot'], p['state']) for p in document['ports']]}"
            time.sleep(0.2)

    def log(self) -> str:
        return (self.folder / "station.log").read_text()

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def _parsed(body: bytes, kind: str) -> Any:
    return json.loads(body) if kind == "application/json" else body.decode()


def write_station(folder: Path, scenario_text: str, port: int, token: str = TOKEN, slots: int = 5) -> tuple[Path, Path]:
    """A config and a scenario serving the page on ``port``: the scenario's [config.web] table is
    what makes a simulation serve it; the config's [web] is what `station status` reads."""
    config = folder / "station.toml"
    config.write_text(f'[station]\nstate_dir = "state"\n[hardware]\nbackend = "sim"\n[ipsw]\ncache_dir = "ipsw"\n'
                      f'[hub]\nslots = {slots}\n[display]\nframes_dir = "frames"\n'
                      f'[web]\nport = {port}\ntoken = "{token}"\n')
    scenario = folder / "scenario.toml"
    scenario.write_text(f'{scenario_text}\n[config.web]\nport = {port}\ntoken = "{token}"\n')
    return config, scenario


@contextmanager
def playing_demo(folder: Path) -> Iterator[Running]:
    """The shipped demo (five phones), played at `make run`'s speed, serving its page; it stays
    up once played, and ends cleanly."""
    running = start_station(folder, (ROOT / "config/sim/demo.toml").read_text() + STAY_UP, speed=30)
    try:
        yield running
    finally:
        code = running.stop()
    assert code in (0, 130), running.log()[-3000:]
    assert "Traceback" not in running.log()


def start_station(folder: Path, scenario_text: str, speed: float, token: str = TOKEN) -> Running:
    port = free_port()
    config, scenario = write_station(folder, scenario_text, port, token)
    return launch(config, scenario, speed, port)


def launch(config: Path, scenario: Path, speed: float, port: int) -> Running:
    """`station run --sim` in its own process, once its page answers on ``port``."""
    folder = config.parent
    log = (folder / "station.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "station.cli", "run", "--sim", str(scenario),
                                "--speed", str(speed), "--config", str(config), "--log-level", "info"],
                               stdout=subprocess.PIPE, stderr=log, text=True, cwd=folder,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()
    running = Running(process, f"http://127.0.0.1:{port}", folder, config)
    deadline = time.monotonic() + 60
    while True:
        try:
            running.call("/api/status")
            return running
        except (urllib.error.URLError, ConnectionError):
            assert process.poll() is None, running.log()[-3000:]
            assert time.monotonic() < deadline, "the page never answered"
            time.sleep(0.1)
