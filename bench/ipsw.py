"""IPSW cache benchmarks (issue 4): four ratios measured side by side on one synthetic multi-GB IPSW.

    .venv/bin/python -m bench.ipsw [--size-gib 3] [--dir /var/tmp] [--repeat 5]

The IPSW is generated in a temp dir (stored members plus a real BuildManifest from
../shared/data when it is there, a synthetic one otherwise) and deleted afterwards.
Each line prints a ratio and its goal; nothing asserts on absolute times.
"""
from __future__ import annotations

import argparse
import io
import os
import plistlib
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from hw.ipsw_archive import open_member
from station.ipsw.digest import file_digests

CHUNK = 128 * 1024  # the restore's ASR chunk size
SHARED_MANIFEST = (Path(__file__).resolve().parents[2] / "shared" / "data" / "buildmanifests" /
                   "iOS26.2.1_23C71_iPhone13-2_iPhone13-3.BuildManifest.plist")
OS_MEMBER = "bench-os.dmg"

# Run in a fresh interpreter so the figure is the reader's, not this benchmark's.
RSS_PROBE = """
import resource, sys
from hw.ipsw_archive import open_member
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open_member(sys.argv[1], sys.argv[2]) as member:
    while member.read(131072):
        pass
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ipsw", description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=3.0, help="size of the OS image member (default 3)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temp IPSW (default: $TMPDIR)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement; the best one counts")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ipsw-", dir=args.dir) as temp:
        path = Path(temp) / "bench.ipsw"
        started = time.perf_counter()
        manifest_source = generate(path, int(args.size_gib * 2**30))
        os.sync()  # no write-back of the new file while the measurements run
        print(f"generated {path.stat().st_size / 2**30:.2f} GiB IPSW ({manifest_source}) "
              f"in {time.perf_counter() - started:.1f} s")
        run_all(path, args.repeat)
    return 0


def generate(path: Path, os_size: int) -> str:
    """Write the IPSW; returns where its BuildManifest came from."""
    if SHARED_MANIFEST.is_file():
        manifest, source = SHARED_MANIFEST.read_bytes(), f"real manifest {SHARED_MANIFEST.name}"
    else:
        manifest, source = _synthetic_manifest(), "synthetic manifest (../shared absent)"
    block = os.urandom(64 * 2**20)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("BuildManifest.plist", manifest, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("Firmware/all_flash/small.im4p", os.urandom(2**20))
        with archive.open(zipfile.ZipInfo(OS_MEMBER), "w", force_zip64=True) as member:
            left = os_size
            while left:
                left -= member.write(block[:min(left, len(block))])
    return source


def _synthetic_manifest() -> bytes:
    info = {"DeviceClass": "d27ap", "RestoreBehavior": "Erase", "Variant": "Customer Erase Install (IPSW)"}
    return plistlib.dumps({"ProductVersion": "18.0.1", "ProductBuildVersion": "22A3370",
                           "SupportedProductTypes": ["iPhone14,7"],
                           "BuildIdentities": [{"ApChipID": "0x8110", "ApBoardID": "0x18", "Info": info,
                                                "Manifest": {"OS": {"Info": {"Path": OS_MEMBER}}}}]})


def run_all(path: Path, repeat: int) -> None:
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(OS_MEMBER)
    with open_member(path, OS_MEMBER) as member:
        offset = member._start  # noqa: SLF001 (dd must read exactly the member's bytes)
    size = info.file_size
    _dd(path, offset, size)  # warm the page cache for both sides

    dd, reader = _side_by_side(repeat, lambda: _dd(path, offset, size), lambda: _stream(path))
    _line("stream 128 KiB chunks, dd time / reader time", dd / reader, ">= 0.95",
          f"reader {size / reader / 1e6:.0f} MB/s, dd {size / dd / 1e6:.0f} MB/s")

    seek = _best(repeat, lambda: _seek_end_and_back(open_member(path, OS_MEMBER)))
    stdlib = _best(1, lambda: _seek_end_and_back(zipfile.ZipFile(path).open(OS_MEMBER)))
    _line("seek to end and back, zipfile time / reader time", stdlib / seek, "reader < 1 ms",
          f"reader {seek * 1e6:.1f} us, zipfile {stdlib * 1e3:.0f} ms")

    ours, openssl = _side_by_side(repeat, lambda: _timed(lambda: file_digests(path)),
                                  lambda: _run("openssl", "dgst", "-sha256", str(path)))
    coreutils = _run("sha1sum", str(path)) + _run("sha256sum", str(path))  # a side figure: one run
    _line("SHA-1 + SHA-256 in one pass, openssl sha256 time / ours", openssl / ours, ">= 0.85",
          f"ours {path.stat().st_size / ours / 1e6:.0f} MB/s; vs sha1sum then sha256sum: {coreutils / ours:.2f}")

    base, grown = (int(kib) / 1024 for kib in subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(path), OS_MEMBER], check=True, capture_output=True,
        text=True).stdout.split())
    _line("peak RSS above baseline while streaming the whole member (MB)", grown, "< 50 MB",
          f"baseline {base:.0f} MB, member {size / 2**30:.2f} GiB")


def _stream(path: Path) -> float:
    started = time.perf_counter()
    with open_member(path, OS_MEMBER) as member:
        read = member.read
        while read(CHUNK):
            pass
    return time.perf_counter() - started


def _dd(path: Path, offset: int, size: int) -> float:
    return _run("dd", f"if={path}", "of=/dev/null", "bs=128K", "iflag=skip_bytes,count_bytes",
                f"skip={offset}", f"count={size}", "status=none")


def _seek_end_and_back(member: io.BufferedIOBase) -> float:
    """ASR's pattern: SEEK_END, tell, SEEK_SET 0."""
    with member:
        started = time.perf_counter()
        member.seek(0, io.SEEK_END)
        member.tell()
        member.seek(0)
        return time.perf_counter() - started


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _run(*command: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _side_by_side(repeat: int, first: Callable[[], float], second: Callable[[], float]) -> tuple[float, float]:
    """Best of ``repeat`` runs each, taken in turns so that a busy moment hits both sides alike."""
    runs = [(first(), second()) for _ in range(max(repeat, 1))]
    return min(a for a, _ in runs), min(b for _, b in runs)


def _best(repeat: int, measure: Callable[[], float]) -> float:
    return min(measure() for _ in range(max(repeat, 1)))


def _line(what: str, value: float, goal: str, detail: str) -> None:
    print(f"{what:<62} {value:10.2f}   goal {goal:<14} ({detail})")


if __name__ == "__main__":
    sys.exit(main())
