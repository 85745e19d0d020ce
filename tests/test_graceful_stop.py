"""`systemctl stop` (SIGTERM) on a running station: the restore under way finishes, a second
SIGTERM stops it now and the records say interrupted. Through the `station` command."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "config/sim/one-restore.toml"


def start(tmp_path: Path) -> subprocess.Popen[str]:
    (tmp_path / "station.toml").write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n'
                                           f'[ipsw]\ncache_dir = "{tmp_path / "ipsw"}"\n')
    return subprocess.Popen([sys.executable, "-m", "station.cli", "run", "--config", str(tmp_path / "station.toml"),
                             "--sim", str(SCENARIO), "--speed", "100"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)


def wait_for_line(child: subprocess.Popen[str], text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    assert child.stderr is not None
    while time.monotonic() < deadline:
        line = child.stderr.readline()
        if text in line:
            return
        assert line or child.poll() is None, "the station ended early"
    raise AssertionError(f"never logged: {text}")


def sessions(tmp_path: Path) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "station.cli", "records", "list", "--json", "--config",
                             str(tmp_path / "station.toml")], capture_output=True, text=True, timeout=60)
    return json.loads(result.stdout)  # one array (README: Exit codes and JSON output)


def test_a_sigterm_lets_the_running_restore_finish(tmp_path):
    child = start(tmp_path)
    wait_for_line(child, "QUEUED -> RESTORING")
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=120)
    assert "stopping: 1 restore(s) finish first" in err
    assert "RESTORING -> VERIFYING" in err  # went on after the signal
    assert [(s["outcome"], s["reason"]) for s in sessions(tmp_path)] == [("done", "")]


def test_a_second_sigterm_stops_now_and_the_record_says_interrupted(tmp_path):
    child = start(tmp_path)
    wait_for_line(child, "QUEUED -> RESTORING")
    child.send_signal(signal.SIGTERM)
    wait_for_line(child, "stopping: 1 restore(s) finish first")
    started = time.monotonic()
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=60)
    assert time.monotonic() - started < 10
    assert [(s["outcome"], s["reason"]) for s in sessions(tmp_path)] == [
        ("interrupted", "interrupted in restoring")]
