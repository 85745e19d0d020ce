"""What the fleet's topics carry (JSON, UTF-8), and how a collector checks a record.

A record is self-contained: the session row as the station stored it (chain
position ``seq``, ``prev_hash`` and ``hash`` included), its transitions, its
certificate, and the chain head it made, signed by the station key. With only
the station's public key a collector recomputes the hash exactly as
``station.records.chain.content_of`` does, checks the signature and the
certificate, and links it to the record before it.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from station.machine import Event, Port
from station.records import certificate, chain, db, keys
from station.records.sessions import transition_row
from station.ui import labels

RECORD_FORMAT = 1


def encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def port(station_id: str, port: Port, now: float) -> dict[str, Any]:
    """One port as a watcher shows it: the display's own words, and the facts behind them."""
    device = port.device
    return {
        "station_id": station_id, "slot": port.slot, "state": port.state.value,
        "short": labels.short_state(port), "title": labels.state_title(port),
        "lines": labels.detail_lines(port, now), "eta": labels.eta_text(port, now) or None,
        "percent": round(port.percent, 1), "phase": port.phase or None, "reason": port.reason or None,
        "lock": port.lock.value, "held": port.held, "attempts": port.attempts, "job": port.job,
        "device": None if device is None else {
            "name": device.name or None, "product_type": device.product_type or None,
            "serial": device.serial or None, "ecid": device.ecid, "udid": device.udid or None,
            "ios_version": device.ios_version or None, "mode": device.mode.value},
    }


def event(station_id: str, old: Port, new: Port, what: Event, at: float) -> dict[str, Any]:
    """A state change or operator action, in the records' own words (``transitions`` rows)."""
    return {"station_id": station_id, "slot": new.slot,
            **transition_row(old, new, what, db.iso(at))}


def record(conn: sqlite3.Connection, session_id: int, key: Ed25519PrivateKey) -> dict[str, Any]:
    """A sealed record as the fleet receives it, read from the station's database."""
    session = db.session(conn, session_id)
    if session is None or session["hash"] is None:
        raise KeyError(f"record #{session_id} is not sealed")
    head = chain.head_message(session["seq"], session_id, session["hash"]).decode("ascii")
    return {"format": RECORD_FORMAT, "station_id": session["station_id"],
            "key": keys.public_pem(key.public_key()), "session": session,
            "transitions": db.transitions(conn, session_id),
            "certificate": db.certificate_text(conn, session_id),
            # Every record was the chain's head when it was sealed: signing that head now says
            # the same as the signature the station stored then (only the newest is kept).
            "head": head, "signature": keys.sign(key, head.encode("ascii"))}


def digest_of(session: dict[str, Any], transitions: list[Any], document: str | None) -> str:
    """A record's hash from its parts, as ``chain.record_hash`` computes it from the database."""
    content = {name: value for name, value in session.items() if name != "hash"}
    for added in db.ADDED_COLUMNS:  # as chain.content_of leaves out what a row did not have
        if content.get(added) is None:
            content.pop(added, None)
    content["transitions"] = transitions
    content["certificate_sha256"] = chain.sha256(document) if isinstance(document, str) else None
    return chain.sha256(chain.canonical(content))


@dataclass(frozen=True)
class Checked:
    station_id: str
    seq: int
    session_id: int
    hash: str
    prev_hash: str


class Refused(Exception):
    """A record that does not verify; ``str`` is the one line logged."""


def check(message: Any, public: Ed25519PublicKey) -> Checked:
    """A received record's own integrity: content against hash, head signature, certificate.

    Its place in the chain (``prev_hash``) is the collector's to check against what it holds.
    """
    try:
        session, transitions = message["session"], message["transitions"]
        document, signature = message["certificate"], message["signature"]
        seq, session_id, digest = session["seq"], session["id"], session["hash"]
        station_id, prev_hash = session["station_id"], session["prev_hash"]
    except (KeyError, TypeError):
        raise Refused("not a record (fields missing)") from None
    if message.get("format") != RECORD_FORMAT or not isinstance(session, dict) \
            or not isinstance(transitions, list) or not isinstance(seq, int) \
            or not isinstance(session_id, int) or not isinstance(digest, str):
        raise Refused("not a record of format 1")
    name = f"record #{session_id} (chain position {seq})"
    try:
        recomputed = digest_of(session, transitions, document)
    except (TypeError, ValueError):
        raise Refused(f"{name}: content cannot be hashed") from None
    if recomputed != digest:
        raise Refused(f"{name}: content does not match its hash (edited)")
    head = chain.head_message(seq, session_id, digest)
    if message.get("head") != head.decode("ascii") or not isinstance(signature, str) \
            or not keys.is_valid(public, head, signature):
        raise Refused(f"{name}: signature invalid (not signed by {keys.fingerprint(public)})")
    if document is not None:
        try:
            parsed = json.loads(document)
        except (TypeError, ValueError):
            parsed = None
        if not isinstance(parsed, dict) or not certificate.is_signed_by(parsed, public):
            raise Refused(f"{name}: certificate signature invalid")
        problem = certificate.mismatch(document, session_id, session.get("serial"))
        if problem:
            raise Refused(f"{name}: its certificate {problem}")
    return Checked(station_id, seq, session_id, digest, prev_hash)
