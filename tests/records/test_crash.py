"""kill -9 of a writer process in the middle of a burst, then reopen."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from station.records import db, keys
from station.records.recorder import Recorder
from station.records.verify import verify

TESTS = Path(__file__).resolve().parents[1]


def sealed(path: Path) -> int:
    conn = sqlite3.connect(path, timeout=5)
    try:
        return conn.execute("SELECT count(*) FROM sessions WHERE seq IS NOT NULL").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def test_kill_9_mid_burst(station, clock):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    child = subprocess.Popen([sys.executable, "-m", "records.crash_writer", str(station.state_dir)],
                             stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        path = db.path_in(station.state_dir)
        deadline = time.monotonic() + 15
        while sealed(path) < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert child.poll() is None, "the writer stopped by itself"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Working on the phone: interrupted; a phone sitting in a final state keeps that outcome.
    working = conn.execute("SELECT count(*) FROM sessions WHERE ended_at IS NULL AND result IS NULL"
                           ).fetchone()[0]
    assert working >= 1
    conn.close()

    with Recorder(station, now=clock):  # start-up closes what the killed run left open
        pass
    conn = db.open_existing(station.state_dir)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        verdict = verify(conn, keys.load_public(station.state_dir))
        assert verdict.problem is None and verdict.open == 0 and verdict.records >= 100
        stuck = dict(conn.execute("SELECT * FROM sessions WHERE id = 1").fetchone())
        assert (stuck["slot"], stuck["outcome"], stuck["reason"]) == (
            1, "interrupted", "interrupted in restoring")
        assert conn.execute("SELECT count(*) FROM sessions WHERE outcome = 'interrupted'"
                            ).fetchone()[0] == working
    finally:
        conn.close()
