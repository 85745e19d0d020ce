"""The station key and an unusable state directory."""
from __future__ import annotations

import stat
import time
from dataclasses import replace

import pytest

from station.records import keys
from station.records.recorder import Recorder
from station.records.store import Store
from station.records.statedir import RecordsUnavailable


def test_key_is_created_once_with_mode_0600(tmp_path):
    key = keys.load_or_create(tmp_path / "state")
    path = tmp_path / "state" / keys.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = keys.load_or_create(tmp_path / "state")
    assert keys.fingerprint(again.public_key()) == keys.fingerprint(key.public_key())


def test_loose_key_file_mode_is_tightened(tmp_path, caplog):
    keys.load_or_create(tmp_path)
    path = tmp_path / keys.KEY_FILE
    path.chmod(0o644)
    keys.load_or_create(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and "setting 0600" in caplog.text


def test_not_a_key(tmp_path):
    (tmp_path / keys.KEY_FILE).write_text("hello")
    (tmp_path / keys.KEY_FILE).chmod(0o600)
    with pytest.raises(RecordsUnavailable, match="is not a PEM private key"):
        keys.load_or_create(tmp_path)


def test_unusable_state_dir(station, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    recorder = Recorder(replace(station, state_dir=blocker / "state"))
    assert recorder.problem() == f"records unavailable: cannot create {blocker / 'state'}: Not a directory"


def test_unusable_database(station):
    station.state_dir.mkdir()
    (station.state_dir / "records.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(RecordsUnavailable, match="records unavailable: .*records.sqlite3: file is not a database"):
        Store(station, time.time)
    assert "file is not a database" in Recorder(station).problem()


def test_state_dir_created(station):
    with Recorder(station):
        pass
    assert (station.state_dir / "records.sqlite3").is_file()
    assert (station.state_dir / keys.KEY_FILE).is_file()
