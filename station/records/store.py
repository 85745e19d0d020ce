"""The open records of a state directory: key, database, session writer and head file.

Opening checks what a station must not paper over: a missing key when records
signed by it exist, a database that ends before the head the station last wrote
(a lost WAL, a restored backup, deleted rows), a database signed by another key.
Each is a ``RecordsUnavailable`` naming the cause; restores wait until it is fixed
(or a new chain is started on purpose with ``station records new-chain``).
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from station.config import StationSection
from station.records import certificate, chain, db, headfile, keys
from station.records.counters import DayCounters
from station.records.statedir import RecordsUnavailable, prepare
from station.records.writer import Item, SessionWriter


CACHE_KIB = 256  # the writer's sqlite page cache


class Store:
    def __init__(self, station: StationSection, now: Callable[[], float]) -> None:
        """Raises ``RecordsUnavailable`` (one line) when the records cannot be kept."""
        self.state_dir = prepare(station.state_dir)
        try:
            head = headfile.read(self.state_dir)
        except ValueError as error:
            raise RecordsUnavailable(f"records unavailable: {error}") from None
        key = keys.load_or_create(self.state_dir,
                                  may_create=head is None and db.count_sessions(self.state_dir) == 0)
        self._conn = db.open_store(self.state_dir)
        # sqlite's default page cache (2 MB) filled as the records grew, and the station's memory
        # with it (sqlite's own count: +1.4 MB over a 420-phone bench.soak, 2.3 MB from ~550
        # phones on); this writer appends sessions and updates the open ones: a small cache will do.
        self._conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        try:
            problem = continuity(self._conn, key.public_key(), head)
            if problem:
                raise RecordsUnavailable(f"records unavailable: {problem}")
            issuer = certificate.Issuer(station.id, station.operator, station.location,
                                        certificate.tool_version())
            self.writer = SessionWriter(self._conn, key, issuer)
            self.writer.close_open(now(), "StationStarted")  # left open by a crash or power cut
            self.counters = DayCounters.from_db(self._conn, now).counters()
            self.sync_head()
        except sqlite3.Error as error:
            self._conn.close()
            raise RecordsUnavailable(f"records unavailable: {db.path_in(self.state_dir)}: {error}") from None
        except BaseException:
            self._conn.close()
            raise

    def write(self, items: Sequence[Item]) -> None:
        """Apply ``items`` in one transaction; on failure nothing of them is kept (and raised)."""
        try:
            with db.transaction(self._conn):
                for item in items:
                    self.writer.apply(item)
        except BaseException:
            self.writer.sealed = False
            self.writer.resync()
            raise

    def probe(self) -> None:
        """A small real write: raises while the database cannot be written."""
        with db.transaction(self._conn):
            db.set_meta(self._conn, "written_at", db.iso(time.time()))

    def sync_head(self) -> None:
        """After a commit that sealed records: the head file follows the database's head."""
        if not self.writer.sealed:
            return
        message, signature = db.get_meta(self._conn, "head"), db.get_meta(self._conn, "head_signature")
        if message is not None and signature is not None:
            headfile.write(self.state_dir, message, signature)
        self.writer.sealed = False

    def close_open(self, now: float, why: str) -> None:
        self.writer.close_open(now, why)
        self.sync_head()

    def close(self) -> None:
        self._conn.close()


def continuity(conn: sqlite3.Connection, public: Ed25519PublicKey, head: headfile.Head | None) -> str:
    """Why this database is not the one the station last wrote; "" when it is."""
    stored, signature = db.get_meta(conn, "head"), db.get_meta(conn, "head_signature")
    if stored is not None and (signature is None or not keys.is_valid(public, stored.encode("ascii"), signature)):
        return (f"the database's chain head is not signed by the station key "
                f"{keys.fingerprint(public)} (another station's key or records?)")
    if head is None:
        return ""
    if not head.signed_by(public):
        return f"{headfile.HEAD_FILE} is not signed by the station key {keys.fingerprint(public)}"
    seq, _, _ = chain.current_head(conn)
    if head.seq > seq:
        return (f"records may be missing: the station sealed record #{head.session_id} at chain "
                f"position {head.seq}, the database ends at {seq} (a lost WAL, an older copy, "
                "or deleted rows): put the records back, or `station records new-chain --reason TEXT`")
    row = conn.execute("SELECT hash FROM sessions WHERE seq = ?", (head.seq,)).fetchone()
    if row is None or row["hash"] != head.digest:
        return (f"the records were rewritten: chain position {head.seq} is not the record "
                f"#{head.session_id} the station sealed there")
    return ""
