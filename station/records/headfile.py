"""A second copy of the signed chain head, outside the database: ``records.head``.

The database's own head travels with the database: delete the WAL after a
crash, or put back an older copy of the file, and the head inside it is the
older one, signed and consistent. This file is written (atomically, fsynced)
after every commit that seals a record, so at start-up and in ``records
verify`` a database that ends before the head the station last wrote is named
as missing records instead of verifying "ok". Someone with root can replace
both: certificates, which carry the chain head at their issue, are the witness
for that (``records verify --against``).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from station.records import chain, keys

HEAD_FILE = "records.head"


@dataclass(frozen=True)
class Head:
    seq: int
    session_id: int
    digest: str
    message: str
    signature: str

    def signed_by(self, public: Ed25519PublicKey) -> bool:
        return keys.is_valid(public, self.message.encode("ascii"), self.signature)


def path_in(state_dir: Path) -> Path:
    return state_dir / HEAD_FILE


def write(state_dir: Path, message: str, signature: str) -> None:
    """Replace the head file in one rename, durable before returning."""
    data = json.dumps({"head": message, "signature": signature}).encode("ascii")
    fd, temp = tempfile.mkstemp(dir=state_dir, prefix=".records.head.")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path_in(state_dir))
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def read(state_dir: Path) -> Head | None:
    """The head last written, or None when there is none; ``ValueError`` when it is not one."""
    try:
        text = path_in(state_dir).read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path_in(state_dir)}: unreadable ({error})") from None
    try:
        data = json.loads(text)
        message, signature = data["head"], data["signature"]
        seq, session_id, digest = chain.parse_head(message)
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path_in(state_dir)}: not a chain head") from None
    return Head(seq, session_id, digest, message, signature)
