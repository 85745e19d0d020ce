"""IPSW members as seekable file objects, read in place (no extraction to disk).

Python 3.11's ``ZipExtFile.seek`` reads (and for a backward seek re-reads) the
data up to the target, so ASR's SEEK_END + tell + SEEK_SET 0 on an 8 GB OS image
would read it twice before sending a byte. IPSW members are stored, not
deflated, so their bytes sit at a fixed offset in the file: ``StoredMember``
maps reads to ``os.pread`` at that offset, which makes a seek O(1). Deflated
members fall back to zipfile's sequential reader.

Below both the station's IPSW cache and the restore worker, which reads the OS image
from here; the cache's other errors (station.ipsw.errors) derive from ``IpswError``.
"""
from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from ipsw_parser.ipsw import IPSW


class IpswError(Exception):
    """Bad input or a failed step; the cache is left as it was."""


class NoMember(IpswError, KeyError):
    """The IPSW has no such member: a KeyError too, as ``zipfile`` says it, for the readers
    (pymobiledevice3, ipsw_parser) that treat some members as optional."""

    def __str__(self) -> str:
        return str(self.args[0])  # not KeyError's repr() of the message


_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name length, extra field length
_LOCAL_SIGNATURE = b"PK\x03\x04"


# What zipfile raises on a damaged archive besides BadZipFile: a bad central directory can
# give a negative seek (ValueError) or a name that is not UTF-8 (UnicodeDecodeError, a ValueError);
# a damaged member a zlib.error, EOFError (the stream ends early), NotImplementedError (an unknown
# compression method) or RuntimeError (the encrypted flag).
_ZIP_ERRORS = (zipfile.BadZipFile, ValueError, EOFError, struct.error, NotImplementedError)
_MEMBER_ERRORS = (*_ZIP_ERRORS, zlib.error, RuntimeError, OSError)

_pread = os.pread
# The most one read/pread/preadv moves on Linux, whatever is asked (read(2), NOTES): a member over
# 2 GiB takes more than one call.
_MAX_IO = 0x7FFFF000


class StoredMember(io.RawIOBase):
    """Bytes [start, start + size) of an open file descriptor, which this object owns."""

    def __init__(self, fd: int, start: int, size: int, name: str) -> None:
        super().__init__()
        self._fd, self._start, self._size, self.name = fd, start, size, name
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        # The restore's hot loop (an 8 GB image in 128 KiB reads): pread straight into a new
        # bytes object, one copy like dd's read(), and as few Python steps as can be.
        pos = self._pos
        left = self._size - pos
        if size is None or size < 0 or size > left:
            size = left
        if size <= 0 or self._fd < 0:
            return self._empty_read()
        if size <= _MAX_IO:
            data = _pread(self._fd, size, self._start + pos)
            if len(data) == size:
                self._pos = pos + size
                return data
        return self._gather(size, pos)

    def _gather(self, size: int, pos: int) -> bytes:
        """More than one call can move, or a short read: loop through readinto (which raises at a real EOF).

        io.BufferedReader reads a request larger than its buffer straight into the bytes object it
        returns: one allocation of ``size``, where io.RawIOBase.read would hold two (2 x 2 GiB).
        """
        gatherer = io.BufferedReader(self)
        try:
            data = gatherer.read(size)
        finally:
            gatherer.detach()
        self._pos = pos + len(data)  # its last block may have read ahead
        return data

    def _empty_read(self) -> bytes:
        if self._fd < 0:
            raise ValueError("I/O operation on closed file")
        return b""

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        want = min(len(view), max(0, self._size - self._pos))
        if self._fd < 0:
            raise ValueError("I/O operation on closed file")
        done = 0
        while done < want:  # Linux moves at most _MAX_IO bytes per call: a short count is not the end
            got = os.preadv(self._fd, [view[done:want]], self._start + self._pos + done)
            if got == 0:
                self._short(self._pos + done)
            done += got
        self._pos += done
        return done

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        super().close()

    def _short(self, at: int) -> None:
        # The file shrank under us: never hand out a silently short member.
        raise IpswError(f"{self.name}: IPSW truncated at member offset {at}")


class IpswArchive:
    """The member list of one IPSW; what ipsw_parser's ``IPSW`` reads an archive through."""

    def __init__(self, path: Path | str, label: str | None = None) -> None:
        """``label`` names the file in error messages (default: its name)."""
        self.path = Path(path)
        self.label = label or self.path.name
        try:
            with zipfile.ZipFile(self.path) as archive:
                self._members = {info.filename: info for info in archive.infolist()}
            size = self.path.stat().st_size
        except _ZIP_ERRORS:
            raise IpswError(f"{self.label}: not a complete zip archive (truncated, or not an IPSW)") from None
        except OSError as error:
            raise IpswError(f"{self.label}: {error.strerror or error}") from None
        if any(info.header_offset + info.compress_size > size for info in self._members.values()):
            raise IpswError(f"{self.label}: zip members run past the end of the file (truncated)")

    @property
    def filelist(self) -> list[zipfile.ZipInfo]:
        return list(self._members.values())

    def namelist(self) -> list[str]:
        return list(self._members)

    def getinfo(self, name: str) -> zipfile.ZipInfo | None:
        return self._members.get(name)

    def read_small(self, name: str, limit: int) -> bytes:
        """A small member read through zipfile (which checks its CRC, stored or deflated), at most ``limit`` + 1
        bytes whatever its header says; IpswError when it cannot be read."""
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(name) as member:
                return member.read(limit + 1)
        except KeyError:
            raise IpswError(f"{self.label}: no member {name}") from None
        except _MEMBER_ERRORS as error:
            raise IpswError(f"{self.label}: {name} cannot be read from the zip ({error})") from None

    def open(self, name: str) -> BinaryIO:
        info = self._members.get(name)
        if info is None:
            raise NoMember(f"{self.label}: no member {name}")
        if info.compress_type != zipfile.ZIP_STORED:
            return self._open_deflated(info)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            header = os.pread(fd, _LOCAL_HEADER.size, info.header_offset)
            if len(header) < _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
                raise IpswError(f"{self.label}: bad zip header for {name}")
            name_length, extra_length = _LOCAL_HEADER.unpack(header)[1:]
            start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
            return StoredMember(fd, start, info.file_size, name)  # type: ignore[return-value]
        except BaseException:
            os.close(fd)
            raise

    def read(self, name: str) -> bytes:
        with self.open(name) as member:
            return member.read()

    def _open_deflated(self, info: zipfile.ZipInfo) -> BinaryIO:
        # The member keeps the zip's file open after the ZipFile itself is closed.
        with zipfile.ZipFile(self.path) as archive:
            return archive.open(info)  # type: ignore[return-value]


def open_member(ipsw_path: Path | str, member_name: str) -> BinaryIO:
    """One member of the IPSW as a read-only file object; close it when done."""
    return IpswArchive(ipsw_path).open(member_name)


def open_for_restore(path: Path | str) -> IPSW:
    """An ipsw_parser ``IPSW`` for pymobiledevice3's ``Restore(ipsw, ...)``, reading through this module.

    ``IPSW.open_path`` (ASR's OS image) and ``IPSW.read`` go to ``IpswArchive.open``, so
    the restore's seeks on the OS image are O(1). ``extractall`` is not provided: the
    restore never extracts.
    """
    return IPSW(IpswArchive(path))  # type: ignore[arg-type]
