"""`station records list|export|verify|new-chain`, `station cert`, `station key show`, their --json
output and one-line errors (exit 1: failed, exit 2: usage), through station.cli.main."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hw.phones import Lock
from station.machine import Confirm, Detached, LockResult, RestoreFailed, RestoreStarted
from station.records import db, keys
from station.records.recorder import Recorder

from . import helpers
from .helpers import Phone
from .test_verify import tamper


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
    [session] = json.loads(out)  # an array, like every list the commands print
    assert code == 0 and session["id"] == 3 and session["outcome"] == "failed"


def test_list_as_json_with_nothing_since(two_days, cli):
    code, out, _ = cli("records", "list", "--since", "2030-01-01", "--json")
    assert code == 0 and json.loads(out) == []


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


def test_export_json_is_the_same_as_format_json(two_days, cli):
    assert cli("records", "export", "--json")[1] == cli("records", "export", "--format", "json")[1]


def test_export_format_and_json_are_one_choice(two_days, cli, capsys):
    with pytest.raises(SystemExit) as exit:
        cli("records", "export", "--json", "--format", "csv")
    assert exit.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_export_to_an_unwritable_file(two_days, cli, tmp_path):
    code, _, err = cli("records", "export", "--format", "csv", "-o", str(tmp_path / "no" / "x.csv"))
    assert code == 1 and err.startswith("station: ") and "No such file or directory" in err


def test_export_over_an_existing_file_is_a_usage_error(two_days, cli, tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("mine\n")
    code, _, err = cli("records", "export", "--format", "csv", "-o", str(target))
    assert (code, err) == (2, f"station: {target}: exists (--force replaces it)\n")
    assert target.read_text() == "mine\n"


def test_commands_without_records(cli, station):
    code, _, err = cli("records", "list")
    assert code == 1
    assert err == f"station: no records at {db.path_in(station.state_dir)}\n"
    assert not station.state_dir.exists()  # reading never creates the state dir


def test_key_show(recorder, cli, station):
    code, out, _ = cli("key", "show")
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == "-----BEGIN PUBLIC KEY-----" and lines[-2] == "-----END PUBLIC KEY-----"
    assert lines[-1].startswith("fingerprint: SHA256:")
    assert "PRIVATE" not in out


def test_key_show_before_the_first_start_creates_the_key(cli, station, clock):
    """The README's first boot: the fingerprint is noted before the station ever ran."""
    code, out, err = cli("key", "show", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["created"] is True
    assert err == f"station: created the station key {station.state_dir / keys.KEY_FILE}\n"
    assert (station.state_dir / keys.KEY_FILE).stat().st_mode & 0o777 == 0o600
    # The station then starts with that key: what it signs, the fingerprint shown verifies.
    with Recorder(station, now=clock) as recorder:
        helpers.clean_restore(Phone(recorder, 1, clock), 1)
    code, out, _ = cli("records", "verify", "--json")
    assert code == 0 and json.loads(out)["signer"] == shown["fingerprint"]
    code, out, err = cli("key", "show", "--json")
    assert json.loads(out) == {**shown, "created": False} and err == ""


def test_key_show_makes_no_new_key_beside_records_signed_by_a_lost_one(two_days, cli, station):
    (station.state_dir / keys.KEY_FILE).unlink()
    (station.state_dir / keys.PUBLIC_FILE).unlink()
    code, out, err = cli("key", "show")
    assert code == 1 and out == ""
    assert err.startswith("station: records unavailable: station key ") and "is missing" in err
    assert not (station.state_dir / keys.KEY_FILE).exists()


def test_key_show_of_a_public_key_file_creates_nothing(cli, station, tmp_path):
    pem = tmp_path / "auditor.pub"
    pem.write_text(keys.public_pem(Ed25519PrivateKey.generate().public_key()))
    code, out, _ = cli("key", "show", "--public-key", str(pem), "--json")
    assert code == 0 and json.loads(out)["public_key"] == pem.read_text()
    assert not station.state_dir.exists()


def test_verify_as_json(two_days, cli):
    code, out, err = cli("records", "verify", "--json")
    verdict = json.loads(out)
    assert code == 0 and err == ""
    assert verdict == {"ok": True, "signer": verdict["signer"], "records": 3, "certificates": 1,
                       "open": 0, "witnesses": 0, "head_checked": True, "problem": None}
    assert verdict["signer"].startswith("SHA256:")


def test_verify_as_json_names_the_problem_and_fails(two_days, cli, station):
    tamper(db.path_in(station.state_dir), "UPDATE sessions SET reason = 'nothing wrong' WHERE id = 3")
    code, out, err = cli("records", "verify", "--json")
    verdict = json.loads(out)
    assert code == 1 and verdict["ok"] is False and verdict["records"] is None
    assert err == f"station: records verify: {verdict['problem']}\n"


def test_new_chain_as_json(two_days, cli, station):
    code, out, _ = cli("records", "new-chain", "--reason", "key lost", "--json")
    made = json.loads(out)
    assert code == 0 and made["reason"] == "key lost" and Path(made["archive"]).is_dir()


def test_cert_of_an_unknown_serial_fails(two_days, cli):
    assert cli("cert", "NOSUCHSERIAL", "--json") == (1, "", "station: no certificate for serial NOSUCHSERIAL\n")


def test_cert_with_json_prints_the_certificate(two_days, cli):
    code, out, _ = cli("cert", helpers.device(1).serial, "--json")
    assert code == 0 and json.loads(out)["media"]["serial"] == helpers.device(1).serial


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
