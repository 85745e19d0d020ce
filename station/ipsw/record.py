"""The verification result kept beside each cached IPSW, so a restart does not re-hash 8 GB.

``NAME.ipsw.verify.json`` holds the file's size, mtime, inode and ctime when it
was checked; any difference makes the record stale and the file must be verified
again before use. The mtime alone is not enough: ``touch -r``, ``cp -p`` or an
edit that puts the mtime back keep it, but the kernel sets the ctime on every
change and nobody can set it back. A rename changes the ctime too, so ``add``
saves the record again once the file has its final name. A record without these
two fields (an older station) is stale: the file is hashed once more.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from station.ipsw.files import write_atomic

SUFFIX = ".verify.json"

State = Literal["verified", "unlisted", "failed"]  # unlisted: accepted with --trust-unlisted


@dataclass(frozen=True)
class Record:
    state: State
    size: int
    mtime_ns: int
    checked_at: str
    build: str = ""
    version: str = ""
    models: tuple[str, ...] = ()
    sha1: str = ""
    sha256: str = ""
    reason: str = ""  # why it failed, or where the published digests came from
    inode: int = 0
    ctime_ns: int = 0
    source: str = ""  # the URL (or path) it was added from: an add of the same URL again is no new file

    @property
    def usable(self) -> bool:
        return self.state in ("verified", "unlisted")

    def is_current(self, stat: os.stat_result) -> bool:
        return (self.size, self.mtime_ns, self.inode, self.ctime_ns) == fingerprint(stat)


def fingerprint(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What must not change between a hash and the use of its result: size, mtime, inode, ctime."""
    return stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns


def path_for(ipsw: Path) -> Path:
    return ipsw.with_name(ipsw.name + SUFFIX)


def load(ipsw: Path) -> Record | None:
    """The stored record, or None when there is none or it cannot be read (then: verify again)."""
    try:
        raw = json.loads(path_for(ipsw).read_text())
        return Record(**{**raw, "models": tuple(raw.get("models", ()))})
    except (OSError, ValueError, TypeError):
        return None


def save(ipsw: Path, record: Record) -> None:
    write_atomic(path_for(ipsw), json.dumps(asdict(record), indent=1).encode())
