"""SourceBootObjectV4 (a cryptex: 1.6 GB in idevicerestore issue #736) streams from the IPSW member.

pymobiledevice3 (restore.py send_source_boot_object_v4) reads the component whole, then sends
it in 8 KiB FileData plists; several restores at once ran hosts out of memory at exactly
this step (idevicerestore issues #529, #521). The worker sends the same plists read from the
member 8 KiB at a time. Old and new run side by side, each in a forked child (as the fork
server runs workers), on restored's connection faked at its send_plist boundary.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import plistlib
import random
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pymobiledevice3.restore.restore import Restore
from pymobiledevice3.restore.restored_client import RestoredClient
from pymobiledevice3.service_connection import build_plist

from hw.worker import bars, real

# Paths as in the 23C71 (iOS 26.2.1, iPhone13,2) manifest; the system cryptex is AEA-wrapped there.
SYSTEM_OS, APP_OS = "043-88926-079.dmg.aea", "043-87832-082.dmg"
BIG, SMALL = 160 << 20, 40 << 20  # bytes: "a few hundred MB" scaled to keep the test near a second
MESSAGE = {"MsgType": "DataRequestMsg", "DataType": "SourceBootObjectV4",  # idevicerestore issue #492's log
           "Arguments": {"ImageName": "Cryptex1,SystemOS", "Variant": "Erase"}}


class WireService:
    """restored's data connection at pymobiledevice3's send_plist: hashes the framed bytes it would write."""

    def __init__(self) -> None:
        self.wire = hashlib.sha256()
        self.bytes = 0

    async def send_plist(self, d: dict[str, Any], endianity: str = ">", fmt: Any = plistlib.FMT_XML) -> None:
        frame = build_plist(d, endianity, fmt)  # what ServiceConnection.send_plist hands to sendall
        self.wire.update(frame)
        self.bytes += len(frame)

    async def recv_plist(self, endianity: str = ">") -> dict[str, Any]:
        return {"MsgType": "ProgressMsg"}  # after the AEA header: no URLAsset asked for


def member_bytes(size: int, seed: int) -> bytes:
    block = random.Random(seed).randbytes(1 << 20)
    return (b"AEA1" + block * (size // len(block) + 1))[:size]


@pytest.fixture(scope="module")
def cryptex_ipsw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    identity = {"Info": {"DeviceClass": "d53gap", "Variant": "Customer Erase Install (IPSW)",
                         "RestoreBehavior": "Erase"},
                "Manifest": {"Cryptex1,SystemOS": {"Info": {"Path": SYSTEM_OS}},
                             "Cryptex1,AppOS": {"Info": {"Path": APP_OS}}}}
    manifest = {"ProductVersion": "26.2.1", "ProductBuildVersion": "23C71", "SupportedProductTypes": ["iPhone13,2"],
                "BuildIdentities": [identity]}
    path = tmp_path_factory.mktemp("cryptex") / "cryptex.ipsw"
    with zipfile.ZipFile(path, "w") as archive:  # stored, as Apple ships IPSWs
        archive.writestr("BuildManifest.plist", plistlib.dumps(manifest))
        archive.writestr(SYSTEM_OS, member_bytes(BIG, 1))
        archive.writestr(APP_OS, member_bytes(SMALL, 2))
    return path


def peak_in_child(measure: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run ``measure`` in a forked child; its result plus the child's peak RSS growth, in KiB."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reports through the pipe, never returns
        code = 1
        try:
            Path("/proc/self/clear_refs").write_text("5")  # peak RSS := RSS now (Linux >= 4.0, proc(5))
            before = _vm_hwm_kb()
            result = asyncio.run(measure())
            os.write(write_fd, json.dumps({**result, "peak_kb": _vm_hwm_kb() - before}).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as report:
        data = report.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data, "the measuring child failed"
    return json.loads(data)


def _vm_hwm_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


def send_v4(ipsw: Path, make_restore, fake_irecv, pipe, image: str, handler: str) -> dict[str, Any]:
    async def measure() -> dict[str, Any]:
        bars.install(pipe.reporter)  # in the child only: no rich bar on either side
        fake_irecv.hardware_model = "d53gap"
        restore = make_restore(ipsw, real.Device(irecv=fake_irecv))
        service = WireService()
        restore._restored = RestoredClient("udid", "15", service)  # no DataPort: restored's own connection
        message = {**MESSAGE, "Arguments": {**MESSAGE["Arguments"], "ImageName": image}}
        if handler == "pymobiledevice3":
            await Restore.send_source_boot_object_v4(restore, message)
        else:
            await restore.handle_data_request_msg(message)  # the worker's dispatch
        return {"wire": service.wire.hexdigest(), "bytes": service.bytes}

    return peak_in_child(measure)


def test_cryptex_goes_out_as_the_same_plists_without_being_held_in_memory(cryptex_ipsw, make_restore,
                                                                         fake_irecv, pipe):
    old = send_v4(cryptex_ipsw, make_restore, fake_irecv, pipe, "Cryptex1,SystemOS", "pymobiledevice3")
    new = send_v4(cryptex_ipsw, make_restore, fake_irecv, pipe, "Cryptex1,SystemOS", "worker")
    new_small = send_v4(cryptex_ipsw, make_restore, fake_irecv, pipe, "Cryptex1,AppOS", "worker")
    print(f"\nSourceBootObjectV4 of a {BIG >> 20} MiB member, peak RSS growth: pymobiledevice3 "
          f"{old['peak_kb'] / 1024:.1f} MiB, worker {new['peak_kb'] / 1024:.1f} MiB "
          f"(worker on a {SMALL >> 20} MiB member: {new_small['peak_kb'] / 1024:.1f} MiB)")

    assert (new["wire"], new["bytes"]) == (old["wire"], old["bytes"])
    assert new["bytes"] > BIG
    assert new["peak_kb"] < old["peak_kb"] / 4
    assert old["peak_kb"] > BIG >> 10  # the old one holds the member
    assert abs(new["peak_kb"] - new_small["peak_kb"]) < 4 << 10  # 4x the member, not 4x the memory
