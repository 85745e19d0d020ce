"""The recorder fed with what the real state machine produces for realistic port histories."""
from __future__ import annotations

import logging
import sqlite3

from pathlib import Path

from hw.phones import Device, Mode
from station.machine import Attached, Detached, PortFault
from station.records import db
from station.records.recorder import Recorder

from . import helpers
from .helpers import Phone


def sessions(recorder: Recorder, state_dir: Path) -> list[dict]:
    assert recorder.flush(5)
    conn = db.open_existing(state_dir)
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM sessions ORDER BY id")]
    finally:
        conn.close()


def transitions(state_dir: Path, session_id: int) -> list[tuple[str, str, str]]:
    conn = db.open_existing(state_dir)
    try:
        return [(t["event"], t["from_state"], t["to_state"]) for t in db.transitions(conn, session_id)]
    finally:
        conn.close()


def test_clean_restore(recorder, station, clock):
    helpers.clean_restore(Phone(recorder, 3, clock), 1)
    [session] = sessions(recorder, station.state_dir)
    assert session["outcome"] == session["result"] == "done"
    assert session["station_id"] == "bench-7" and session["slot"] == 3
    assert session["operator"] == "alice" and session["location"] == "Shop, bench 7"
    device = helpers.device(1)
    assert (session["udid"], session["ecid"], session["serial"], session["model"]) == (
        device.udid, f"{device.ecid:X}", device.serial, "iPhone14,7")
    assert (session["ios_before"], session["ios_after"]) == ("16.1", "17.5.1")
    assert (session["ipsw_build"], session["ipsw_sha256"]) == ("21F90", helpers.IPSW_SHA256)
    assert (session["lock_method"], session["lock_result"]) == ("activation-server", "clear")
    assert (session["verify_result"], session["verified"]) == ("clear", 1)
    assert session["attempts"] == 1 and session["actions"] == "confirm"
    for column in ("started_at", "lock_checked_at", "restore_started_at", "restore_finished_at",
                   "result_at", "ended_at"):
        assert session[column], column
    assert session["seq"] == 1 and session["hash"]
    steps = transitions(station.state_dir, session["id"])
    assert steps[0] == ("Identified", "detecting", "identified")
    assert ("RestoreFinished", "restoring", "verifying") in steps
    assert ("LockResult", "verifying", "done") in steps
    assert steps[-1] == ("Detached", "done", "empty")
    assert not any(s[0] == "Progress" for s in steps)  # progress ticks are not transitions


def test_locked(recorder, station, clock):
    helpers.locked(Phone(recorder, 1, clock), 2)
    [session] = sessions(recorder, station.state_dir)
    assert session["outcome"] == "locked"
    assert (session["lock_method"], session["lock_result"], session["lock_reason"]) == (
        "fmip", "locked", "Find My is on")
    assert session["reason"] == "Find My is on" and session["attempts"] == 0
    # The operator's Confirm changed nothing on a locked port; it is still on record.
    assert session["actions"] == "confirm"
    assert ("Confirm", "locked", "locked") in transitions(station.state_dir, session["id"])


def test_refused(recorder, station, clock):
    helpers.refused(Phone(recorder, 1, clock), 2)
    [session] = sessions(recorder, station.state_dir)
    assert session["outcome"] == "refused" and session["lock_result"] == "unknown"
    assert session["reason"] == "lock unknown (DFU: not checkable)"


def test_failed_then_retried(recorder, station, clock):
    helpers.failed_then_retried(Phone(recorder, 1, clock), 4)
    [session] = sessions(recorder, station.state_dir)
    assert session["outcome"] == "done" and session["reason"] == ""
    assert session["attempts"] == 3  # one automatic and one manual retry
    assert session["actions"] == "confirm;confirm"
    steps = transitions(station.state_dir, session["id"])
    assert ("RestoreFailed", "restoring", "queued") in steps
    assert ("RestoreFailed", "restoring", "failed") in steps
    assert ("Confirm", "failed", "queued") in steps


def test_failed(recorder, station, clock):
    helpers.failed(Phone(recorder, 1, clock), 5)
    [session] = sessions(recorder, station.state_dir)
    assert session["outcome"] == "failed" and session["reason"] == "device rejected the image"


def test_detached_mid_restore(recorder, station, clock):
    helpers.detached_mid_restore(Phone(recorder, 2, clock), 6)
    [session] = sessions(recorder, station.state_dir)
    assert session["outcome"] == "detached" and session["result"] is None
    assert session["reason"] == "detached in restoring"
    assert session["actions"] == "confirm;cancel;confirm"


def test_abort_is_an_operator_action(recorder, station, clock):
    helpers.aborted(Phone(recorder, 2, clock), 7)
    [session] = sessions(recorder, station.state_dir)
    assert session["outcome"] == "failed" and session["reason"] == "aborted by operator"
    assert session["actions"] == "confirm;abort"


def test_no_session_before_identification(recorder, station, clock):
    phone = Phone(recorder, 1, clock)
    phone.send(Attached(Device(key="k", mode=Mode.DFU)), Detached())
    phone.send(Attached(Device(key="k", mode=Mode.DFU)), PortFault("usb error"), Detached())
    assert sessions(recorder, station.state_dir) == []
    assert recorder.counters().failed == 0


def test_one_session_per_phone_on_the_same_slot(recorder, station, clock):
    phone = Phone(recorder, 5, clock)
    helpers.clean_restore(phone, 1)
    helpers.locked(phone, 2)
    helpers.clean_restore(phone, 3)
    rows = sessions(recorder, station.state_dir)
    assert [(r["slot"], r["serial"], r["outcome"]) for r in rows] == [
        (5, helpers.device(1).serial, "done"), (5, helpers.device(2).serial, "locked"),
        (5, helpers.device(3).serial, "done")]
    assert [r["seq"] for r in rows] == [1, 2, 3]


def test_open_session_is_written_as_events_happen(recorder, station, clock):
    phone = Phone(recorder, 1, clock)
    helpers.arrive(phone, 1)
    [session] = sessions(recorder, station.state_dir)
    assert session["state"] == "checking_lock" and session["ended_at"] is None and session["seq"] is None


def test_a_failed_batch_is_kept_and_written_when_writing_works_again(station, monkeypatch, caplog, clock):
    """Nothing is dropped: the items of a failed write stay queued, in order, until they are written."""
    caplog.set_level(logging.INFO)
    with Recorder(station, now=clock, retry_s=0.05) as recorder:
        real_apply = recorder._store.writer.apply
        failures = iter([True, True])

        def failing_twice(item):
            if next(failures, False):
                raise OSError("disk full")
            real_apply(item)

        monkeypatch.setattr(recorder._store.writer, "apply", failing_twice)
        helpers.clean_restore(Phone(recorder, 1, clock), 1)
        assert recorder.flush(5)
        assert recorder.problem() is None and "records are written again" in caplog.text
        assert "records not written: disk full (kept" in caplog.text
        helpers.locked(Phone(recorder, 2, clock), 2)
    rows = sqlite3.connect(db.path_in(station.state_dir)).execute(
        "SELECT outcome, (SELECT count(*) FROM certificates c WHERE c.session_id = s.id) "
        "FROM sessions s ORDER BY id").fetchall()
    assert rows == [("done", 1), ("locked", 0)]


def test_stop_writes_what_is_queued(station, clock):
    recorder = Recorder(station, now=clock)
    recorder.start()
    for slot in range(1, 9):
        helpers.clean_restore(Phone(recorder, slot, clock), slot)
    recorder.stop()
    conn = db.open_existing(station.state_dir)
    assert conn.execute("SELECT count(*) FROM sessions WHERE outcome = 'done'").fetchone()[0] == 8
    conn.close()


def test_stop_closes_open_sessions(station, clock):
    """A phone left in a working state is interrupted; one sitting in a final state keeps it.
    (After a crash the next start-up does the same: test_crash.)"""
    with Recorder(station, now=clock) as recorder:
        helpers.arrive(Phone(recorder, 1, clock), 1)
        helpers.clean_restore(Phone(recorder, 2, clock), 2, detach=False)
        helpers.failed(Phone(recorder, 3, clock), 3, detach=False)
    conn = db.open_existing(station.state_dir)
    rows = [dict(row) for row in conn.execute("SELECT * FROM sessions ORDER BY id")]
    conn.close()
    assert [(r["outcome"], r["reason"]) for r in rows] == [
        ("interrupted", "interrupted in checking_lock"), ("done", ""),
        ("failed", "device rejected the image")]
    assert all(r["ended_at"] and r["seq"] for r in rows)
    assert transitions(station.state_dir, rows[0]["id"])[-1] == (
        "StationStopped", "checking_lock", "empty")


def test_the_writers_page_cache_stays_small(recorder, station):
    # sqlite's default cache (2 MB) filled as the records grew: the station's memory rose with it
    # through bench.soak's first ~550 phones, for no gain to a writer that appends sessions.
    assert recorder.flush(5)
    conn = recorder._store._conn
    (pages,) = conn.execute("PRAGMA cache_size").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    cache_bytes = -pages * 1024 if pages < 0 else pages * page_size
    assert cache_bytes <= 512 * 1024
