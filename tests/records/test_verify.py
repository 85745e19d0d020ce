"""`station records verify`: a tampered row, a deleted row, a swapped signature each name the record."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from station.records import chain, db
from station.records.recorder import Recorder

from . import helpers
from .helpers import Phone


@pytest.fixture
def records(station, clock) -> Path:
    """Seven sessions: #1, #2, #4, #6 restored with certificates, #7 interrupted by the stop."""
    with Recorder(station, now=clock) as recorder:
        phone = Phone(recorder, 1, clock)
        for n, history in enumerate([helpers.clean_restore, helpers.clean_restore, helpers.locked,
                                     helpers.clean_restore, helpers.failed, helpers.clean_restore], 1):
            history(phone, n)
            clock.advance(60)
        helpers.arrive(Phone(recorder, 2, clock), 7)
    return db.path_in(station.state_dir)


def tamper(path: Path, *statements: str) -> None:
    """Edit the database the way someone with a sqlite3 shell would (no foreign keys)."""
    conn = sqlite3.connect(path)
    with conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


def test_intact_records_verify(records, cli):
    code, out, err = cli("records", "verify")
    assert code == 0, err
    assert out.startswith("ok: 7 records, chain intact; 4 certificates signed by SHA256:")
    assert out.endswith("; 0 session(s) open\n")


def test_open_sessions_are_not_chained_yet(recorder, clock, cli):
    helpers.clean_restore(Phone(recorder, 1, clock), 1, detach=False)  # DONE, still plugged in
    assert recorder.flush(5)
    code, out, err = cli("records", "verify")
    assert code == 0, err
    assert out.startswith("ok: 0 records, chain intact; 1 certificates")
    assert out.endswith("; 1 session(s) open\n")


def test_edited_session_row(records, cli):
    tamper(records, "UPDATE sessions SET outcome = 'done' WHERE id = 5")
    code, _, err = cli("records", "verify")
    assert code == 1
    assert "record #5 (slot 1, F2LT00000005): content does not match its hash (edited)" in err


def test_edited_transition_row(records, cli):
    tamper(records, "UPDATE transitions SET to_state = 'done' WHERE session_id = 3 AND event = 'LockResult'")
    code, _, err = cli("records", "verify")
    assert code == 1 and "record #3 " in err and "edited" in err


def test_deleted_transition_row(records, cli):
    tamper(records, "DELETE FROM transitions WHERE id = (SELECT max(id) FROM transitions WHERE session_id = 2)")
    code, _, err = cli("records", "verify")
    assert code == 1 and "record #2 " in err


def test_deleted_session(records, cli):
    tamper(records, "DELETE FROM certificates WHERE session_id = 4",
           "DELETE FROM transitions WHERE session_id = 4", "DELETE FROM sessions WHERE id = 4")
    code, _, err = cli("records", "verify")
    assert code == 1
    assert "record #4 is missing (deleted?)" in err


def test_deleted_last_session(records, cli):
    tamper(records, "DELETE FROM transitions WHERE session_id = 7", "DELETE FROM sessions WHERE id = 7")
    code, _, err = cli("records", "verify")
    assert code == 1 and "record #7 is missing (deleted?)" in err


def test_swapped_signature(records, cli):
    conn = sqlite3.connect(records)
    first, second = (json.loads(conn.execute("SELECT document FROM certificates WHERE session_id = ?",
                                             (i,)).fetchone()[0]) for i in (2, 4))
    first["signature"], second["signature"] = second["signature"], first["signature"]
    with conn:
        for session_id, document in ((2, first), (4, second)):
            conn.execute("UPDATE certificates SET document = ? WHERE session_id = ?",
                         (json.dumps(document), session_id))
    conn.close()
    code, _, err = cli("records", "verify")
    assert code == 1
    assert "record #2 (slot 1, F2LT00000002): certificate signature invalid" in err


def test_edited_certificate(records, cli):
    conn = sqlite3.connect(records)
    document = json.loads(conn.execute("SELECT document FROM certificates WHERE session_id = 6").fetchone()[0])
    document["verification"]["result"] = "passed with flying colours"
    with conn:
        conn.execute("UPDATE certificates SET document = ? WHERE session_id = 6", (json.dumps(document),))
    conn.close()
    code, _, err = cli("records", "verify")
    assert code == 1 and "record #6 " in err and "certificate signature invalid" in err


def test_rewritten_chain_without_the_key(records, cli):
    """Edit a record and recompute every hash after it: only the station key can sign the head."""
    conn = sqlite3.connect(records)
    conn.row_factory = sqlite3.Row
    with conn:
        conn.execute("UPDATE sessions SET serial = 'FORGED' WHERE id = 5")
        prev = conn.execute("SELECT hash FROM sessions WHERE id = 4").fetchone()[0]
        for session_id in (5, 6, 7):
            conn.execute("UPDATE sessions SET prev_hash = ? WHERE id = ?", (prev, session_id))
            prev = chain.record_hash(conn, session_id)
            conn.execute("UPDATE sessions SET hash = ? WHERE id = ?", (prev, session_id))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'head'",
                     (chain.head_message(7, 7, prev).decode(),))
    conn.close()
    code, _, err = cli("records", "verify")
    assert code == 1 and "chain head signature invalid" in err


def test_verify_without_records(cli):
    code, _, err = cli("records", "verify")
    assert code == 1 and "no station key at" in err
