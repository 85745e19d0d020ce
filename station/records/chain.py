"""The hash chain over closed sessions: an edited, inserted or deleted record is detected.

When a session closes it is *sealed*: it gets the next chain position ``seq``,
the id and hash of the record sealed before it (``prev_id``, ``prev_hash``),
and ``hash`` = SHA-256 of the canonical JSON of its content — every session
column but ``hash``, its transitions in order, and the SHA-256 of its
certificate. Editing any of these changes the hash; deleting a record leaves a
gap in ``seq`` and a ``prev_hash`` that no longer matches. The newest link, the
*head*, is signed with the station key, so cutting records off the end, or
rewriting the chain and recomputing every hash, is detected too — as long as
the key stays secret.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from station.records import db, keys

GENESIS = "0" * 64


def canonical(value: Any) -> bytes:
    """The one byte encoding that is hashed and signed: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def content_of(conn: sqlite3.Connection, session_id: int) -> dict[str, Any]:
    """What a record's hash covers, rebuilt from the database the same way when verifying."""
    content = db.session(conn, session_id)
    if content is None:
        raise KeyError(session_id)
    del content["hash"]
    for name in db.ADDED_COLUMNS:
        if content.get(name) is None:
            content.pop(name, None)  # as a record sealed before the column existed was hashed
    content["transitions"] = db.transitions(conn, session_id)
    document = db.certificate_text(conn, session_id)
    content["certificate_sha256"] = sha256(document) if document is not None else None
    return content


def record_hash(conn: sqlite3.Connection, session_id: int) -> str:
    return sha256(canonical(content_of(conn, session_id)))


def head_message(seq: int, session_id: int, digest: str) -> bytes:
    return f"station-records-head:{seq}:{session_id}:{digest}".encode("ascii")


def parse_head(message: str) -> tuple[int, int, str]:
    """(seq, session id, hash) of a head message; ``ValueError`` when it is not one."""
    if not isinstance(message, str):
        raise ValueError("not a chain head")
    name, seq, session_id, digest = message.split(":")
    if name != "station-records-head":
        raise ValueError("not a chain head")
    return int(seq), int(session_id), digest


def current_head(conn: sqlite3.Connection) -> tuple[int, int | None, str]:
    """(seq, session id, hash) of the newest sealed record; (0, None, GENESIS) before the first."""
    last = conn.execute("SELECT id, seq, hash FROM sessions "
                        "WHERE seq = (SELECT max(seq) FROM sessions)").fetchone()
    return (last["seq"], last["id"], last["hash"]) if last else (0, None, GENESIS)


OPENING_FIELDS = ("id", "slot", "started_at", "udid", "ecid", "serial", "model")


def sign_opening(conn: sqlite3.Connection, key: Ed25519PrivateKey, session: dict[str, Any]) -> None:
    """Sign a session as the station opens it (meta ``opened:<id>``, dropped when it is sealed).

    An open row is outside the chain until it closes; without this, a row inserted into the
    database would be sealed, hashed and signed by the next start-up as if it were the station's.
    """
    db.set_meta(conn, f"opened:{session['id']}", keys.sign(key, _opening(session)))


def opened_by_station(conn: sqlite3.Connection, public: Ed25519PublicKey,
                      session: dict[str, Any]) -> bool:
    signature = db.get_meta(conn, f"opened:{session['id']}")
    return signature is not None and keys.is_valid(public, _opening(session), signature)


def _opening(session: dict[str, Any]) -> bytes:
    return canonical({"opened": {name: session.get(name, "") for name in OPENING_FIELDS}})


def seal(conn: sqlite3.Connection, key: Ed25519PrivateKey, session_id: int) -> str:
    """Append a closed session to the chain (inside the caller's transaction); returns its hash."""
    last_seq, prev_id, prev_hash = current_head(conn)
    seq = last_seq + 1
    db.update_session(conn, session_id, {"seq": seq, "prev_id": prev_id, "prev_hash": prev_hash})
    digest = record_hash(conn, session_id)
    db.update_session(conn, session_id, {"hash": digest})
    head = head_message(seq, session_id, digest)
    db.set_meta(conn, "head", head.decode("ascii"))
    db.set_meta(conn, "head_signature", keys.sign(key, head))
    conn.execute("DELETE FROM meta WHERE key = ?", (f"opened:{session_id}",))
    return digest
