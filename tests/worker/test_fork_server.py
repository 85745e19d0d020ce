"""The fork server outlives whatever one worker's station side does: one server serves every
restore of a station's life, and a server that died costs every restore in flight."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import psutil

from hw.worker.launcher import ForkServer, ServerConfig
from hw.worker.request import RestoreRequest, SimParams
from hw.worker.server import Server
from hw.worker.supervisor import run_restore

FAST = SimParams(speed=2000.0, usb_rate=35e6, image_bytes=1 << 20)


def request(tmp_path: Path) -> RestoreRequest:
    return RestoreRequest(label="slot1", log_dir=str(tmp_path / "logs"), sim=FAST)


def test_a_station_that_gave_up_before_its_worker_started_leaves_the_server_serving(tmp_path):
    """A spawn cancelled while the server forks (a phone pulled, the station stopping) closes
    the station's end before the server's {"pid"} reply: the server's send fails."""
    work = tmp_path / "work"
    server = ForkServer.start(ServerConfig(home=tmp_path / "home", log_path=tmp_path / "server.log",
                                           work_root=work))
    try:
        first = server.pid
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        read_fd, write_fd = os.pipe()
        ours.close()
        server._send(request(tmp_path).to_json(), [theirs.fileno(), write_fd])
        theirs.close()
        os.close(write_fd)
        os.close(read_fd)
        asyncio.run(run_restore(request(tmp_path), lambda report: None, server=server))
        assert server.pid == first, (tmp_path / "server.log").read_text()
        deadline = time.monotonic() + 5
        while psutil.Process(first).children() or list(work.iterdir()):
            assert time.monotonic() < deadline, "the abandoned worker or its directory was left behind"
            time.sleep(0.05)
    finally:
        server.stop()


def test_a_worker_reaped_earlier_in_the_same_wake_up_is_no_longer_served(tmp_path):
    """One select() can return both the SIGCHLD wake-up and the dead worker's socket (the
    station hung up, or sent a signal, as it died). Reaping comes first when the wake-up is
    listed first, and the socket's event then names a worker the server no longer has."""
    control, station = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    previous = signal.getsignal(signal.SIGCHLD)
    server = Server(control, str(tmp_path))
    try:
        server._on_worker(os.getpid() + 4_000_000)  # no worker of the server has this pid
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, previous)
        server._selector.close()
        os.close(server._wake_r)
        os.close(server._wake_w)
        control.close()
        station.close()
