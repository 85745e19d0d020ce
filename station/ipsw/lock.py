"""One writer: advisory locks that keep `station ipsw ...` commands and a running station apart.

Three ``fcntl.flock`` locks, each for one kind of race:

- ``CacheLock`` (``.lock`` in the cache directory): shared while the cache is read to choose
  or check a file (a selection, a verify), exclusive while files come and go (an add's
  rename, remove, prune). A choice never sees a file half removed, and a removal never
  pulls a file out from under a choice.
- ``Lease`` (a shared lock on the IPSW itself): held by the station from the choice of a
  file until the restore that reads it ends. Remove and prune, under the exclusive cache
  lock, leave a leased file where it is (``in_use``); a lease is only taken under the
  shared cache lock, so the check and the unlink cannot be overtaken.
- ``claim`` (an exclusive lock on an add's part file): two adds of one name, say a
  provisioning script and the station's prefetch, never write the same part file.

flock locks belong to an open file description: two opens in one process exclude each
other as two processes do (the station's threads choose for several ports at once), and
a process that dies lets go of everything it held. Every descriptor is close-on-exec, so a
restore worker the station starts never inherits a lock.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from station.ipsw.errors import IpswError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class CacheLock:
    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Reading the cache: many at once, none while a writer changes it."""
        with self._held(fcntl.LOCK_SH, "read"):
            yield

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Changing the cache: one at a time, no reader meanwhile."""
        with self._held(fcntl.LOCK_EX, "change"):
            yield

    @contextmanager
    def _held(self, mode: int, what: str) -> Iterator[None]:
        try:
            # Read-only is enough to lock, and lets a user who may only read the cache list it.
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise IpswError(f"cannot lock the IPSW cache: {self.path}: {error.strerror or error} "
                            "(run station ipsw as the station's user)") from None
        try:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                # A writer is at work (an add's last step, a prune): seconds; a reader may be
                # verifying a file (minutes). Said once, so a waiting command is not taken for hung.
                log.warning("waiting to %s the IPSW cache: another station ipsw command or the station "
                            "is using it", what)
                fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # releases the lock


class Lease:
    """A hold on one cached IPSW while a restore reads it; ``release`` when the restore ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        # Never waits: the exclusive lock on a file is only ever tried (``in_use``), never held.
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.release()  # a lease nobody released (a restore task cancelled mid-choice) goes with it


def in_use(path: Path) -> bool:
    """Does a restore hold ``path`` (a ``Lease``)? Ask under the exclusive cache lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextmanager
def claim(part: Path, name: str) -> Iterator[None]:
    """The right to write ``part`` for an add of ``name``; IpswError when another add has it."""
    while True:
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IpswError(f"{name}: another add of this file is under way (a station ipsw add, or the "
                            "station's prefetch); run this one again when it is done") from None
        # The add before us may have finished and unlinked the part between our open and our lock:
        # then we hold a lock on a file nobody will find. Open the name again.
        try:
            same = os.stat(part).st_ino == os.fstat(fd).st_ino
        except OSError as error:
            if error.errno != errno.ENOENT:
                os.close(fd)
                raise
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)
