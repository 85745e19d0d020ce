"""`station fleet collect`: every station's records in one SQLite file, verified as they arrive.

Keys are pinned on first sight: a station's key from ``--key ID=FILE``, else the
first one seen (its retained ``key`` topic, or the key a record names). Each
record must verify under the pinned key (``payloads.check``: content against
hash, signed head, certificate) and follow the last one stored for its station
(chain position + 1, ``prev_hash`` = its hash). The first record of a station
anchors its chain: position 1 normally; a later one (a collector started after
the station had sent its first records) is taken and said in one warning line.
A record already stored (same hash) is a duplicate, ignored: the station sends
a record again when its acknowledgement was lost. Anything else is refused, one
log line each, and not stored.

The collector's session at the broker is persistent (a fixed client id, session
expiry ``SESSION_EXPIRY_S``): records published while it is away wait at the broker.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from station.fleet import payloads
from station.records import chain, db, keys

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
Outcome = Literal["stored", "duplicate", "refused"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stations (
    id TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    pinned_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    station_id TEXT NOT NULL REFERENCES stations (id),
    seq INTEGER NOT NULL,
    session_id INTEGER NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    prev_hash TEXT NOT NULL,
    serial TEXT,
    result TEXT,
    ended_at TEXT,
    record TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (station_id, seq)
);
"""


def parse_public(pem: bytes | str) -> Ed25519PublicKey:
    """A PEM Ed25519 public key; ``ValueError`` when it is not one."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    public = serialization.load_pem_public_key(data)
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return public


class KeyConflict(Exception):
    """A key given on the command line is not the one the database pinned for that station."""


def _key_in(message: dict[str, Any]) -> Ed25519PublicKey | None:
    pem = message.get("key")
    try:
        return parse_public(pem) if isinstance(pem, str) else None
    except ValueError:
        return None


@dataclass
class Tally:
    stored: int = 0
    duplicates: int = 0
    refused: int = 0


class Collector:
    def __init__(self, path: Path, pinned: Mapping[str, Ed25519PublicKey] | None = None) -> None:
        self.path = path
        self._conn = db.connect(path)
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self._conn.execute(statement)
        self.tally = Tally()
        for station_id, public in (pinned or {}).items():
            self._pin(station_id, public, "--key")

    def close(self) -> None:
        self._conn.close()

    def key(self, station_id: str, pem: bytes) -> None:
        """A station's retained key: pinned if it is the first, refused if it differs."""
        try:
            public = parse_public(pem)
        except ValueError as error:
            log.error("station %s: its key topic holds no Ed25519 public key (%s): ignored",
                      station_id, error)
            return
        self._pin(station_id, public, "its key topic")

    def record(self, station_id: str, payload: bytes) -> Outcome:
        outcome, line = self._judge(station_id, payload)
        if outcome == "refused":
            self.tally.refused += 1
            log.error("station %s: refused %s", station_id, line)
        elif outcome == "duplicate":
            self.tally.duplicates += 1
            log.info("station %s: %s", station_id, line)
        else:
            self.tally.stored += 1
            log.info("station %s: stored %s", station_id, line)
        return outcome

    def stations(self) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT s.id, s.fingerprint, count(r.seq) AS records, max(r.seq) AS head_seq "
            "FROM stations s LEFT JOIN records r ON r.station_id = s.id GROUP BY s.id ORDER BY s.id")
        return [dict(row) for row in rows]

    def _judge(self, station_id: str, payload: bytes) -> tuple[Outcome, str]:
        try:
            message = json.loads(payload)
        except ValueError:
            return "refused", "a message that is not JSON"
        if not isinstance(message, dict):
            return "refused", "a message that is not a record"
        pinned = self._pinned(station_id)
        public = pinned or _key_in(message)
        if public is None:
            return "refused", "a record with no key to check it by"
        try:
            checked = payloads.check(message, public)
        except payloads.Refused as refused:
            return "refused", str(refused)
        name = f"record #{checked.session_id} (chain position {checked.seq})"
        # Checked first, so a forgery that reuses a stored record's hash is refused, not ignored.
        if self._conn.execute("SELECT 1 FROM records WHERE hash = ?", (checked.hash,)).fetchone():
            return "duplicate", f"{name} again: already stored, ignored"
        if checked.station_id != station_id:
            return "refused", f"{name}: it names station {checked.station_id}"
        last = self._conn.execute("SELECT seq, hash FROM records WHERE station_id = ? "
                                  "ORDER BY seq DESC LIMIT 1", (station_id,)).fetchone()
        if last is None:
            if checked.seq != 1 or checked.prev_hash != chain.GENESIS:
                log.warning("station %s: its chain starts here at position %d: the records before "
                            "it were sent before this collector subscribed", station_id, checked.seq)
        elif checked.seq <= last["seq"]:
            return "refused", f"{name}: chain position {checked.seq} holds another record (a forked chain?)"
        elif checked.seq > last["seq"] + 1:
            return "refused", (f"{name}: records at chain positions {last['seq'] + 1}.."
                               f"{checked.seq - 1} have not arrived")
        elif checked.prev_hash != last["hash"]:
            return "refused", f"{name}: does not follow chain position {last['seq']} (chain broken)"
        session = message["session"]
        if pinned is None:  # a first record that verified under its own key: that key is pinned
            self._pin(station_id, public, "its first record")
        with db.transaction(self._conn):
            self._conn.execute(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (station_id, checked.seq, checked.session_id, checked.hash, checked.prev_hash,
                 session.get("serial"), session.get("result"), session.get("ended_at"),
                 payload.decode("utf-8"), db.iso(time.time())))
        return "stored", name

    def _pinned(self, station_id: str) -> Ed25519PublicKey | None:
        row = self._conn.execute("SELECT public_key FROM stations WHERE id = ?", (station_id,)).fetchone()
        return parse_public(row[0]) if row else None

    def _pin(self, station_id: str, public: Ed25519PublicKey, source: str) -> None:
        pinned = self._pinned(station_id)
        fingerprint = keys.fingerprint(public)
        if source == "--key" and pinned is not None and keys.fingerprint(pinned) != fingerprint:
            raise KeyConflict(f"--key {station_id}: {fingerprint}, but {self.path} has pinned "
                              f"{keys.fingerprint(pinned)} for it")
        if pinned is None:
            with db.transaction(self._conn):
                self._conn.execute("INSERT INTO stations VALUES (?, ?, ?, ?)",
                                   (station_id, keys.public_pem(public), fingerprint, db.iso(time.time())))
            log.info("station %s: key %s pinned (from %s)", station_id, fingerprint, source)
        elif keys.fingerprint(pinned) != fingerprint:
            log.error("station %s: %s names key %s, but %s is pinned: ignored (a new key is a "
                      "new station id, or a new collector database)", station_id, source,
                      fingerprint, keys.fingerprint(pinned))
