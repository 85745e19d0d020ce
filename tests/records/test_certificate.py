"""Erasure certificates: NIST SP 800-88 fields, who gets one, and checking one as an auditor."""
from __future__ import annotations

import base64
import json
import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from hw.phones import Lock
from station.machine import Confirm, Detached, LockResult
from station.records import certificate, chain, db
from station.records.recorder import Recorder

from . import helpers
from .helpers import Phone


def stored(station) -> dict[int, dict]:
    conn = db.open_existing(station.state_dir)
    try:
        return {row[0]: json.loads(row[1]) for row in conn.execute("SELECT session_id, document FROM certificates")}
    finally:
        conn.close()


def test_fields_of_a_verified_restore(recorder, station, clock):
    helpers.clean_restore(Phone(recorder, 4, clock), 1)
    assert recorder.flush(5)
    [document] = stored(station).values()
    device = helpers.device(1)
    assert document["media"] == {
        "manufacturer": "Apple", "model": "iPhone14,7", "serial": device.serial,
        "media_type": "flash memory", "udid": device.udid, "ecid": f"{device.ecid:X}", "ios_before": "16.1",
        # What the phone did not say is null, never a guess (helpers.device tells no facts).
        "imei": None, "imei2": None, "meid": None, "storage_bytes": None, "color": None,
        "enclosure_color": None,
        "battery": {"cycle_count": None, "design_capacity_mah": None, "full_charge_capacity_mah": None}}
    assert document["format"] == "station-erasure-certificate/4"
    assert document["sanitization"]["job"] == "restore"
    sanitization = document["sanitization"]
    assert sanitization["method_type"] == "Purge"
    assert sanitization["method_detail"] == "Purge: cryptographic erase by iOS restore"
    assert sanitization["tool"] == helpers.RESTORE_TOOL  # what erased, as the phone layer names it
    assert sanitization["station_software"].startswith("station ")
    assert sanitization["firmware"] == {"build": "21F90", "ios": "17.5.1", "sha256": helpers.IPSW_SHA256}
    assert document["verification"]["result"] == "passed"
    assert "activation-server" in document["verification"]["method"]
    assert document["person"] == {"name": "alice", "location": "Shop, bench 7", "station": "bench-7", "slot": 4}
    assert document["date"].endswith("Z") and document["certificate_id"] == "bench-7-1"
    assert document["signer"]["algorithm"] == "Ed25519"
    assert document["signer"]["public_key"].startswith("SHA256:")


def test_unverified_restore_says_why(recorder, station, clock):
    helpers.clean_restore(Phone(recorder, 1, clock), 1, verified=False)
    assert recorder.flush(5)
    [document] = stored(station).values()
    assert document["verification"]["result"] == "not verified: no network"
    assert document["verification"]["lock"] == "unknown"


@pytest.mark.parametrize("history", [helpers.locked, helpers.refused, helpers.failed,
                                     helpers.detached_mid_restore, helpers.aborted])
def test_no_certificate_without_a_successful_restore(recorder, station, history, clock):
    history(Phone(recorder, 1, clock), 1)
    assert recorder.flush(5)
    assert stored(station) == {}


def test_certificate_after_a_manual_retry(recorder, station, clock):
    helpers.failed_then_retried(Phone(recorder, 1, clock), 1)
    assert recorder.flush(5)
    [document] = stored(station).values()
    assert document["sanitization"]["attempts"] == 3
    assert document["verification"]["result"] == "passed"


def test_an_auditor_checks_a_certificate_with_the_public_key(recorder, station, cli, tmp_path, clock):
    helpers.clean_restore(Phone(recorder, 1, clock), 1)
    helpers.clean_restore(Phone(recorder, 1, clock), 1)  # the same phone again: the newest certificate wins
    assert recorder.flush(5)
    code, pem, _ = cli("key", "show")
    assert code == 0
    code, _, err = cli("cert", helpers.device(1).serial, "-o", str(tmp_path / "cert.json"))
    assert code == 0, err
    document = json.loads((tmp_path / "cert.json").read_text())
    assert document["record_id"] == 2
    # What an auditor does: drop the signature, canonical JSON, Ed25519 verify with the shown key.
    public = load_pem_public_key(pem.encode())
    signature = base64.b64decode(document.pop("signature"))
    public.verify(signature, chain.canonical(document))
    assert pem.splitlines()[-1] == f"fingerprint: {document['signer']['public_key']}"


def test_cert_prints_to_stdout(recorder, cli, clock):
    helpers.clean_restore(Phone(recorder, 1, clock), 3)
    assert recorder.flush(5)
    code, out, _ = cli("cert", helpers.device(3).serial)
    assert code == 0 and json.loads(out)["media"]["serial"] == helpers.device(3).serial


def test_cert_of_an_unknown_serial(recorder, cli, clock):
    helpers.locked(Phone(recorder, 1, clock), 3)
    assert recorder.flush(5)
    code, out, err = cli("cert", helpers.device(3).serial)
    assert code == 1 and out == ""
    assert err == f"station: no certificate for serial {helpers.device(3).serial}\n"


def test_is_signed_by_rejects_another_key(recorder, station, clock):
    helpers.clean_restore(Phone(recorder, 1, clock), 1)
    assert recorder.flush(5)
    [document] = stored(station).values()
    other = Ed25519PrivateKey.generate()
    assert not certificate.is_signed_by(document, other.public_key())
    resigned = certificate.sign({k: v for k, v in document.items() if k != "signature"}, other)
    assert not certificate.is_signed_by(resigned, other.public_key())  # names the station's key


def test_records_sealed_before_the_tool_column_keep_verifying(station, clock, cli):
    """A v1 database (no restore_tool) is upgraded in place; its sealed records keep their hashes."""
    with Recorder(station, now=clock) as recorder:
        phone = Phone(recorder, 1, clock)
        helpers.arrive(phone, 1)
        phone.send(LockResult(Lock.CLEAR, method="activation-server"), Confirm())
        recorder.on_firmware(1, "21F90", "17.5.1", helpers.IPSW_SHA256, "")  # as a v1 station told it
        phone.send(*helpers.restore_events(), LockResult(Lock.CLEAR, method="activation-server"), Detached())
    conn = sqlite3.connect(db.path_in(station.state_dir))
    with conn:  # what a v1 station left behind
        conn.execute("ALTER TABLE sessions DROP COLUMN restore_tool")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    with Recorder(station, now=clock) as recorder:
        assert recorder.problem() is None
        helpers.clean_restore(Phone(recorder, 1, clock), 2)
    code, out, err = cli("records", "verify")
    assert code == 0, err
    assert out.startswith("ok: 2 records, chain intact; 2 certificates")
    conn = sqlite3.connect(db.path_in(station.state_dir))
    assert conn.execute("SELECT restore_tool FROM sessions ORDER BY id").fetchall() == [
        (None,), (helpers.RESTORE_TOOL,)]
    conn.close()


def test_a_v3_database_opens_and_its_records_keep_verifying_as_restores(station, clock, cli):
    """Records sealed before the job column keep their hashes; a session without a job (all were
    restores then) gets a certificate that says restore."""
    with Recorder(station, now=clock) as recorder:
        phone = Phone(recorder, 1, clock)
        helpers.arrive(phone, 1)
        phone.send(LockResult(Lock.LOCKED, "Find My is on", "fmip"), Detached())  # no job: never started
    conn = sqlite3.connect(db.path_in(station.state_dir))
    with conn:  # what a v3 station left behind
        conn.execute("ALTER TABLE sessions DROP COLUMN job")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.close()
    assert cli("records", "verify")[0] == 0  # a v3 copy read by this station, before the upgrade
    with Recorder(station, now=clock) as recorder:
        assert recorder.problem() is None
        helpers.clean_restore(Phone(recorder, 1, clock), 2)
    code, out, err = cli("records", "verify")
    assert code == 0, err
    assert out.startswith("ok: 2 records, chain intact; 1 certificate")
    conn = sqlite3.connect(db.path_in(station.state_dir))
    conn.row_factory = sqlite3.Row
    assert [tuple(r) for r in conn.execute("SELECT job FROM sessions ORDER BY id")] == [(None,), ("restore",)]
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "5"
    session = db.session(conn, 2)
    conn.close()
    issuer = certificate.Issuer("bench-7", "alice", "Shop", "station test")
    key = Ed25519PrivateKey.generate().public_key()
    assert certificate.build({**session, "job": None}, issuer, key)["sanitization"]["job"] == "restore"
