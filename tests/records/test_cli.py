"""`station records list|export`, `station key show`, and one-line errors, through station.cli.main."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import pytest

from hw.phones import Lock
from station.machine import Confirm, Detached, LockResult, RestoreFailed, RestoreStarted
from station.records import db
from station.records.recorder import Recorder

from . import helpers
from .helpers import Phone


@pytest.fixture
def two_days(station, clock):
    """Two sessions on 10 June, one on 12 June."""
    with Recorder(station, now=clock) as recorder:
        helpers.clean_restore(Phone(recorder, 1, clock), 1)
        helpers.locked(Phone(recorder, 2, clock), 2)
        clock.set(datetime(2024, 6, 12, 9, 30))
        helpers.failed(Phone(recorder, 3, clock), 3)


def test_list(two_days, cli):
    code, out, _ = cli("records", "list")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert lines[0].startswith("#1      2024-06-10 12:00  slot 1  F2LT00000001")
    assert lines[0].endswith("done")
    assert lines[1].endswith("locked  Find My is on")
    assert lines[2].endswith("failed  device rejected the image")


def test_list_since_as_json(two_days, cli):
    code, out, _ = cli("records", "list", "--since", "2024-06-11", "--json")
    [line] = out.splitlines()
    session = json.loads(line)
    assert code == 0 and session["id"] == 3 and session["outcome"] == "failed"


def test_list_shows_open_sessions(recorder, cli, clock):
    helpers.arrive(Phone(recorder, 1, clock), 1)
    assert recorder.flush(5)
    code, out, _ = cli("records", "list")
    assert code == 0 and out.rstrip().endswith("open: checking_lock")


def test_bad_since(two_days, cli, capsys):
    with pytest.raises(SystemExit) as exit:
        cli("records", "list", "--since", "yesterday")
    assert exit.value.code == 2
    assert "'yesterday': not a date (YYYY-MM-DD)" in capsys.readouterr().err


def test_export_csv(two_days, cli, tmp_path):
    target = tmp_path / "out.csv"
    code, out, _ = cli("records", "export", "--format", "csv", "-o", str(target))
    assert code == 0 and out == ""
    rows = list(csv.DictReader(io.StringIO(target.read_text(), newline="")))
    assert [r["outcome"] for r in rows] == ["done", "locked", "failed"]
    assert list(rows[0]) == list(db.SESSION_COLUMNS)
    assert rows[0]["ipsw_sha256"] == helpers.IPSW_SHA256 and rows[0]["verified"] == "1"
    assert rows[1]["verified"] == ""


def test_export_json_since(two_days, cli):
    code, out, _ = cli("records", "export", "--format", "json", "--since", "2024-06-12T09:00")
    [session] = json.loads(out)
    assert code == 0 and session["outcome"] == "failed" and session["certificate"] is None
    assert session["transitions"][0]["to_state"] == "identified"
    assert session["transitions"][-1]["event"] == "Detached"


def test_export_json_includes_certificates(two_days, cli):
    _, out, _ = cli("records", "export", "--format", "json")
    sessions = json.loads(out)
    assert sessions[0]["certificate"]["media"]["serial"] == helpers.device(1).serial


def test_export_to_an_unwritable_file(two_days, cli, tmp_path):
    code, _, err = cli("records", "export", "--format", "csv", "-o", str(tmp_path / "no" / "x.csv"))
    assert code == 2 and err.startswith("station: ") and "No such file or directory" in err


def test_commands_without_records(cli, station):
    code, _, err = cli("records", "list")
    assert code == 2
    assert err == f"station: no records at {db.path_in(station.state_dir)}\n"
    assert not station.state_dir.exists()  # reading never creates the state dir


def test_key_show(recorder, cli, station):
    code, out, _ = cli("key", "show")
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == "-----BEGIN PUBLIC KEY-----" and lines[-2] == "-----END PUBLIC KEY-----"
    assert lines[-1].startswith("fingerprint: SHA256:")
    assert "PRIVATE" not in out


def test_export_csv_quotes_what_needs_it(recorder, clock, cli):
    phone = Phone(recorder, 1, clock)
    helpers.arrive(phone, 1)
    reason = 'usb, "hub" reset\nport 3 – ré-essai'
    phone.send(LockResult(Lock.CLEAR), Confirm(), RestoreStarted(), RestoreFailed(reason, retryable=False),
               Detached())
    assert recorder.flush(5)
    code, out, _ = cli("records", "export", "--format", "csv")
    [row] = csv.DictReader(io.StringIO(out, newline=""))
    assert code == 0 and row["reason"] == reason and row["model"] == "iPhone14,7"
    assert (row["id"], row["attempts"], row["verified"], row["restore_finished_at"]) == ("1", "1", "", "")
    assert out.endswith("\r\n")


@pytest.mark.parametrize("since, count", [("0001-01-01", 3), ("9999-12-31T23:59:59", 0)])
def test_since_at_the_ends_of_the_calendar(two_days, cli, since, count):
    """Year 1 local is year 0 in UTC east of Greenwich: still "from the beginning"."""
    code, out, err = cli("records", "list", "--since", since)
    assert code == 0, err
    assert len(out.splitlines()) == count
