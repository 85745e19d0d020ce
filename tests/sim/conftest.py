"""Fixtures for the simulator tests: a bench per test, pymobiledevice3 pointed at it, its home isolated."""
from __future__ import annotations

import asyncio
import functools
import itertools
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pymobiledevice3.irecv
import pytest
import usb.core

from hw.sim import SimPhone, SimulatedBench, point_activation_at

T = TypeVar("T")
_ecids = itertools.count(0x001A2B3C4D5E6F70)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run pymobiledevice3's async API the way a caller thread would: its own loop, blocking."""
    return asyncio.run(coro)


def wait_until(condition: Callable[[], object], timeout: float = 2.0) -> None:
    """Poll for an effect the phone produces after it answered (a reboot follows its reply)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        time.sleep(0.01)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def sim_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("sim-"))


@pytest.fixture(autouse=True)
def isolated_pmd3_home(pmd3_home: Path) -> Path:
    return pmd3_home


@pytest.fixture
def make_phone() -> Callable[..., SimPhone]:
    """A phone with a fresh ECID and serial on its own hub port; keyword arguments override."""

    def make(**overrides: Any) -> SimPhone:
        ecid = next(_ecids)
        fields: dict[str, Any] = {"ecid": ecid, "serial": f"F17{ecid % 10**9:09d}", "port_path": (1, ecid % 7 + 1)}
        return SimPhone(**(fields | overrides))

    return make


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A state dir short enough for a unix socket path, whatever the test's name."""
    path = Path(tempfile.mkdtemp(prefix="sim-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def bench_for(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., SimulatedBench]]:
    """Start a bench for some phones and point pymobiledevice3 (usbmuxd, activation, IRecv) at it."""
    benches: list[SimulatedBench] = []

    def start(*phones: SimPhone, reboot_seconds: float = 0.3) -> SimulatedBench:
        bench = SimulatedBench(phones, short_dir / str(len(benches)), reboot_seconds=reboot_seconds)
        benches.append(bench.__enter__())
        monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", bench.usbmuxd_address)
        monkeypatch.setattr(pymobiledevice3.irecv, "find", functools.partial(usb.core.find, backend=bench.usb_backend))
        point_activation_at(bench.activation_url)
        return bench

    yield start
    point_activation_at(None)
    for bench in benches:
        bench.close()
