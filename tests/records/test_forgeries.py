"""`records verify` against forgeries that used to pass it, and the start-up that used to seal them.

Each forgery is made as someone with a sqlite3 shell and a copy of the files,
but not the private key, would make it.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from station.records import db, headfile
from station.records.recorder import Recorder

from . import helpers
from .helpers import Phone
from .test_verify import tamper


def history(recorder: Recorder, clock, numbers) -> None:
    phone = Phone(recorder, 1, clock)
    for n in numbers:
        [helpers.clean_restore, helpers.locked][n % 2](phone, n)
        clock.advance(60)


@pytest.fixture
def records(station, clock) -> Path:
    """Sessions #1-#6 sealed (odd: locked, even: restored with a certificate)."""
    with Recorder(station, now=clock) as recorder:
        history(recorder, clock, range(1, 7))
    return db.path_in(station.state_dir)


def copy_row(path: Path, session_id: int, **changes: object) -> int:
    """Insert a copy of session ``session_id`` with ``changes``; returns the new row's id."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    row = dict(conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone())
    row.update(id=None, **changes)
    with conn:
        cursor = conn.execute(f"INSERT INTO sessions ({', '.join(row)}) VALUES "
                              f"({', '.join('?' * len(row))})", tuple(row.values()))
    conn.close()
    return cursor.lastrowid


def test_closed_session_inserted_outside_the_chain(records, cli):
    forged = copy_row(records, 2, seq=None, prev_id=None, prev_hash=None, hash=None, serial="FORGED1")
    code, _, err = cli("records", "verify")
    assert code == 1
    assert f"record #{forged} (slot 1, FORGED1): closed but not in the chain (inserted?)" in err


def test_inserted_session_with_another_records_certificate(records, cli):
    forged = copy_row(records, 2, seq=None, prev_id=None, prev_hash=None, hash=None)
    tamper(records, f"INSERT INTO certificates SELECT {forged}, serial, issued_at, document "
                    "FROM certificates WHERE session_id = 2")
    code, _, err = cli("records", "verify")
    assert code == 1 and f"record #{forged} " in err


def test_a_copied_certificate_is_named_even_on_an_open_row(records, cli):
    """Even were the row accepted, the certificate says whose it is."""
    forged = copy_row(records, 4, seq=None, prev_id=None, prev_hash=None, hash=None, ended_at=None,
                      outcome=None)
    tamper(records, f"INSERT INTO certificates SELECT {forged}, serial, issued_at, document "
                    "FROM certificates WHERE session_id = 4")
    code, _, err = cli("records", "verify")
    assert code == 1 and f"record #{forged} " in err


def test_a_forged_open_row_is_never_sealed_by_the_next_start(records, station, clock, cli, caplog):
    forged = copy_row(records, 2, seq=None, prev_id=None, prev_hash=None, hash=None, ended_at=None,
                      outcome=None, serial="FORGED2")
    with Recorder(station, now=clock):  # the next start closes what was left open...
        pass
    assert f"record #{forged}: open, but not opened by this station" in caplog.text
    conn = sqlite3.connect(records)
    assert conn.execute("SELECT seq, ended_at FROM sessions WHERE id = ?", (forged,)).fetchone() == (None, None)
    conn.close()
    code, _, err = cli("records", "verify")
    assert code == 1
    assert f"record #{forged} (slot 1, FORGED2): open, but the station did not open it" in err


@pytest.mark.parametrize("column, value", [("serial", "F2LT00000004"), ("issued_at", "2030-01-01T00:00:00.000Z")])
def test_certificate_index_columns_edited(records, cli, column, value):
    tamper(records, f"UPDATE certificates SET {column} = '{value}' WHERE session_id = 2")
    code, _, err = cli("records", "verify")
    assert code == 1 and "record #2 (slot 1, F2LT00000002): " in err


def test_cert_never_prints_another_phones_certificate(records, cli):
    tamper(records, "UPDATE certificates SET serial = 'SOMEONE-ELSE' WHERE session_id = 2")
    code, out, err = cli("cert", "SOMEONE-ELSE")
    assert code == 1 and out == ""
    assert err == ("station: the certificate stored for serial SOMEONE-ELSE names serial "
                   "F2LT00000002, filed under SOMEONE-ELSE (edited?)\n")


def test_rollback_to_an_older_signed_head(station, clock, cli, tmp_path):
    with Recorder(station, now=clock) as recorder:
        history(recorder, clock, range(1, 4))
    older = tmp_path / "older"
    shutil.copytree(station.state_dir, older)  # a backup taken, or simply kept, at #3
    with Recorder(station, now=clock) as recorder:
        history(recorder, clock, range(4, 7))
    code, out, _ = cli("cert", "F2LT00000004", "-o", str(tmp_path / "customer.json"))
    assert code == 0
    # The rollback: the last records deleted and the older head (and its signature) put back.
    conn = sqlite3.connect(older / db.DB_FILE)
    head = dict(conn.execute("SELECT key, value FROM meta WHERE key LIKE 'head%'").fetchall())
    conn.close()
    tamper(db.path_in(station.state_dir), "DELETE FROM certificates WHERE session_id > 3",
           "DELETE FROM transitions WHERE session_id > 3", "DELETE FROM sessions WHERE id > 3",
           *(f"UPDATE meta SET value = '{value}' WHERE key = '{key}'" for key, value in head.items()))
    code, _, err = cli("records", "verify")
    assert code == 1
    assert "records after position 3 are missing (rolled back?): the station sealed record #6" in err
    # Root may put back the older head file too: a certificate held elsewhere still tells.
    shutil.copy(headfile.path_in(older), headfile.path_in(station.state_dir))
    assert cli("records", "verify")[0] == 0  # what local verification cannot see...
    code, _, err = cli("records", "verify", "--against", str(tmp_path / "customer.json"))
    assert code == 1  # ...a customer's certificate does
    assert f"{tmp_path / 'customer.json'}: its record #4 is missing from the records (deleted?)" in err


def test_every_row_and_the_head_deleted(records, cli):
    tamper(records, "DELETE FROM certificates", "DELETE FROM transitions", "DELETE FROM sessions",
           "DELETE FROM meta WHERE key LIKE 'head%'")
    code, _, err = cli("records", "verify")
    assert code == 1 and "records after position 0 are missing (rolled back?)" in err


def test_the_station_will_not_write_on_after_a_rollback(records, station, clock):
    tamper(records, "DELETE FROM certificates WHERE session_id = 6", "DELETE FROM transitions WHERE session_id = 6",
           "DELETE FROM sessions WHERE id = 6")
    recorder = Recorder(station, now=clock)
    assert recorder.problem().startswith("records unavailable: records may be missing: the station "
                                         "sealed record #6 at chain position 6, the database ends at 5")


def test_certificates_carry_the_chain_head_they_were_issued_at(records, cli, tmp_path):
    code, out, _ = cli("cert", "F2LT00000004")
    document = json.loads(out)
    assert document["records"]["chain_position"] == 3 and document["records"]["chain_record"] == 3
    (tmp_path / "torn.json").write_text(out[:100])
    code, _, err = cli("records", "verify", "--against", str(tmp_path / "torn.json"))
    assert code == 1 and err == f"station: {tmp_path / 'torn.json'}: not a certificate (not JSON)\n"


def test_verify_a_copy_with_only_the_public_key(records, station, cli, tmp_path):
    code, pem, _ = cli("key", "show")
    (tmp_path / "station.pub").write_text(pem.split("fingerprint:")[0])
    (station.state_dir / "station_key.pem").unlink()
    (station.state_dir / "station_key.pub").unlink()
    code, out, err = cli("records", "verify", "--public-key", str(tmp_path / "station.pub"))
    assert code == 0, err
    assert out.startswith("ok: 6 records, chain intact; 3 certificates")
