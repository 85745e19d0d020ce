"""The verification result kept beside each cached IPSW, so a restart does not re-hash 8 GB.

``NAME.ipsw.verify.json`` holds the file's size and mtime when it was checked; a
different size or mtime makes the record stale and the file must be verified
again before use.
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

    @property
    def usable(self) -> bool:
        return self.state in ("verified", "unlisted")

    def is_current(self, stat: os.stat_result) -> bool:
        return (self.size, self.mtime_ns) == (stat.st_size, stat.st_mtime_ns)


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
