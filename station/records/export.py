"""Sessions out as CSV (one row per session) or JSON (with transitions and certificates)."""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any, TextIO

from station.records import db

CRLF = "\r\n"


def write_csv(conn: sqlite3.Connection, stream: TextIO, since: str | None = None) -> None:
    """RFC 4180 CSV with a header line; every text field quoted, NULL as an empty field.

    SQLite formats each line with one ``printf`` (``%w`` doubles the quotes inside a
    field), so one string per session crosses into Python instead of one object per
    column: the csv module would spend most of the export on that.
    """
    types = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(sessions)")}
    columns = db.session_columns(conn)
    formats = ["%s" if types[name] == "INTEGER" else '"%w"' for name in columns]
    values = [name if types[name] == "INTEGER" else f"ifnull({name}, '')" for name in columns]
    sql, params = db.sessions_query(conn, since, f"printf('{','.join(formats)}', {', '.join(values)})")
    stream.write(",".join(columns) + CRLF)
    cursor = conn.execute(sql, params)
    while lines := cursor.fetchmany(1000):
        stream.write(CRLF.join(line for (line,) in lines) + CRLF)


def write_json(conn: sqlite3.Connection, stream: TextIO, since: str | None = None) -> None:
    """A JSON array of sessions, written one session at a time so any size fits in memory."""
    stream.write("[")
    for n, session in enumerate(sessions(conn, since)):
        session["transitions"] = db.transitions(conn, session["id"])
        document = db.certificate_text(conn, session["id"])
        session["certificate"] = json.loads(document) if document is not None else None
        stream.write(("\n" if n == 0 else ",\n") + json.dumps(session, ensure_ascii=False))
    stream.write("\n]\n")


def sessions(conn: sqlite3.Connection, since: str | None = None) -> Iterator[dict[str, Any]]:
    """The session rows as dicts, oldest first."""
    sql, params = db.sessions_query(conn, since)
    return (dict(row) for row in conn.execute(sql, params))
