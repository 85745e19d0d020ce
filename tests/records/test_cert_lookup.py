"""`station cert` finds a certificate by serial, IMEI, ECID or record id (issue 14 item 3)."""
from __future__ import annotations

import csv
import io
import json
import sqlite3

from hw.phones import Device, Facts, Lock, Mode
from station.machine import Attached, Confirm, Detached, Identified, LockCheckStarted, LockResult
from station.records import db
from station.records.recorder import Recorder

from . import helpers
from .helpers import Phone

DFU_ECID = 0x001A2B3C4D5E6F70


def dfu_restore(phone: Phone) -> None:
    """A phone that arrived in DFU: no serial, no IMEI, only its ECID (from the iBoot string)."""
    device = Device(key=f"ECID:{DFU_ECID:016X}", mode=Mode.DFU, product_type="iPhone14,5",
                    name="iPhone 13", ecid=DFU_ECID, chip_id=0x8110, board_id=0x0A)
    phone.send(Attached(device), Identified(device), LockCheckStarted(),
               LockResult(Lock.UNKNOWN, reason="DFU: lock not readable", method="none"), Confirm(long=True))
    phone.firmware()
    phone.send(*helpers.restore_events(), LockResult(Lock.CLEAR, method="activation-server"), Detached())


def test_the_dfu_phones_certificate_is_found_by_its_ecid(recorder, cli, clock):
    dfu_restore(Phone(recorder, 2, clock))
    assert recorder.flush(5)
    for spelling in (f"{DFU_ECID:X}", f"0x{DFU_ECID:x}", f"ECID:{DFU_ECID:016X}", f"{DFU_ECID:016x}"):
        code, out, err = cli("cert", spelling)
        assert code == 0, (spelling, err)
        document = json.loads(out)
        assert document["media"]["ecid"] == f"{DFU_ECID:X}" and document["media"]["serial"] == ""
    code, out, _ = cli("cert", f"ecid:{DFU_ECID:X}")
    assert code == 0 and json.loads(out)["media"]["ecid"] == f"{DFU_ECID:X}"


FACTS = Facts(imei="356938035643809", imei2="356938035643817", meid="35693803564380",
              storage_bytes=128_000_000_000, color="1", enclosure_color="#3b3b3c", battery_cycle_count=412,
              battery_design_capacity=3227, battery_full_charge_capacity=2700)


def restore_with_facts(recorder, clock, slot: int, n: int, facts: Facts = FACTS) -> None:
    """A phone whose lock check read its facts in a paired session, as station.core tells them."""
    phone = Phone(recorder, slot, clock)
    helpers.arrive(phone, n)
    recorder.on_facts(slot, facts)
    phone.send(LockResult(Lock.CLEAR, method="activation-server"), Confirm())
    phone.firmware()
    phone.send(*helpers.restore_events(), LockResult(Lock.CLEAR, method="activation-server"), Detached())


def test_the_facts_are_in_the_record_the_certificate_and_the_export(recorder, cli, clock):
    restore_with_facts(recorder, clock, 1, 5)
    assert recorder.flush(5)
    code, out, _ = cli("cert", FACTS.imei)
    media = json.loads(out)["media"]
    assert code == 0 and (media["imei"], media["imei2"], media["meid"]) == (FACTS.imei, FACTS.imei2, FACTS.meid)
    assert (media["storage_bytes"], media["color"], media["enclosure_color"]) == (128_000_000_000, "1", "#3b3b3c")
    assert media["battery"] == {"cycle_count": 412, "design_capacity_mah": 3227, "full_charge_capacity_mah": 2700}
    code, out, _ = cli("records", "export", "--format", "csv")
    [columns] = csv.DictReader(io.StringIO(out))
    assert columns["imei"] == FACTS.imei and columns["battery_cycle_count"] == "412"
    assert columns["storage_bytes"] == "128000000000" and columns["enclosure_color"] == "#3b3b3c"
    code, out, _ = cli("records", "export", "--json")
    [session] = json.loads(out)
    assert session["meid"] == FACTS.meid and session["battery_full_charge_capacity"] == 2700
    assert cli("records", "verify")[0] == 0


def test_a_fact_nobody_said_is_null_in_the_export(recorder, cli, clock):
    restore_with_facts(recorder, clock, 1, 5, Facts(battery_cycle_count=3))  # no cellular, no storage
    assert recorder.flush(5)
    [session] = json.loads(cli("records", "export", "--json")[1])
    assert (session["imei"], session["storage_bytes"], session["battery_cycle_count"]) == (None, None, 3)
    assert json.loads(cli("cert", helpers.device(5).serial)[1])["media"]["imei"] is None


def test_a_later_reading_fills_only_what_was_unknown(recorder, cli, clock):
    phone = Phone(recorder, 1, clock)
    helpers.arrive(phone, 5)
    recorder.on_facts(1, Facts(imei=FACTS.imei, battery_cycle_count=10))
    recorder.on_facts(1, Facts(imei=FACTS.imei2, battery_cycle_count=11, storage_bytes=64_000_000_000))
    phone.send(Detached())
    assert recorder.flush(5)
    [session] = json.loads(cli("records", "export", "--json")[1])
    assert (session["imei"], session["battery_cycle_count"], session["storage_bytes"]) == (
        FACTS.imei, 10, 64_000_000_000)


def test_found_by_serial_imei_second_imei_and_record_id(recorder, cli, clock):
    restore_with_facts(recorder, clock, 1, 5)
    helpers.clean_restore(Phone(recorder, 2, clock), 6)
    assert recorder.flush(5)
    for what in (helpers.device(5).serial, FACTS.imei, FACTS.imei2, "#1", "record:1", f"imei:{FACTS.imei2}",
                 f"serial:{helpers.device(5).serial}"):
        code, out, err = cli("cert", what)
        assert code == 0, (what, err)
        assert json.loads(out)["record_id"] == 1
    assert json.loads(cli("cert", "2")[1])["media"]["serial"] == helpers.device(6).serial
    code, out, err = cli("cert", f"imei:{helpers.device(6).serial}")
    assert (code, out, err) == (1, "", f"station: no certificate for IMEI {helpers.device(6).serial}\n")


def test_a_term_two_kinds_read_differently_is_a_usage_error(recorder, cli, clock):
    """"1" is record #1, and the ECID 0x1 of a phone restored later: the station will not pick one."""
    phone = Phone(recorder, 1, clock)
    helpers.clean_restore(phone, 7)
    one = Device(key="ECID:0000000000000001", mode=Mode.DFU, product_type="iPhone14,5", ecid=1)
    phone.send(Attached(one), Identified(one), LockCheckStarted(),
               LockResult(Lock.UNKNOWN, reason="DFU", method="none"), Confirm(long=True))
    phone.firmware()
    phone.send(*helpers.restore_events(), LockResult(Lock.CLEAR, method="activation-server"), Detached())
    assert recorder.flush(5)
    code, out, err = cli("cert", "1")
    assert (code, out) == (2, "") and "record #1 by record (record:1)" in err and "record #2 by ecid" in err
    assert json.loads(cli("cert", "ecid:1")[1])["record_id"] == 2


def test_an_edited_ecid_column_does_not_hand_out_another_phones_certificate(recorder, cli, station, clock):
    dfu_restore(Phone(recorder, 2, clock))
    helpers.clean_restore(Phone(recorder, 1, clock), 8)
    assert recorder.flush(5)
    conn = sqlite3.connect(db.path_in(station.state_dir))
    with conn:
        conn.execute("UPDATE sessions SET ecid = ? WHERE id = 2", (f"{DFU_ECID:X}",))
        conn.execute("UPDATE certificates SET issued_at = '9999' WHERE session_id = 2")
    conn.close()
    code, out, err = cli("cert", f"ecid:{DFU_ECID:X}")
    assert (code, out) == (1, "") and "names ecid" in err


def test_a_v2_database_opens_and_its_old_and_new_records_verify(station, clock, cli):
    """Records sealed before the fact columns keep their hashes; a new record with facts verifies."""
    with Recorder(station, now=clock) as recorder:
        helpers.clean_restore(Phone(recorder, 1, clock), 1)
    conn = sqlite3.connect(db.path_in(station.state_dir))
    with conn:  # what a v2 station left behind
        for name in db.FACT_COLUMNS:
            conn.execute("DROP INDEX IF EXISTS sessions_imei")
            conn.execute(f"ALTER TABLE sessions DROP COLUMN {name}")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.close()
    assert cli("records", "verify")[0] == 0  # a v2 copy read by this station, before the upgrade
    assert json.loads(cli("cert", "#1")[1])["record_id"] == 1
    with Recorder(station, now=clock) as recorder:
        assert recorder.problem() is None
        restore_with_facts(recorder, clock, 1, 2)
    code, out, err = cli("records", "verify")
    assert code == 0, err
    assert out.startswith("ok: 2 records, chain intact; 2 certificates")
    assert json.loads(cli("cert", FACTS.imei)[1])["record_id"] == 2
