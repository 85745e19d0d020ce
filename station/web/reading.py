"""The records as the web reads them: read-only connections, on a thread (never on the loop),
as the `station records` commands read them."""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from station.records import certificate, db
from station.records.statedir import RecordsUnavailable
from station.web import views


class NotFound(Exception):
    """No such record or certificate; the message says which."""


class Unreadable(Exception):
    """The records cannot be read now; the message says why."""


def recent_records(state_dir: Path, limit: int, reveal: bool) -> list[dict[str, Any]]:
    """The newest ``limit`` sessions, newest first."""
    with _reader(state_dir) as conn:
        rows = conn.execute("SELECT s.*, c.session_id IS NOT NULL AS has_certificate FROM sessions s "
                            "LEFT JOIN certificates c ON c.session_id = s.id "
                            "ORDER BY s.id DESC LIMIT ?", (limit,)).fetchall()
        return [views.record_json(dict(row), bool(row["has_certificate"]), reveal) for row in rows]


def certificate_of(state_dir: Path, record_id: int) -> dict[str, Any]:
    """The signed certificate of a record; it must name that record (``certificate.find``)."""
    with _reader(state_dir) as conn:
        try:
            found = certificate.find(conn, str(record_id), "record")
        except certificate.NotItsCertificate as error:
            raise Unreadable(str(error)) from None
    if not found:
        raise NotFound(f"record #{record_id} has no certificate")
    return json.loads(found[0].document)


@contextmanager
def _reader(state_dir: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection; whatever fails reading is ``Unreadable``."""
    try:
        with db.reading(state_dir) as conn:
            yield conn
    except RecordsUnavailable as error:
        raise Unreadable(str(error)) from None
