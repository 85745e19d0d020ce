"""A stored member over 2 GiB: Linux moves at most 0x7ffff000 bytes per pread/preadv call (read(2), NOTES).

The IPSW is written by hand as a sparse file (zip64 local header, a hole, central
directory and zip64 end records), so the test writes a few KB to disk whatever the
member's size.
"""
from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import pytest

from hw.ipsw_archive import open_member
from station.ipsw.errors import IpswError

NAME = "big.dmg"
LINUX_MAX_IO = 0x7FFFF000  # the most one read/pread/preadv moves on Linux
SIZE = 2**31 + 2**20  # past 2 GiB, so one read() needs more than one syscall
MARKERS = {0: b"AEA1head", LINUX_MAX_IO - 4: b"cap-", LINUX_MAX_IO: b"past-cap", 2**31: b"past-2GiB",
           SIZE - 8: b"lastbyte"}
ZIP64_EXTRA = struct.Struct("<HHQQ")  # header id 1, data size 16, uncompressed size, compressed size


def write_sparse_zip(path: Path, name: str, size: int, markers: dict[int, bytes]) -> int:
    """A one-member stored zip64 archive whose member data is a hole except for ``markers``.

    Returns the member's data offset. The CRC is 0: IpswArchive never checks it (zipfile
    checks CRCs only when it reads member data itself, which the reader never asks it to).
    """
    encoded = name.encode()
    extra = ZIP64_EXTRA.pack(1, 16, size, size)
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, 0, 0, 0x21, 0, 0xFFFFFFFF, 0xFFFFFFFF,
                        len(encoded), len(extra)) + encoded + extra
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, 0, 0, 0, 0x21, 0, 0xFFFFFFFF,
                          0xFFFFFFFF, len(encoded), len(extra), 0, 0, 0, 0, 0) + encoded + extra
    directory_at = len(local) + size
    zip64_end_at = directory_at + len(central)
    zip64_end = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, 1, 1, len(central), directory_at)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, zip64_end_at, 1)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), 0xFFFFFFFF, 0)
    with open(path, "wb") as out:
        out.write(local)
        for offset, data in markers.items():
            out.seek(len(local) + offset)
            out.write(data)
        out.seek(directory_at)  # whatever lies between is a hole: no disk blocks
        out.write(central + zip64_end + locator + end)
    return len(local)


@pytest.fixture(scope="module")
def big_ipsw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.ipsw"
    write_sparse_zip(path, NAME, SIZE, MARKERS)
    return path


def test_the_archive_is_sparse_and_zipfile_agrees(big_ipsw: Path) -> None:
    assert big_ipsw.stat().st_blocks * 512 < 2**20  # written: a few KB, not 2 GiB
    with zipfile.ZipFile(big_ipsw) as archive:
        assert archive.getinfo(NAME).file_size == SIZE


def check(data: bytes | bytearray, start: int = 0) -> None:
    assert len(data) == SIZE - start
    for offset, marker in MARKERS.items():
        if offset >= start:
            assert data[offset - start:offset - start + len(marker)] == marker, offset


def test_one_read_of_more_than_2_gib(big_ipsw: Path) -> None:
    # A 2.1 GB bytes object (plus the reader's buffer of the same size while it fills):
    # the price of proving one read() crosses Linux's per-call cap.
    with open_member(big_ipsw, NAME) as member:
        data = member.read()
        assert member.tell() == SIZE
    check(data)


def test_readinto_of_more_than_2_gib(big_ipsw: Path) -> None:
    start = 4096
    buffer = bytearray(SIZE - start)  # 2.1 GB, touched page by page as the kernel fills it
    with open_member(big_ipsw, NAME) as member:
        member.seek(start)
        assert member.readinto(buffer) == SIZE - start
        assert member.tell() == SIZE
    check(buffer, start)


def test_a_read_that_ends_early_still_names_the_offset(tmp_path: Path) -> None:
    # A genuine end of file (pread returns 0 before the member's end) is truncation, not a short read to retry.
    path = tmp_path / "cut.ipsw"
    data_at = write_sparse_zip(path, NAME, 10_000, {0: b"head"})
    with open_member(path, NAME) as member:
        os.truncate(path, data_at + 6000)
        with pytest.raises(IpswError, match="truncated at member offset 6000$"):
            member.readinto(bytearray(10_000))
        member.seek(100)
        with pytest.raises(IpswError, match="truncated at member offset 6000$"):
            member.read()
