"""Peak memory of one real-path restore worker: a per-restore budget, measured side by side.

    .venv/bin/python -m bench.restore_memory [--dir /var/tmp] [--os-bytes N] [--system-cryptex-bytes N] ...

A forked child (as the fork server forks workers, after the same imports) runs the steps of a
restore that move IPSW data, each through pymobiledevice3's own code with only the phone faked
at its boundary: the personalised uploads of the recovery phase (Recovery.send_component: read,
stitch, then IRecv.send_buffer, here a no-op), SourceBootObjectV4 for the system cryptex
(restored's FileData plists, hashed, not sent) and SystemImageData (ASR, the OS image). Each
step's peak RSS growth is read from /proc/self/status VmHWM after resetting it
(/proc/self/clear_refs "5"). The cryptex step runs twice: pymobiledevice3's handler, then the
worker's. Sizes are parameters; the defaults are the sizes named below with their sources,
never measured here. The big members are sparse (holes read as zeros): memory, not speed.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import plistlib
import sys
import tempfile
import zipfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asn1
from pyimg4 import IM4P
from pymobiledevice3.restore import asr
from pymobiledevice3.restore.restore import Restore
from pymobiledevice3.restore.restored_client import RestoredClient
from pymobiledevice3.restore.tss import TSSResponse
from pymobiledevice3.service_connection import build_plist

from hw.ipsw_archive import open_for_restore
from hw.worker import bars, real
from hw.worker.reporter import Reporter

# Default sizes, in bytes, each from a public restore log or the project's own figure:
RAMDISK = 148_908_387  # "Sending RestoreRamDisk (148908387 bytes)": idevicerestore issue #675 (iOS 18, d64ap)
KERNELCACHE = 17_946_256  # "Sending RestoreKernelCache (17946256 bytes)": same log
SEP = 6_976_095  # "Sending RestoreSEP (6976095 bytes)": same log
SYSTEM_CRYPTEX = 1_677_721_600  # "Sending Cryptex1,SystemOS now (1677721600 bytes)": idevicerestore issue #736
OS_IMAGE = 8_700_000_000  # hw.worker.request.SimParams.image_bytes (the project's iOS 18 figure, not measured)

PATHS = {"RestoreRamDisk": "ramdisk.dmg", "RestoreKernelCache": "kernelcache.release", "RestoreSEP": "sep.im4p",
         "Cryptex1,SystemOS": "system-cryptex.dmg.aea", "OS": "os.dmg"}
FOURCC = {"RestoreRamDisk": "rdsk", "RestoreKernelCache": "krnl", "RestoreSEP": "sepi"}
V4 = {"MsgType": "DataRequestMsg", "DataType": "SourceBootObjectV4",
      "Arguments": {"ImageName": "Cryptex1,SystemOS", "Variant": "Erase"}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restore_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temp IPSW (default: $TMPDIR)")
    parser.add_argument("--ramdisk-bytes", type=int, default=RAMDISK)
    parser.add_argument("--kernelcache-bytes", type=int, default=KERNELCACHE)
    parser.add_argument("--sep-bytes", type=int, default=SEP)
    parser.add_argument("--system-cryptex-bytes", type=int, default=SYSTEM_CRYPTEX)
    parser.add_argument("--os-bytes", type=int, default=OS_IMAGE)
    args = parser.parse_args(argv)
    sizes = {"RestoreRamDisk": args.ramdisk_bytes, "RestoreKernelCache": args.kernelcache_bytes,
             "RestoreSEP": args.sep_bytes, "Cryptex1,SystemOS": args.system_cryptex_bytes, "OS": args.os_bytes}
    with tempfile.TemporaryDirectory(prefix="bench-restore-memory-", dir=args.dir) as temp:
        path = Path(temp) / "bench.ipsw"
        generate(path, sizes)
        print(f"IPSW: {', '.join(f'{name} {size / 1e6:.0f} MB' for name, size in sizes.items())} "
              f"({path.stat().st_blocks * 512 / 1e6:.0f} MB on disk)")
        steps = in_forked_worker(lambda: run_steps(path))
    for step in steps:
        print(f"{step['step']:<58} peak RSS growth {step['peak_kb'] / 1024:8.1f} MiB "
              f"(RSS before {step['rss_before_kb'] / 1024:.1f} MiB)")
    worker = [s for s in steps if "pymobiledevice3's handler" not in s["step"]]
    budget = max(s["rss_before_kb"] - steps[0]["rss_before_kb"] + s["peak_kb"] for s in worker)
    print(f"{'one worker at peak, above the fork server it shares':<58} {budget / 1024:24.1f} MiB")
    return 0


def generate(path: Path, sizes: dict[str, int]) -> None:
    identity = {"Info": {"DeviceClass": "d64ap", "Variant": "Customer Erase Install (IPSW)",
                         "RestoreBehavior": "Erase"},
                "Manifest": {name: {"Info": {"Path": member}} for name, member in PATHS.items()}}
    manifest = {"ProductVersion": "18.0", "ProductBuildVersion": "22A3354", "SupportedProductTypes": ["iPhone14,3"],
                "BuildIdentities": [identity]}
    with _SparseFile(path, "w") as out, zipfile.ZipFile(out, "w") as archive:  # stored, as Apple ships IPSWs
        archive.writestr("BuildManifest.plist", plistlib.dumps(manifest))
        for name, fourcc in FOURCC.items():
            archive.writestr(PATHS[name], IM4P(fourcc=fourcc, description=name, payload=bytes(sizes[name])).output())
        zeros = bytes(64 << 20)
        for name, head in (("Cryptex1,SystemOS", b"AEA1"), ("OS", b"")):
            with archive.open(zipfile.ZipInfo(PATHS[name]), "w", force_zip64=True) as member:
                left = sizes[name] - member.write(head)
                while left:
                    left -= member.write(zeros[:min(left, len(zeros))])


class _SparseFile(io.FileIO):
    """A file whose all-zero writes become holes: a multi-GB member costs no disk (like cp --sparse)."""

    def write(self, data: Any) -> int:
        if isinstance(data, bytes) and len(data) >= 1 << 20 and data.count(0) == len(data):
            self.seek(len(data), os.SEEK_CUR)
            return len(data)
        return super().write(data)


def in_forked_worker(work: Callable[[], Awaitable[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.write(write_fd, json.dumps(asyncio.run(work())).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as report:
        data = report.read()
    _, status = os.waitpid(pid, 0)
    if status or not data:
        raise SystemExit("the measuring worker failed")
    return json.loads(data)


async def run_steps(path: Path) -> list[dict[str, Any]]:
    reporter = Reporter(os.open(os.devnull, os.O_WRONLY))
    bars.install(reporter)
    restore = real.ReportingRestore(open_for_restore(str(path)), real.Device(irecv=_Phone()), reporter)
    restore.recovery.tss = TSSResponse({"ApImg4Ticket": synthetic_im4m()})
    restore._restored = RestoredClient("udid", "18", _HashingService())
    asr.ServiceConnection = _AsrPhone  # type: ignore[misc,assignment]  # ASRClient.connect opens this
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        (f"recovery: personalise + upload {name}", lambda name=name: restore.recovery.send_component(name))
        for name in FOURCC]
    steps += [("SourceBootObjectV4 Cryptex1,SystemOS, pymobiledevice3's handler",
               lambda: Restore.send_source_boot_object_v4(restore, V4)),
              ("SourceBootObjectV4 Cryptex1,SystemOS, the worker's", lambda: restore.handle_data_request_msg(V4)),
              ("SystemImageData (ASR, OS image)", lambda: restore.send_filesystem({"DataType": "SystemImageData"}))]
    results = []
    for name, step in steps:
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := RSS now (proc(5), Linux >= 4.0)
        before = _status_kb("VmRSS")
        await step()
        results.append({"step": name, "rss_before_kb": before, "peak_kb": _status_kb("VmHWM") - before})
    return results


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def synthetic_im4m() -> bytes:
    """An Image4 manifest pyimg4 parses and re-encodes (one property, one image; the signature is filler)."""
    encoder = asn1.Encoder()
    encoder.start()
    with encoder.construct(asn1.Numbers.Sequence):
        encoder.write("IM4M", asn1.Numbers.IA5String)
        encoder.write(0, asn1.Numbers.Integer)
        with encoder.construct(asn1.Numbers.Set), encoder.construct(_tag("MANB"), asn1.Classes.Private), \
                encoder.construct(asn1.Numbers.Sequence):
            encoder.write("MANB", asn1.Numbers.IA5String)
            with encoder.construct(asn1.Numbers.Set):
                _section(encoder, "MANP", "ECID", 0x1234, asn1.Numbers.Integer)
                _section(encoder, "rdsk", "DGST", bytes(48), asn1.Numbers.OctetString)
        encoder.write(bytes(64), asn1.Numbers.OctetString)
        with encoder.construct(asn1.Numbers.Sequence):
            encoder.write(b"certificates", asn1.Numbers.OctetString)
    return encoder.output()


def _tag(fourcc: str) -> int:
    return int.from_bytes(fourcc.encode(), "big")


def _section(encoder: asn1.Encoder, name: str, key: str, value: Any, kind: asn1.Numbers) -> None:
    with encoder.construct(_tag(name), asn1.Classes.Private), encoder.construct(asn1.Numbers.Sequence):
        encoder.write(name, asn1.Numbers.IA5String)
        with encoder.construct(asn1.Numbers.Set), encoder.construct(_tag(key), asn1.Classes.Private), \
                encoder.construct(asn1.Numbers.Sequence):
            encoder.write(key, asn1.Numbers.IA5String)
            encoder.write(value, kind)


class _Phone:
    """What pymobiledevice3 reads from an IRecv in recovery mode; uploads go nowhere."""

    ecid, hardware_model, product_type = 0x1234, "d64ap", "iPhone14,3"
    is_image4_supported, ap_nonce, sep_nonce = True, bytes(32), bytes(20)

    def send_buffer(self, buf: bytes, desc: str | None = None) -> None:
        pass


class _HashingService:
    """restored's connection at send_plist: what would go on the wire is hashed, not kept."""

    def __init__(self) -> None:
        self.wire = hashlib.sha256()

    async def send_plist(self, d: dict[str, Any], endianity: str = ">", fmt: Any = plistlib.FMT_XML) -> None:
        self.wire.update(build_plist(d, endianity, fmt))

    async def recv_plist(self, endianity: str = ">") -> dict[str, Any]:
        return {"MsgType": "ProgressMsg"}  # no URLAsset asked for after the AEA header


class _AsrPhone:
    """restored's ASR port: Initiate, two out-of-band reads near the end, then the payload (discarded)."""

    @classmethod
    async def create_using_usbmux(cls, *args: Any, **kwargs: Any) -> _AsrPhone:
        return cls()

    def __init__(self) -> None:
        self._replies = [{"Command": "Initiate", "Checksum Chunks": True}]
        self._out = b""

    async def recvall(self, size: int) -> bytes:
        if not self._out:
            self._out = plistlib.dumps(self._replies.pop(0))
        data, self._out = self._out[:size], self._out[size:]
        return data

    async def sendall(self, data: bytes) -> None:
        if data.startswith(b"<?xml") and b"Payload" in data:  # the host's stream description: ask for OOB data
            size = plistlib.loads(data)["Payload"]["Size"]
            self._replies += [{"Command": "OOBData", "OOB Offset": size - 4096, "OOB Length": 4096},
                              {"Command": "OOBData", "OOB Offset": 1024, "OOB Length": 1024},
                              {"Command": "Payload"}]

    async def close(self) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main())
