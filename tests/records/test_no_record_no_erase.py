"""No record, no erase: records that cannot be written stop restores, keep what was told, and heal.

The faults are real ones, made the way they happen on a station: an empty key
file (a card pulled while it was written), a directory where the database
should be, a database that fills its disk mid-run (SQLite's SQLITE_FULL, made
with ``PRAGMA max_page_count``: the same error, from the same code path, as a
full filesystem).
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from station.config import StationSection

from station.records import db, keys
from station.records.recorder import Recorder

from . import helpers
from .helpers import Phone


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def outcomes(state_dir: Path) -> list[tuple[str, str, int]]:
    conn = sqlite3.connect(db.path_in(state_dir))
    try:
        return conn.execute("SELECT serial, outcome, (SELECT count(*) FROM certificates c "
                            "WHERE c.session_id = s.id) FROM sessions s ORDER BY id").fetchall()
    finally:
        conn.close()


def test_an_empty_key_file_is_a_fault_that_clears_once_the_key_is_back(station, clock):
    station.state_dir.mkdir()
    key_file = station.state_dir / keys.KEY_FILE
    key_file.write_bytes(b"")  # the card was pulled while the key was being written
    with Recorder(station, now=clock, retry_s=0.02) as recorder:
        assert recorder.problem() == f"records unavailable: {key_file} is not a PEM private key"
        helpers.clean_restore(Phone(recorder, 1, clock), 1)  # told while the records failed
        assert not recorder.durable(1)
        key_file.unlink()  # no records were ever signed: a new key is what a first start makes
        wait_for(lambda: recorder.problem() is None and recorder.durable(1))
    assert outcomes(station.state_dir) == [("F2LT00000001", "done", 1)]


def test_a_directory_where_the_database_should_be(station, clock):
    (station.state_dir / db.DB_FILE).mkdir(parents=True)
    with Recorder(station, now=clock, retry_s=0.02) as recorder:
        assert "records.sqlite3" in recorder.problem()
        helpers.arrive(Phone(recorder, 1, clock), 1)
        (station.state_dir / db.DB_FILE).rmdir()
        wait_for(lambda: recorder.problem() is None and recorder.durable(1))


def test_a_disk_that_fills_mid_run_loses_no_certificate(station, clock):
    with Recorder(station, now=clock, retry_s=0.02) as recorder:
        helpers.clean_restore(Phone(recorder, 1, clock), 1)
        assert recorder.flush(5)
        conn = recorder._store._conn  # the station's own connection: its disk is now full
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        for n in range(2, 6):  # restores that finish while the disk is full
            helpers.clean_restore(Phone(recorder, n, clock), n)
        wait_for(lambda: recorder.problem() is not None)
        assert recorder.problem() == "records not written: database or disk is full"
        assert not recorder.durable(5)
        conn.execute("PRAGMA max_page_count = 1073741823")  # space is freed
        wait_for(lambda: recorder.problem() is None and recorder.durable(5))
    assert outcomes(station.state_dir) == [(f"F2LT{n:08d}", "done", 1) for n in range(1, 6)]


def test_every_item_told_while_failing_is_written_in_order(station, clock):
    """A phone that came and went while the records failed is one session, not a gap."""
    station.state_dir.mkdir()
    (station.state_dir / keys.KEY_FILE).write_bytes(b"")
    with Recorder(station, now=clock, retry_s=0.02) as recorder:
        phone = Phone(recorder, 1, clock)
        helpers.locked(phone, 1)
        helpers.failed(phone, 2)
        (station.state_dir / keys.KEY_FILE).unlink()
        wait_for(lambda: recorder.durable(1))
    assert outcomes(station.state_dir) == [("F2LT00000001", "locked", 0), ("F2LT00000002", "failed", 0)]


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB filesystem (tmpfs): its ENOSPC is the kernel's, not ours."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and mount(8) for a small tmpfs")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_real_full_disk_stops_and_then_frees_the_records(small_disk, clock):
    station = StationSection(id="bench-7", state_dir=small_disk / "state", records_reserve_mb=1)
    with Recorder(station, now=clock, retry_s=0.02) as recorder:
        helpers.clean_restore(Phone(recorder, 1, clock), 1)
        assert recorder.flush(5) and recorder.problem() is None
        filler = small_disk / "filler"
        with filler.open("wb") as stream:  # someone's log fills the card
            with contextlib.suppress(OSError):
                while True:
                    stream.write(b"\0" * 65536)
        assert recorder.problem().startswith("records: 0 MB free on")  # the reserve, before any write fails
        for n in range(2, 40):
            helpers.clean_restore(Phone(recorder, 1, clock), n)
        wait_for(lambda: (recorder.fault or "").startswith("records not written"))
        assert "disk is full" in recorder.fault
        filler.unlink()
        wait_for(lambda: recorder.problem() is None and recorder.durable(1), timeout=10)
    assert outcomes(station.state_dir) == [(f"F2LT{n:08d}", "done", 1) for n in range(1, 40)]
