"""Members read in place: O(1) seeks on stored members, also through pymobiledevice3's own code."""
from __future__ import annotations

import asyncio
import hashlib
import io
import os
import plistlib
import zipfile
from pathlib import Path

import pytest
from pymobiledevice3.restore.asr import ASR_PAYLOAD_CHUNK_SIZE, ASRClient

from hw import ipsw_archive as reader
from hw.ipsw_archive import IpswArchive, open_for_restore, open_member
from station.ipsw.errors import IpswError

from .factory import build_ipsw, os_bytes, os_member, synthetic_manifest

OS_SIZE = 3 * ASR_PAYLOAD_CHUNK_SIZE + 12345


@pytest.fixture
def ipsw(tmp_path: Path, shared_data_or_none: Path | None) -> Path:
    manifest = synthetic_manifest()
    if shared_data_or_none is not None:
        manifest = (shared_data_or_none / "buildmanifests" /
                    "iOS26.2.1_23C71_iPhone13-2_iPhone13-3.BuildManifest.plist").read_bytes()
    return build_ipsw(tmp_path / "t.ipsw", manifest, os_size=OS_SIZE)


@pytest.fixture
def shared_data_or_none(request: pytest.FixtureRequest) -> Path | None:
    """The real 23C71 manifest when ../shared is there; these tests run without it too."""
    try:
        return request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        return None


@pytest.fixture
def pread_bytes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes read from disk by the reader (os.pread/os.preadv), to prove seeks read nothing."""
    counted: list[int] = []
    real_pread, real_preadv = os.pread, os.preadv

    def pread(fd: int, n: int, offset: int) -> bytes:
        data = real_pread(fd, n, offset)
        counted.append(len(data))
        return data

    def preadv(fd: int, buffers: list, offset: int) -> int:
        got = real_preadv(fd, buffers, offset)
        counted.append(got)
        return got

    monkeypatch.setattr(reader, "_pread", pread)
    monkeypatch.setattr(os, "preadv", preadv)
    return counted


def test_stored_member_reads_and_seeks(ipsw: Path) -> None:
    expected = os_bytes(OS_SIZE)
    with open_member(ipsw, os_member(ipsw)) as member:
        assert member.seek(0, io.SEEK_END) == OS_SIZE and member.tell() == OS_SIZE
        assert member.read(10) == b""
        member.seek(-100, io.SEEK_END)
        assert member.read() == expected[-100:]
        member.seek(5)
        member.seek(7, io.SEEK_CUR)
        buffer = bytearray(1000)
        assert member.readinto(buffer) == 1000 and bytes(buffer) == expected[12:1012]
        member.seek(0)
        assert member.read() == expected
        with pytest.raises(ValueError):
            member.seek(-1)


def test_seek_to_the_end_reads_no_data(ipsw: Path, pread_bytes: list[int]) -> None:
    with open_member(ipsw, os_member(ipsw)) as member:
        pread_bytes.clear()  # the local header
        member.seek(0, io.SEEK_END)
        member.seek(0)
        member.seek(OS_SIZE - 10)
        assert member.read(10) == os_bytes(OS_SIZE)[-10:]
    assert sum(pread_bytes) == 10


def test_deflated_member_reads_sequentially(ipsw: Path) -> None:
    with open_member(ipsw, "BuildManifest.plist") as member:
        assert plistlib.loads(member.read())["BuildIdentities"]


def test_missing_member_and_truncated_zip_are_one_line(tmp_path: Path, ipsw: Path) -> None:
    with pytest.raises(IpswError, match="t.ipsw: no member nope"):
        open_member(ipsw, "nope")
    cut = tmp_path / "cut.ipsw"
    cut.write_bytes(ipsw.read_bytes()[: ipsw.stat().st_size // 2])
    with pytest.raises(IpswError, match="cut.ipsw: not a complete zip archive"):
        open_member(cut, "BuildManifest.plist")


def test_a_missing_member_is_a_key_error_as_zipfile_says(ipsw: Path) -> None:
    """pymobiledevice3 (restore.py send_nor) and ipsw_parser read optional members and fall back on
    KeyError or FileNotFoundError, as zipfile and a directory say: recent IPSWs have no
    Firmware/all_flash/manifest, and NORData then comes from the build identity."""
    restore_ipsw = open_for_restore(ipsw)
    with pytest.raises(KeyError):
        restore_ipsw.read("Firmware/all_flash/manifest")
    with pytest.raises(KeyError):
        restore_ipsw.get_firmware("Firmware/all_flash")


def test_a_file_that_shrinks_under_the_reader_is_an_error(tmp_path: Path, ipsw: Path) -> None:
    with open_member(ipsw, os_member(ipsw)) as member:
        os.truncate(ipsw, ipsw.stat().st_size - OS_SIZE // 2)
        member.seek(OS_SIZE - 10)
        with pytest.raises(IpswError, match="truncated"):
            member.read(10)


def test_ipsw_parser_reads_the_manifest_through_our_archive(ipsw: Path) -> None:
    restore_ipsw = open_for_restore(ipsw)
    assert isinstance(restore_ipsw.archive, IpswArchive)
    identity = restore_ipsw.build_manifest.build_identities[0]
    assert restore_ipsw.build_manifest.supported_product_types
    assert identity.get_component_path("OS") == os_member(ipsw)
    assert {m.filename for m in restore_ipsw.filelist} == set(zipfile.ZipFile(ipsw).namelist())


class _FakeAsrDevice:
    """restored's side of ASR: asks for OOB data near the end of the image, then takes the payload."""

    def __init__(self, oob: list[tuple[int, int]]) -> None:
        self._replies = [{"Command": "OOBData", "OOB Offset": o, "OOB Length": n} for o, n in oob]
        self._replies.append({"Command": "Payload"})
        self._out = b""
        self.received = bytearray()

    async def recvall(self, size: int) -> bytes:
        if not self._out:
            self._out = plistlib.dumps(self._replies.pop(0))
        data, self._out = self._out[:size], self._out[size:]
        return data

    async def sendall(self, data: bytes) -> None:
        self.received += data


def test_pymobiledevice3_asr_streams_the_os_image_with_o1_seeks(ipsw: Path, pread_bytes: list[int]) -> None:
    oob = [(OS_SIZE - 4096, 4096), (1000, 24), (OS_SIZE - 1, 1)]
    device = _FakeAsrDevice(oob)
    restore_ipsw = open_for_restore(ipsw)
    identity = restore_ipsw.build_manifest.build_identities[0]
    expected = os_bytes(OS_SIZE)

    async def run() -> None:
        client = ASRClient("udid")  # wants a running loop
        client._service = device  # type: ignore[assignment]
        client.checksum_chunks = True
        with restore_ipsw.open_path(identity.get_component_path("OS")) as filesystem:
            pread_bytes.clear()
            await client.perform_validation(filesystem)
            # SEEK_END + tell + OOB seeks read only the OOB bytes, not the image (zipfile would read it all)
            assert sum(pread_bytes) == sum(n for _, n in oob)
            device.received.clear()
            await client.send_payload(filesystem)

    asyncio.run(run())
    chunks = [expected[i:i + ASR_PAYLOAD_CHUNK_SIZE] for i in range(0, OS_SIZE, ASR_PAYLOAD_CHUNK_SIZE)]
    assert bytes(device.received) == b"".join(c + hashlib.sha1(c).digest() for c in chunks)
