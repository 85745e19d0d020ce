"""Fixtures for the restore worker: a fork server, test IPSWs, the report pipe, and the real engine's
pymobiledevice3 pointed at simulated USB and usbmuxd (hw.sim) where a test needs a phone."""
from __future__ import annotations

import asyncio
import functools
import os
import plistlib
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import usb.core
from pymobiledevice3 import irecv, utils
from pymobiledevice3.restore import asr, recovery, restore, tss

from hw.ipsw_archive import open_for_restore
from hw.sim import SimPhone, SimulatedBench
from hw.worker import bars, real
from hw.worker.launcher import ForkServer, ServerConfig
from hw.worker.messages import decode
from hw.worker.reporter import Reporter

OS_IMAGE = "078-00000-000.dmg"
OS_IMAGE_BYTES = 8 << 20
MANIFEST = "iOS15.4.1_19E258_iPhone14-3.BuildManifest.plist"  # d64ap, iPhone14,3


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    root = tmp_path_factory.mktemp("forkserver")
    server = ForkServer.start(ServerConfig(home=root / "home", log_path=root / "server.log", work_root=root / "work"))
    yield server
    server.stop()
    assert not list((root / "work").iterdir()), "a worker directory outlived its worker"


@pytest.fixture(scope="module")
def small_ipsw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stored (uncompressed) IPSW as Apple ships them, with an 8 MiB OS image of random bytes."""
    path = tmp_path_factory.mktemp("ipsw") / "iPhone_Test_1.0_Restore.ipsw"
    manifest = {"BuildIdentities": [{"Info": {"DeviceClass": "d64ap", "Variant": "Customer Erase Install (IPSW)"},
                                     "Manifest": {"OS": {"Info": {"Path": OS_IMAGE}}}}]}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("BuildManifest.plist", plistlib.dumps(manifest))
        archive.writestr(OS_IMAGE, os.urandom(OS_IMAGE_BYTES))
    return path


@pytest.fixture
def worker_pids(fork_server: ForkServer) -> Callable[[], list[int]]:
    """The fork server's children: the workers it runs (zombies included, to catch unreaped ones)."""
    return lambda: [child.pid for child in psutil.Process(fork_server.pid).children()]


@pytest.fixture
def open_fds() -> Callable[[], set[str]]:
    return lambda: set(os.listdir("/proc/self/fd"))


class Pipe:
    def __init__(self) -> None:
        self.read, self.write = os.pipe()
        os.set_blocking(self.read, False)
        self.reporter = Reporter(self.write, min_interval=0.0)

    def messages(self) -> list:
        data = b""
        try:
            while chunk := os.read(self.read, 65536):
                data += chunk
        except BlockingIOError:
            pass
        return [decode(line) for line in data.splitlines()]

    def close(self) -> None:
        os.close(self.read)
        os.close(self.write)


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    pipe = Pipe()
    yield pipe
    pipe.close()


@pytest.fixture
def pmd3_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the worker's adaptations of pymobiledevice3 happen, and undo them after the test."""
    for module in (irecv, utils, asr, restore):
        monkeypatch.setattr(module, "ProgressBar", module.ProgressBar)
    monkeypatch.setattr(recovery, "IRecv", recovery.IRecv)
    monkeypatch.setattr(real._BoundedIRecv, "limit", real._BoundedIRecv.limit)
    monkeypatch.setattr(recovery, "create_using_usbmux", recovery.create_using_usbmux)
    monkeypatch.setattr(irecv, "find", irecv.find)
    monkeypatch.setattr(tss, "requests", tss.requests)
    monkeypatch.setattr(tss, "TSS_CONTROLLER_ACTION_URL", tss.TSS_CONTROLLER_ACTION_URL)
    monkeypatch.setattr(real, "_usb_backend", real._usb_backend)
    monkeypatch.setattr(restore, "requests", restore.requests)
    monkeypatch.setattr(bars.ReportingBar, "reporter", None)


class FakeIRecv:
    """What pmd3's Device reads from an IRecv in recovery mode."""

    ecid = 0x1234
    hardware_model = "d64ap"
    product_type = "iPhone14,3"
    is_image4_supported = True
    ap_nonce = bytes(range(32))
    sep_nonce = bytes(range(20))


class FakeRestored:
    def __init__(self) -> None:
        self.sent: list = []

    async def send(self, message) -> None:
        self.sent.append(message)


@pytest.fixture
def manifest_ipsw(shared_data: Path, tmp_path: Path) -> Path:
    """An IPSW holding only the real 19E258 BuildManifest (iPhone14,3)."""
    ipsw = tmp_path / "test.ipsw"
    with zipfile.ZipFile(ipsw, "w") as archive:
        archive.write(shared_data / "buildmanifests" / MANIFEST, "BuildManifest.plist")
    return ipsw


@pytest.fixture
def make_restore(pipe: Pipe) -> Callable[[Path, real.Device], real.ReportingRestore]:
    """A real ``ReportingRestore``; call it inside a running task (pmd3 names its logger after it)."""
    return lambda ipsw, device: real.ReportingRestore(open_for_restore(str(ipsw)), device, pipe.reporter)


@pytest.fixture
def fake_irecv() -> FakeIRecv:
    return FakeIRecv()


@pytest.fixture
def reporting_restore(manifest_ipsw: Path, make_restore, fake_irecv: FakeIRecv) -> real.ReportingRestore:
    """A real ``ReportingRestore`` on a real BuildManifest (the IPSW holds nothing else)."""
    async def create() -> real.ReportingRestore:
        return make_restore(manifest_ipsw, real.Device(irecv=fake_irecv))

    instance = asyncio.run(create())
    instance._restored = FakeRestored()
    return instance


@pytest.fixture
def bench_with(pmd3_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., SimulatedBench]]:
    """A simulated bench (usbmuxd, USB) holding some phones, with pymobiledevice3 pointed at it."""
    benches: list[SimulatedBench] = []
    usb_find = usb.core.find

    def start(*phones: SimPhone, usb_backend: type | None = None) -> SimulatedBench:
        # A unix socket path must stay short: not under pytest's tmp_path.
        bench = SimulatedBench(phones, Path(tempfile.mkdtemp(prefix="wsim-", dir="/tmp")))
        benches.append(bench.__enter__())
        find = functools.partial(usb_find, backend=bench.usb_backend if usb_backend is None
                                 else usb_backend(bench.world))
        monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", bench.usbmuxd_address)
        monkeypatch.setattr(irecv, "find", find)  # what IRecv scans
        monkeypatch.setattr(usb.core, "find", find)  # what the worker's paced scan calls
        return bench

    yield start
    for bench in benches:
        bench.close()
        shutil.rmtree(bench.state_dir, ignore_errors=True)
