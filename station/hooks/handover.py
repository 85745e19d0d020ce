"""What a hook gets from the records: its phone's record id, and the certificate as a file.

The recorder writes on a thread of its own, so a hook asks the database, read-only, for the
session that holds the transition it runs for: found, that transition is committed, and at
DONE so is the certificate (the writer issues it in the same transaction). The certificate
is handed over as ``<state_dir>/certificates/<record id>.json``, the document as
``station cert`` prints it, private to the station's user like the rest of the state
directory; the file is removed once the hook has run (``station cert`` prints it again).
These run on a worker thread: each is a few small reads or one small write.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from station.records import db
from station.records.statedir import RecordsUnavailable

CERTIFICATES_DIR = "certificates"


def record_of(state_dir: Path, slot: int, at: str, state: str) -> int | None:
    """The id of the session on ``slot`` whose transition into ``state`` at ``at`` (stored time
    text) is committed; None while it is not (or the records cannot be read)."""
    try:
        with db.reading(state_dir) as conn:
            # Sessions on a slot never overlap: the newest one started by then is the phone's.
            row = conn.execute("SELECT id FROM sessions WHERE slot = ? AND started_at <= ? "
                               "ORDER BY started_at DESC, id DESC LIMIT 1", (slot, at)).fetchone()
            if row is None:
                return None
            held = conn.execute("SELECT 1 FROM transitions WHERE session_id = ? AND at = ? AND to_state = ?",
                                (row["id"], at, state)).fetchone()
    except RecordsUnavailable:
        return None
    return int(row["id"]) if held else None


def ios_after(state_dir: Path, record_id: int) -> str:
    """The iOS the record says the phone runs now it is done ("" when it does not say)."""
    try:
        with db.reading(state_dir) as conn:
            row = conn.execute("SELECT ios_after FROM sessions WHERE id = ?", (record_id,)).fetchone()
    except RecordsUnavailable:
        return ""
    return (row["ios_after"] or "") if row is not None else ""


def write_certificate(state_dir: Path, record_id: int) -> Path | None:
    """The record's certificate as a private file; None when it has none."""
    try:
        with db.reading(state_dir) as conn:
            text = db.certificate_text(conn, record_id)
    except RecordsUnavailable:
        return None
    if text is None:
        return None
    folder = state_dir / CERTIFICATES_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{record_id}.json"
    partial = path.with_suffix(".json.partial")
    # Written whole, then renamed: a hook never reads half a certificate.
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
                   encoding="utf-8") as out:
        json.dump(json.loads(text), out, indent=2, sort_keys=True, ensure_ascii=False)
        out.write("\n")
    partial.replace(path)
    return path
