"""The station's handle on the fork server (server.py): start it, ask it for workers, stop it."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hw
from hw.worker.request import RestoreRequest

log = logging.getLogger(__name__)

# Imported once by the server, shared copy-on-write by every worker it forks.
DEFAULT_PRELOAD = (
    "pymobiledevice3.restore.restore",
    "hw.worker.child",
    "hw.worker.real",
    "hw.worker.sim",
)
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class ServerConfig:
    home: Path | None = None  # HOME and XDG_DATA_HOME: pair records go to <home>/pymobiledevice3
    log_path: Path | None = None  # the server's own output (per-restore logs go where each request says)
    work_root: Path | None = None  # each worker's cwd is a fresh directory in here, removed after it
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    env: Mapping[str, str] = field(default_factory=dict)  # e.g. USBMUXD_SOCKET_ADDRESS for every worker


class WorkerStartError(Exception):
    """The fork server could not start a worker."""


class WorkerHandle:
    """One forked worker: its pid, the read end of its report pipe, and its exit code once reaped."""

    def __init__(self, conn: socket.socket, report_fd: int) -> None:
        self.pid = 0
        self.report_fd = report_fd
        self.returncode: int | None = None  # negative: killed by that signal
        self._conn = conn

    async def wait(self) -> int:
        if self.returncode is None:
            reply = await self._receive()
            # No reply: reaped but unreported (see _receive), or the server died and its workers with
            # it (PR_SET_PDEATHSIG is SIGKILL).
            self.returncode = int(reply["exit"]) if reply else -signal.SIGKILL
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Through the server, which knows whether the pid is still this worker's."""
        if self.returncode is not None or self._conn.fileno() < 0:
            return
        try:
            self._conn.send(json.dumps({"signal": int(sig)}).encode())
        except OSError:
            pass  # the server is gone, and so is the worker

    def close(self) -> None:
        """Release both descriptors; a worker still running is killed by the server."""
        self._conn.close()
        if self.report_fd >= 0:
            os.close(self.report_fd)
            self.report_fd = -1

    async def _started(self) -> None:
        reply = await self._receive()
        if reply is None:
            raise WorkerStartError("the fork server closed the connection before starting the worker")
        self.pid = int(reply["pid"])

    async def _receive(self) -> dict[str, Any] | None:
        try:
            data = await asyncio.get_running_loop().sock_recv(self._conn, 256)
        except ConnectionResetError:
            # The server closed the connection with our last signal unread: it only closes after
            # reaping (or when it is going away), so the worker is gone; its exit code is lost.
            return None
        return json.loads(data) if data else None


class ForkServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None

    @classmethod
    def start(cls, config: ServerConfig | None = None) -> ForkServer:
        server = cls(config or ServerConfig())
        server._launch()
        return server

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def spawn(self, request: RestoreRequest) -> WorkerHandle:
        """Fork a worker for ``request``; it starts reporting on ``handle.report_fd`` at once."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        read_fd, write_fd = os.pipe()
        try:
            self._send(request.to_json(), [theirs.fileno(), write_fd])
        except OSError as error:
            ours.close()
            os.close(read_fd)
            raise WorkerStartError(f"fork server unreachable: {error}") from None
        finally:
            theirs.close()
            os.close(write_fd)
        ours.setblocking(False)
        handle = WorkerHandle(ours, read_fd)
        try:
            await handle._started()
        except BaseException:
            handle.close()
            raise
        return handle

    def stop(self) -> None:
        """End the server and every worker it runs (blocks up to a few seconds)."""
        if self._control is not None:
            self._control.close()  # EOF: the server kills its workers, reaps them and exits
            self._control = None
        if self._process is not None:
            try:
                self._process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def _send(self, request: bytes, fds: list[int]) -> None:
        assert self._control is not None and self._process is not None, "fork server not started"
        if self._process.poll() is not None:
            log.warning("fork server exited with %s; starting a new one", self._process.returncode)
            self._control.close()
            self._launch()
        socket.send_fds(self._control, [request], fds)

    def _launch(self) -> None:
        config = self.config
        work_root = Path(config.work_root or tempfile.gettempdir())
        work_root.mkdir(parents=True, exist_ok=True)
        # Fixed before the server imports pymobiledevice3, which reads them at import time.
        env = {**os.environ, **config.env}
        if config.home is not None:
            env["HOME"] = env["XDG_DATA_HOME"] = str(config.home)
        project = str(Path(hw.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [project, env.get("PYTHONPATH")]))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        output = open(config.log_path, "ab") if config.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "hw.worker.server", str(theirs.fileno()), str(work_root),
                 *config.preload],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                cwd=work_root, env=env,
                start_new_session=True,  # the terminal's Ctrl-C reaches the station only; it decides
            )
        finally:
            theirs.close()
            if output is not subprocess.DEVNULL:
                output.close()  # type: ignore[union-attr]
        self._control = ours
        log.info("fork server %d started (preload: %s)", self._process.pid, ", ".join(config.preload))


_default: ForkServer | None = None


def start_fork_server(config: ServerConfig | None = None) -> ForkServer:
    """Start the station's fork server (at start-up, before any restore)."""
    global _default
    stop_fork_server()
    _default = ForkServer.start(config)
    return _default


def stop_fork_server() -> None:
    """Stop it at shutdown; workers still running are killed."""
    global _default
    if _default is not None:
        _default.stop()
        _default = None


def default_server() -> ForkServer:
    """The station's fork server, started with defaults if start-up did not start one."""
    return _default or start_fork_server()
