"""The records database: one SQLite file in WAL mode, schema v5 (v1 to v4 are upgraded in place).

Tables: ``sessions`` (one row per phone on a slot, updated as it goes, sealed
into the hash chain when it closes), ``transitions`` (every recorded state
change and operator action of a session, in order), ``certificates`` (the
signed erasure certificate of a successful restore), ``outbox`` (the sealed
records not yet acknowledged by the fleet's MQTT broker: station.fleet.outbox)
and ``meta`` (schema version, signed head of the chain). Times are ISO 8601 UTC text with
milliseconds, so they sort as text and read well in an export.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from station.records.statedir import RecordsUnavailable, prepare

DB_FILE = "records.sqlite3"
SCHEMA_VERSION = "5"
# What refurbishers record (issue 14 item 3; hw.phones.Facts): NULL where the phone did not say.
FACT_COLUMNS = {
    "imei": "TEXT", "imei2": "TEXT", "meid": "TEXT", "storage_bytes": "INTEGER", "color": "TEXT",
    "enclosure_color": "TEXT", "battery_cycle_count": "INTEGER", "battery_design_capacity": "INTEGER",
    "battery_full_charge_capacity": "INTEGER",
}
# Columns added after v1 (name: the version that added it), NULL in rows written before: a NULL
# one is left out of a record's hashed content (chain.content_of), so records sealed before it
# existed keep their hashes. A fact the phone did not say is NULL, and left out the same way.
ADDED_COLUMNS = {"restore_tool": "2", **dict.fromkeys(FACT_COLUMNS, "3"), "job": "4"}

# Order of the session columns in exports and in the hashed content of a record.
SESSION_COLUMNS = (
    "id", "station_id", "location", "operator", "slot",
    "started_at", "lock_checked_at", "restore_started_at", "restore_finished_at", "result_at",
    "ended_at", "state", "result", "outcome", "reason",
    "udid", "ecid", "serial", "model", "ios_before", "build_before", *FACT_COLUMNS,
    "lock_method", "lock_result", "lock_reason", "verify_method", "verify_result", "verified",
    "attempts", "actions", "ipsw_build", "ios_after", "ipsw_sha256", "restore_tool", "job",
    "seq", "prev_id", "prev_hash", "hash",
)
TRANSITION_COLUMNS = ("at", "event", "from_state", "to_state", "reason", "detail")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    station_id TEXT NOT NULL,
    location TEXT NOT NULL DEFAULT '',
    operator TEXT NOT NULL DEFAULT '',
    slot INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    lock_checked_at TEXT,
    restore_started_at TEXT,
    restore_finished_at TEXT,
    result_at TEXT,
    ended_at TEXT,
    state TEXT NOT NULL,
    result TEXT,
    outcome TEXT,
    reason TEXT NOT NULL DEFAULT '',
    udid TEXT NOT NULL DEFAULT '',
    ecid TEXT NOT NULL DEFAULT '',
    serial TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    ios_before TEXT NOT NULL DEFAULT '',
    build_before TEXT NOT NULL DEFAULT '',
    imei TEXT,
    imei2 TEXT,
    meid TEXT,
    storage_bytes INTEGER,
    color TEXT,
    enclosure_color TEXT,
    battery_cycle_count INTEGER,
    battery_design_capacity INTEGER,
    battery_full_charge_capacity INTEGER,
    lock_method TEXT NOT NULL DEFAULT '',
    lock_result TEXT NOT NULL DEFAULT '',
    lock_reason TEXT NOT NULL DEFAULT '',
    verify_method TEXT NOT NULL DEFAULT '',
    verify_result TEXT NOT NULL DEFAULT '',
    verified INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    actions TEXT NOT NULL DEFAULT '',
    ipsw_build TEXT NOT NULL DEFAULT '',
    ios_after TEXT NOT NULL DEFAULT '',
    ipsw_sha256 TEXT NOT NULL DEFAULT '',
    restore_tool TEXT,
    job TEXT,
    seq INTEGER UNIQUE,
    prev_id INTEGER,
    prev_hash TEXT,
    hash TEXT
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started_at);
CREATE INDEX IF NOT EXISTS sessions_result ON sessions (result_at);
CREATE INDEX IF NOT EXISTS sessions_open ON sessions (ended_at) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS sessions_ecid ON sessions (ecid);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions (id),
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS transitions_session ON transitions (session_id, id);
CREATE TABLE IF NOT EXISTS certificates (
    session_id INTEGER PRIMARY KEY REFERENCES sessions (id),
    serial TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    document TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_serial ON certificates (serial, issued_at);
"""
# Filled in the transaction that seals a record, emptied as the broker acknowledges each:
# the fleet publishes in chain order (seq), whether [mqtt] is on now or later.
_OUTBOX = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL UNIQUE REFERENCES sessions (id)
)"""
_SCHEMA += _OUTBOX


def iso(moment: float) -> str:
    """Epoch seconds as the stored time text: ``2024-06-10T09:30:00.125Z``."""
    stamp = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def path_in(state_dir: Path) -> Path:
    return state_dir / DB_FILE


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode; writers group statements with ``transaction``."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: a committed transition survives a power cut, not just a crash.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def open_store(state_dir: Path) -> sqlite3.Connection:
    """The station's own connection: creates the directory and the schema if needed."""
    path = path_in(prepare(state_dir))
    try:
        conn = connect(path)
        with transaction(conn):
            # One statement at a time: executescript would commit the transaction.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            _upgrade(conn)
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    except sqlite3.Error as error:
        raise RecordsUnavailable(f"records unavailable: {path}: {error}") from None
    if version != SCHEMA_VERSION:
        conn.close()
        raise RecordsUnavailable(f"records unavailable: {path} has schema v{version}, "
                                 f"this station knows v{SCHEMA_VERSION}")
    return conn


def _upgrade(conn: sqlite3.Connection) -> None:
    """v1 -> v2: the restore tool of each session (certificates name it); v2 -> v3: the phone's
    facts (IMEI, storage, colour, battery), NULL in the sessions recorded before; v3 -> v4: the
    job ("restore" or "erase"), NULL before (those were all restores); v4 -> v5: the fleet's
    outbox, holding every record sealed before, so a collector gets each chain from its start."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
    if get_meta(conn, "schema_version") == "1":
        if "restore_tool" not in present:
            conn.execute("ALTER TABLE sessions ADD COLUMN restore_tool TEXT")
        set_meta(conn, "schema_version", "2")
    if get_meta(conn, "schema_version") == "2":
        for name, kind in FACT_COLUMNS.items():
            if name not in present:
                conn.execute(f"ALTER TABLE sessions ADD COLUMN {name} {kind}")
        set_meta(conn, "schema_version", "3")
    if get_meta(conn, "schema_version") == "3":
        if "job" not in present:
            conn.execute("ALTER TABLE sessions ADD COLUMN job TEXT")
        set_meta(conn, "schema_version", "4")
    if get_meta(conn, "schema_version") == "4":
        queue_sealed(conn)
        set_meta(conn, "schema_version", "5")
    if "seq" not in {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}:
        # The outbox of the first v5 commits (eed6944..bb58afb) had no seq, so its next row was
        # found by scanning sessions: rebuilt, and every record queued again (receivers keep one).
        conn.execute("DROP TABLE outbox")
        conn.execute(_OUTBOX)
        queue_sealed(conn)
    # After the columns exist: a v2 table has no imei column when the schema above runs.
    conn.execute("CREATE INDEX IF NOT EXISTS sessions_imei ON sessions (imei)")


def queue_sealed(conn: sqlite3.Connection, session_id: int | None = None) -> None:
    """Put a sealed record (or, with no id, every sealed record) into the fleet's outbox."""
    sealed = "SELECT seq, id FROM sessions WHERE seq IS NOT NULL"
    if session_id is None:
        conn.execute(f"INSERT OR IGNORE INTO outbox (seq, session_id) {sealed}")
    else:
        conn.execute(f"INSERT OR IGNORE INTO outbox (seq, session_id) {sealed} AND id = ?", (session_id,))


def session_columns(conn: sqlite3.Connection) -> tuple[str, ...]:
    """SESSION_COLUMNS that this database has (a v1 copy read by a newer station lacks some)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
    return tuple(name for name in SESSION_COLUMNS if name in present)


def open_existing(state_dir: Path) -> sqlite3.Connection:
    """For commands that read: read-only, never creates anything, so a typo'd state_dir is an
    error, and a read-only copy or another user who may read the files can use them."""
    path = path_in(state_dir)
    if not path.is_file():
        raise RecordsUnavailable(f"no records at {path}")
    try:
        return _reader(path, "mode=ro")
    except sqlite3.Error as error:
        # A WAL database in a directory the reader may not write, with no -shm to share:
        # with no -wal either, the main file is all there is, and nobody is writing it.
        if Path(f"{path}-wal").exists():
            raise RecordsUnavailable(f"records unavailable: {path}: {error}") from None
    try:
        return _reader(path, "immutable=1")
    except sqlite3.Error as error:
        raise RecordsUnavailable(f"records unavailable: {path}: {error}") from None


@contextmanager
def reading(state_dir: Path) -> Iterator[sqlite3.Connection]:
    """``open_existing``, closed afterwards; a database that cannot be opened or read (a query
    that fails) is RecordsUnavailable, naming the file."""
    conn = open_existing(state_dir)
    try:
        yield conn
    except sqlite3.Error as error:
        raise RecordsUnavailable(f"{path_in(state_dir)}: {error}") from None
    finally:
        conn.close()


def _reader(path: Path, mode: str) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?{mode}", uri=True,
                           isolation_level=None, timeout=10.0)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # fails now, not mid-listing
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def count_sessions(state_dir: Path) -> int:
    """How many sessions the state dir's records hold (0 when there is no database yet)."""
    path = path_in(state_dir)
    if not path.exists():
        return 0
    conn = open_existing(state_dir)
    try:
        return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])
    except sqlite3.Error:
        return 0  # no sessions table yet: a database that never held a record
    finally:
        conn.close()


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")  # may fail too (a full disk): then it is rolled back below
    except BaseException:
        # SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR): then there is none.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def insert_session(conn: sqlite3.Connection, values: Mapping[str, Any]) -> int:
    names = ", ".join(values)
    marks = ", ".join("?" * len(values))
    cursor = conn.execute(f"INSERT INTO sessions ({names}) VALUES ({marks})", tuple(values.values()))
    return int(cursor.lastrowid)


def update_session(conn: sqlite3.Connection, session_id: int, values: Mapping[str, Any]) -> None:
    assignments = ", ".join(f"{name} = ?" for name in values)
    conn.execute(f"UPDATE sessions SET {assignments} WHERE id = ?", (*values.values(), session_id))


def add_transition(conn: sqlite3.Connection, session_id: int, values: Mapping[str, Any]) -> None:
    conn.execute("INSERT INTO transitions (session_id, at, event, from_state, to_state, reason, "
                 "detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (session_id, *(values[name] for name in TRANSITION_COLUMNS)))


def session(conn: sqlite3.Connection, session_id: int) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
    return dict(row) if row else None


def transitions(conn: sqlite3.Connection, session_id: int) -> list[dict[str, Any]]:
    cursor = conn.execute(f"SELECT {', '.join(TRANSITION_COLUMNS)} FROM transitions "
                          "WHERE session_id = ? ORDER BY id", (session_id,))
    return [dict(row) for row in cursor]


def open_sessions(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute("SELECT * FROM sessions WHERE ended_at IS NULL ORDER BY id")]


def certificate_text(conn: sqlite3.Connection, session_id: int) -> str | None:
    row = conn.execute("SELECT document FROM certificates WHERE session_id = ?", (session_id,)).fetchone()
    return row[0] if row else None


def sessions_query(conn: sqlite3.Connection, since: str | None,
                   columns: str | None = None) -> tuple[str, tuple[str, ...]]:
    """SELECT of ``columns`` (all there are, by default), oldest session first, optionally from ``since``."""
    sql = f"SELECT {columns or ', '.join(session_columns(conn))} FROM sessions"
    if since is None:
        return sql + " ORDER BY id", ()
    return sql + " WHERE started_at >= ? ORDER BY id", (since,)


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                 (key, value))
