"""Bring an IPSW into a temp file in the cache: copy a path or download a URL, hashing as it goes.

The digests come out of the same pass that writes the file (``DualDigest`` with the
write as its sink), so adding an IPSW reads it once. A download that breaks
resumes with an HTTP Range request, in the same run (``retries``) or, as the part
file stays, in the next ``add`` of the same URL. What cannot get better by asking
again fails at once with one line and leaves no part: a bad URL, a host DNS does
not know, an HTTP error, a bad Content-Length, a server slower than ``MIN_RATE``.
"""
from __future__ import annotations

import errno
import http.client
import ipaddress
import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from station.ipsw.digest import Digests, DualDigest
from station.ipsw.errors import IpswError, printable, shown
from station.ipsw.files import write_atomic

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]  # (bytes done, total or None)

# A per-read timeout never fires on a server that sends a byte now and then: a download also fails
# when it brings less than MIN_RATE bytes/s over a window of RATE_WINDOW_S. 64 KiB/s is 34 hours
# for an 8 GB IPSW; a Pi 4 on ordinary broadband gets 100 times that.
MIN_RATE = 64 * 1024
RATE_WINDOW_S = 120.0

SCHEMES = ("http", "https")
MAX_URL_LENGTH = 2048
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # RFC 3986 3.1: a scheme, any case
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}")


class _Interrupted(Exception):
    """The connection ended before the last byte: worth a resume."""


class _Restart(Exception):
    """The part cannot be resumed (the server ignores Range, or the file changed): it was emptied."""


class DownloadInterrupted(IpswError):
    """Retries used up; the part file stays so that the next ``add`` resumes."""


def is_url(source: str) -> bool:
    """Does ``station ipsw add`` name a URL (``scheme://``, any scheme, any case) rather than a path?"""
    return _URL_START.match(source) is not None


def checked_url(url: str) -> str:
    """``url`` as it is sent: scheme in lower case, other characters than ASCII in its path and query
    percent-encoded as UTF-8 (RFC 3987 3.1, as a browser does); or IpswError saying what is wrong with it."""
    if " " in url or not url.isprintable():
        raise IpswError(f"{printable(url)}: a URL may not hold spaces or unprintable characters")
    if len(url) > MAX_URL_LENGTH:
        raise IpswError(f"{shown(url, 80)}: a URL longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (ValueError for a port that is not a number from 0 to 65535)
    except ValueError as error:
        raise IpswError(f"{url}: not a valid URL ({printable(str(error))})") from None
    if parts.scheme not in SCHEMES:
        raise IpswError(f"{url}: unsupported URL scheme {shown(parts.scheme)} (http or https only)")
    host = parts.hostname
    if not host:
        raise IpswError(f"{url}: no host in the URL")
    if not host.isascii():
        # Python's idna codec is IDNA 2003, which maps some names to another host than IDNA 2008 does
        # (faß.de): the operator writes the name DNS knows.
        raise IpswError(f"{url}: host {shown(host)} is not ASCII (write it as IDNA: xn--...)")
    if not _is_ip(host) and not all(map(_HOST_LABEL.fullmatch, host.removesuffix(".").split("."))):
        raise IpswError(f"{url}: host {shown(host)} is not a valid host name")
    return parts.scheme + re.sub(r"[^\x00-\x7f]+", lambda found: urllib.parse.quote(found[0]), url[len(parts.scheme):])


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def copy_file(source: Path, temp: Path, progress: Progress | None = None) -> Digests:
    total = source.stat().st_size
    with source.open("rb", buffering=0) as stream, _Writer(temp, truncate=True) as writer, DualDigest() as digest:
        try:
            digest.feed(stream.readinto, writer.write,  # type: ignore[arg-type]
                        (lambda done: progress(done, total)) if progress else None)
        except OSError as error:
            raise IpswError(f"{source}: read error: {error.strerror or error}") from None
        writer.sync()
        return digest.result()


def download(url: str, part: Path, timeout: float, retries: int, progress: Progress | None = None) -> Digests:
    """Download ``url`` (a ``checked_url``) into ``part``, resuming what ``part`` already holds."""
    validator_file = part.with_name(part.name + ".json")
    failures = 0
    while True:
        # No validator (server sent neither ETag nor Last-Modified): resume anyway, the digests judge.
        validator = _load_validator(validator_file, url)
        with _Writer(part, truncate=False) as writer, DualDigest() as digest:
            offset = digest.feed(writer.read_back)
            try:
                total = _fetch(url, offset, validator, writer, digest, validator_file, timeout, progress)
            except _Restart as why:
                log.info("download of %s starts over: %s", url, why)
                continue
            except _Interrupted as error:
                failures += 1
                done = writer.size
                if failures > retries:
                    if not done:  # nothing to resume: no part file either
                        raise IpswError(f"{url}: {error}") from None
                    raise DownloadInterrupted(f"{url}: download interrupted at {done} bytes ({error}); "
                                              f"run the same add again to resume") from None
                log.warning("download of %s interrupted at %d bytes (%s); resuming", url, done, error)
                time.sleep(min(2 ** failures, 30) / 10)
                continue
            writer.sync()
            if total is not None and writer.size != total:
                raise IpswError(f"{url}: got {writer.size} bytes, the server announced {total}")
            validator_file.unlink(missing_ok=True)
            return digest.result()


def _fetch(url: str, offset: int, validator: str | None, writer: _Writer, digest: DualDigest,
           validator_file: Path, timeout: float, progress: Progress | None) -> int | None:
    """One request from ``offset``; the total size, or _Interrupted when the stream ends early."""
    request = urllib.request.Request(url)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
        if validator:
            request.add_header("If-Range", validator)
    try:
        reply = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the part is already whole (or stale): start over
            writer.truncate()
            raise _Restart("range not satisfiable") from None
        raise IpswError(f"{url}: HTTP {error.code} {printable(str(error.reason))}") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, socket.gaierror):  # DNS does not know the host: asking again will not help
            host = urllib.parse.urlsplit(url).hostname
            raise IpswError(f"{url}: cannot resolve {host} ({error.reason.strerror or error.reason})") from None
        raise _Interrupted(str(error.reason)) from None
    except (http.client.InvalidURL, UnicodeError) as error:  # checked_url lets none through; in case
        raise IpswError(f"{url}: not a valid URL ({printable(str(error))})") from None
    except (OSError, http.client.HTTPException) as error:
        raise _Interrupted(str(error) or type(error).__name__) from None
    with reply:
        if offset and reply.status != 206:  # no resume from this server, or the file changed
            writer.truncate()
            raise _Restart("the server sent the whole file")
        length = reply.headers.get("Content-Length")
        if length is not None and not re.fullmatch(r"[0-9]{1,18}", length.strip()):
            raise IpswError(f"{url}: the server sent Content-Length {shown(length)}, not a size")
        total = offset + int(length) if length is not None else None
        new_validator = reply.headers.get("ETag") or reply.headers.get("Last-Modified")
        if new_validator:
            write_atomic(validator_file, json.dumps({"url": url, "validator": new_validator}).encode())
        try:
            digest.feed(_paced(reply, url), writer.write, (lambda done: progress(done, total)) if progress else None)
        except (OSError, http.client.HTTPException) as error:
            raise _Interrupted(str(error) or type(error).__name__) from None
        if total is not None and writer.size < total:
            raise _Interrupted(f"connection closed at {writer.size} of {total} bytes")
        return total


def _paced(reply: http.client.HTTPResponse, url: str) -> Callable[[memoryview], int]:
    """``reply.readinto`` that fails a server slower than MIN_RATE over each RATE_WINDOW_S.

    It reads with ``readinto1`` (one recv each) until the buffer is full, so that the rate is
    checked after every recv: ``readinto`` itself waits for the whole buffer, however slowly it fills.
    """
    window_start, window_bytes = time.monotonic(), 0

    def readinto(view: memoryview) -> int:
        nonlocal window_start, window_bytes
        filled = 0
        while filled < len(view):
            got = reply.readinto1(view[filled:])
            if not got:
                break
            filled += got
            window_bytes += got
            elapsed = time.monotonic() - window_start
            if elapsed >= RATE_WINDOW_S:
                if window_bytes < MIN_RATE * elapsed:
                    raise IpswError(f"{url}: too slow: {window_bytes} bytes in {elapsed:.1f} s, less than "
                                    f"{MIN_RATE} bytes/s (try again later, or another mirror)")
                window_start, window_bytes = time.monotonic(), 0
        return filled

    return readinto


def _load_validator(path: Path, url: str) -> str | None:
    """The ETag/Last-Modified the part was downloaded under; None (start over) when unknown."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved.get("validator") if saved.get("url") == url else None


class _Writer:
    """The temp file; a failed write is worded for the operator (disk full) and never retried."""

    def __init__(self, path: Path, truncate: bool) -> None:
        self.path = path
        # Private whatever the umask of whoever runs `ipsw add`: the station would otherwise make
        # it private at its start, and that chmod changes the ctime its verification relies on.
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0), 0o600)
        self._read_pos = 0
        self.size = 0 if truncate else os.fstat(self._fd).st_size
        os.lseek(self._fd, self.size, os.SEEK_SET)

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def read_back(self, view: memoryview) -> int:
        """What the file already holds, for the digests of a resumed download."""
        got = os.preadv(self._fd, [view[:self.size - self._read_pos]], self._read_pos)
        self._read_pos += got
        return got

    def write(self, view: memoryview) -> None:
        try:
            while view:
                written = os.write(self._fd, view)
                self.size += written
                view = view[written:]
        except OSError as error:
            raise IpswError(_write_failure(self.path, error)) from None

    def truncate(self) -> None:
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self.size = 0

    def sync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as error:
            raise IpswError(_write_failure(self.path, error)) from None


def _write_failure(path: Path, error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full in {path.parent} while writing {path.name.lstrip('.')}"
    return f"cannot write {path}: {error.strerror or error}"
