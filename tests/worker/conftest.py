"""Fixtures for the restore worker: one fork server for the module's tests, a small stored IPSW."""
from __future__ import annotations

import os
import plistlib
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from station.worker.launcher import ForkServer, ServerConfig

OS_IMAGE = "078-00000-000.dmg"
OS_IMAGE_BYTES = 8 << 20


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
