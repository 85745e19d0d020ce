"""The state directory: private, one station at a time, never overwritten by a typo, readable by auditors."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from station import cli as station_cli
from station.records import db, keys, statedir
from station.records.recorder import Recorder

from . import helpers
from .helpers import Phone

ONE_LOCKED_PHONE = """
[scenario]
description = "one phone with Find My on"
duration = 600
[[phone]]
name = "locked"
slot = 1
model = "iPhone14,7"
ios = "17.5.1"
find_my = true
activation_lock = true
attach = 0
expect = "locked"
"""


@pytest.fixture
def restored(station, clock) -> Path:
    with Recorder(station, now=clock) as recorder:
        helpers.clean_restore(Phone(recorder, 1, clock), 1)
        helpers.locked(Phone(recorder, 1, clock), 2)
    return station.state_dir


def loose(path: Path) -> list[str]:
    return [f"{p} {stat.S_IMODE(p.lstat().st_mode):o}" for p in (path, *path.rglob("*"))
            if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) & 0o077]


def test_a_run_makes_the_state_dir_private_and_keeps_it_so(config_file, station, tmp_path, capsys, caplog):
    # An operator's umask (022), whatever the test process has: a station run in it sets its own.
    mask = os.umask(0o022)
    try:
        old_pair_record = station.state_dir / "pymobiledevice3-home" / "pymobiledevice3" / "old.plist"
        old_pair_record.parent.mkdir(parents=True)  # two folders others can read, as the file
        old_pair_record.write_text("host private key")
        old_pair_record.chmod(0o644)
        station.state_dir.chmod(0o755)
        scenario = tmp_path / "locked.toml"
        scenario.write_text(ONE_LOCKED_PHONE)
        code = station_cli.main(["run", "--config", str(config_file), "--sim", str(scenario), "--speed", "30"])
    finally:
        os.umask(mask)
    assert code == 0, capsys.readouterr().err
    assert loose(station.state_dir) == []  # what was there, and what this run wrote (pair records, logs)
    assert "made 4 path(s) private that others could read" in caplog.text


def test_a_second_station_on_the_same_state_dir_exits_with_one_line(config_file, station, tmp_path, capsys):
    station.state_dir.mkdir()
    held = statedir.lock(station.state_dir)  # the first station
    scenario = tmp_path / "locked.toml"
    scenario.write_text(ONE_LOCKED_PHONE)
    try:
        code = station_cli.main(["run", "--config", str(config_file), "--sim", str(scenario)])
    finally:
        os.close(held)
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines()[-1] == f"station: another station (pid {os.getpid()}) is running on {station.state_dir}"


@pytest.mark.parametrize("command", [("cert", "F2LT00000001"), ("records", "export", "--format", "csv")])
def test_output_never_replaces_the_key_the_database_or_an_existing_file(restored, cli, tmp_path, command):
    key = (restored / keys.KEY_FILE).read_bytes()
    for target in (restored / keys.KEY_FILE, restored / db.DB_FILE):
        code, _, err = cli(*command, "-o", str(target))
        assert code == 2 and "inside the state directory" in err
    assert (restored / keys.KEY_FILE).read_bytes() == key
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    code, _, err = cli(*command, "-o", str(existing))
    assert code == 2 and err == f"station: {existing}: exists (--force replaces it)\n"
    assert existing.read_text() == "keep me"
    assert cli(*command, "-o", str(existing), "--force")[0] == 0
    assert existing.read_text() != "keep me" and not list(tmp_path.glob(".existing.txt.*"))


def test_a_missing_key_with_records_is_a_fault_not_a_new_key(restored, station, clock, cli):
    (restored / keys.KEY_FILE).unlink()
    recorder = Recorder(station, now=clock)
    assert recorder.problem() == (
        f"records unavailable: station key {restored / keys.KEY_FILE} is missing but records signed "
        "by it exist: put the key back from a backup, or start a new chain with "
        "`station records new-chain --reason TEXT`")
    assert not (restored / keys.KEY_FILE).exists()
    code, out, err = cli("records", "new-chain", "--reason", "key lost with the old SD card")
    assert code == 0, err
    [archive] = (restored / "archive").iterdir()
    assert (archive / db.DB_FILE).is_file()  # nothing deleted
    with Recorder(station, now=clock) as recorder:
        assert recorder.problem() is None
        helpers.locked(Phone(recorder, 1, clock), 3)
    code, out, err = cli("records", "verify")
    assert code == 0 and out.startswith("ok: 1 records"), err
    conn = db.open_existing(restored)
    assert "key lost with the old SD card" in db.get_meta(conn, "previous_chain")
    conn.close()


def test_an_encrypted_key_and_a_dangling_symlink_are_one_line(station, clock, tmp_path):
    station.state_dir.mkdir()
    path = station.state_dir / keys.KEY_FILE
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    assert Recorder(station, now=clock).problem() == (
        f"records unavailable: {path} is encrypted: the station needs its key without a passphrase")
    path.unlink()
    path.symlink_to(tmp_path / "usb-stick" / "station_key.pem")
    assert Recorder(station, now=clock).problem() == (
        f"records unavailable: {path} is a symlink to {tmp_path / 'usb-stick' / 'station_key.pem'}, "
        "which does not exist")


def test_a_lost_wal_says_records_may_be_missing(station, clock, tmp_path, cli):
    with Recorder(station, now=clock) as recorder:
        helpers.clean_restore(Phone(recorder, 1, clock), 1)
        assert recorder.flush(5)
        shutil.copy(db.path_in(station.state_dir), tmp_path / "main-file-only")  # the WAL not checkpointed
        helpers.clean_restore(Phone(recorder, 1, clock), 2)
    shutil.copy(tmp_path / "main-file-only", db.path_in(station.state_dir))  # the crash took the WAL
    for suffix in ("-wal", "-shm"):
        Path(f"{db.path_in(station.state_dir)}{suffix}").unlink(missing_ok=True)
    assert Recorder(station, now=clock).problem().startswith(
        "records unavailable: records may be missing: the station sealed record #2 at chain position 2")
    code, _, err = cli("records", "verify")
    assert code == 1 and "records after position" in err


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv(1) to run the commands as another user")
def test_reading_commands_work_for_another_user_on_a_read_only_copy(restored):
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*nobody, sys.executable, "-c", "import station.cli"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("this checkout's venv is not readable by another user (a private clone directory)")
    auditor = Path(tempfile.mkdtemp())  # pytest's own tmp dirs are closed to other users
    shutil.copytree(restored, auditor / "state")
    (auditor / "state" / keys.KEY_FILE).unlink()  # an auditor gets no private key
    config = auditor / "station.toml"
    config.write_text(f'[station]\nstate_dir = "{auditor / "state"}"\n')
    for path in (auditor, *auditor.rglob("*")):
        path.chmod(0o555 if path.is_dir() else 0o444)  # read-only, for everyone
    home = Path(tempfile.mkdtemp())  # the auditor's own home, where pymobiledevice3 keeps its folder
    home.chmod(0o777)
    for command in (["records", "list"], ["records", "export", "--format", "json"], ["records", "verify"],
                    ["cert", "F2LT00000001"], ["key", "show"]):
        result = subprocess.run([*nobody, str(Path(sys.executable).parent / "station"), *command, "--config", str(config)],
                                capture_output=True, text=True, timeout=60,
                                env=dict(os.environ, HOME=str(home)))
        assert result.returncode == 0, (command, result.stderr)
        assert result.stderr == ""
    for path in (auditor, home):
        subprocess.run(["chmod", "-R", "u+w", str(path)], check=True)
        shutil.rmtree(path)


def test_a_simulated_run_on_an_unusable_state_dir_is_one_line(tmp_path, capsys):
    """A simulated run is a command: it says why and exits instead of waiting for records."""
    (tmp_path / "disk").write_text("")
    config = tmp_path / "station.toml"
    config.write_text(f'[station]\nstate_dir = "{tmp_path / "disk" / "state"}"\n[hardware]\nbackend = "sim"\n')
    scenario = tmp_path / "locked.toml"
    scenario.write_text(ONE_LOCKED_PHONE)
    code = station_cli.main(["run", "--config", str(config), "--sim", str(scenario)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines()[-1] == (f"station: records unavailable: cannot create {tmp_path / 'disk' / 'state'}: "
                                    "Not a directory")
