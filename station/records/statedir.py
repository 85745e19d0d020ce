"""The state directory: created private, kept private, used by one station at a time.

It holds the station key, the records, pymobiledevice3's pair records (host
private keys, escrow bags) and the restore logs: nothing in it is for other
users. The station runs with umask 077 so that whatever it (or a library it
calls) creates there is 0600/0700, and ``secure`` repairs what an older run,
a restore from backup or a careless copy left readable.
"""
from __future__ import annotations

import fcntl
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = "station.lock"
PRIVATE_UMASK = 0o077


class RecordsUnavailable(Exception):
    """Records cannot be kept; the message is the one line the station shows."""


class StationBusy(Exception):
    """Another station process already uses this state directory."""


def prepare(state_dir: Path) -> Path:
    """Create ``state_dir`` (0700) if missing and check that it is writable."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise RecordsUnavailable(f"records unavailable: cannot create {state_dir}: "
                                 f"{error.strerror or error}") from None
    if not state_dir.is_dir():
        raise RecordsUnavailable(f"records unavailable: {state_dir} is not a directory")
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise RecordsUnavailable(f"records unavailable: {state_dir} is not writable")
    return state_dir


def secure(state_dir: Path) -> int:
    """Make the directory tree 0700 and every file in it 0600; returns how many were repaired.

    Symlinks are left alone (chmod would follow them out of the directory).
    """
    repaired: list[str] = []
    for path in (state_dir, *state_dir.rglob("*")):
        try:
            mode = path.lstat().st_mode
        except OSError:
            continue  # gone while walking (a restore log rotated)
        if stat.S_ISLNK(mode):
            continue
        wanted = 0o700 if stat.S_ISDIR(mode) else 0o600
        if stat.S_IMODE(mode) & ~wanted:
            try:
                path.chmod(stat.S_IMODE(mode) & wanted)
            except OSError as error:
                log.warning("cannot make %s private: %s", path, error.strerror)
                continue
            repaired.append(f"{path.relative_to(state_dir)} ({stat.S_IMODE(mode):o})")
    if repaired:
        log.warning("%s: made %d path(s) private that others could read: %s", state_dir,
                    len(repaired), ", ".join(repaired[:3]) + (", ..." if len(repaired) > 3 else ""))
    return len(repaired)


def lock(state_dir: Path) -> int:
    """Take the state directory for this process; the returned descriptor holds it until closed.

    An advisory ``flock``: the kernel drops it when the process dies, so a crash never
    leaves a stale lock behind.
    """
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip()
        os.close(fd)
        raise StationBusy(f"another station (pid {holder or '?'}) is running on {state_dir}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return fd
