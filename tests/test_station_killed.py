"""The station killed mid-work (SIGKILL: a crash, the OOM killer; to the records, a power cut).

Four phones restore at once in line mode when the station process is SIGKILLed. Its restore
workers die with it (the fork server sees its control socket close and kills them; each worker
has PR_SET_PDEATHSIG should the server die too). The station then starts again on the same
state directory and finds the same phones (same ECIDs and serials) in recovery mode, where an
interrupted restore leaves a phone. The sessions the crash left open are closed as
interrupted at start-up, each phone gets a new session under ``unknown_lock = "restore"`` that
ends done, every restore a worker ran is an attempt in some record, and the chain verifies.

The scenario format has no "the same phone, later" across two runs: the test writes two
scenario files with the same ecid/serial values, the second with ``mode = "recovery"``.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hw.worker import server as fork_server
from station.config import IpswSection
from station.ipsw.cache import IpswCache
from station.ipsw.synthetic import SIM_BUILD, provision

SLOTS = (1, 2, 3, 4)
SERIALS = {slot: f"F2LXQ0KILL0{slot}" for slot in SLOTS}
ECIDS = {slot: 0x1A0000000000 + slot for slot in SLOTS}
MODEL = "iPhone14,7"
OS_IMAGE_MB = 32  # the cached IPSW's OS image, streamed by the timed engine (not 8.7 GB of zeros)
FIRST_SPEED = 15  # a restore from iOS then lasts ~13 s: time to see all four running, and kill
SECOND_SPEED = 60


def scenario(mode: str, unknown_lock: str) -> str:
    text = ('[scenario]\nengine = "timed"\n'
            '[config.restore]\nmode = "line"\nmax_parallel_restores = 4\nmemory_per_restore_mb = 100\n'
            f'unknown_lock = "{unknown_lock}"\n')
    for slot in SLOTS:
        text += (f'[[phone]]\nname = "phone{slot}"\nslot = {slot}\nmodel = "{MODEL}"\nmode = "{mode}"\n'
                 f'serial = "{SERIALS[slot]}"\necid = {ECIDS[slot]}\n')
    return text


def command(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "station.cli", *args, "--config", str(tmp_path / "station.toml")]


def sessions(tmp_path: Path) -> list[dict]:
    result = subprocess.run(command(tmp_path, "records", "list", "--json"), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # one array (README: Exit codes and JSON output)


def wait_until(check: Callable[[], bool], what: str, child: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert child.poll() is None, f"the station ended before {what}"
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.2)


def running(pid: int) -> bool:
    """Alive: a zombie (dead, not yet reaped by whoever inherited it) is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def fork_server_processes(work_root: Path) -> list[int]:
    """The fork server and its workers (forks of it: the same command line) of this state dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"hw.worker.server" in cmdline and str(work_root).encode() in cmdline and running(int(entry.name)):
            found.append(int(entry.name))
    return found


def transitions(state_dir: Path, session_id: int) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(f"file:{state_dir / 'records.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT event, from_state, to_state FROM transitions WHERE session_id = ? "
                            "ORDER BY id", (session_id,)).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("with_server", [False, True], ids=["station", "station-and-fork-server"])
def test_a_station_killed_mid_restore_leaves_no_worker_and_no_restore_without_a_record(tmp_path, with_server):
    """``with_server``: the fork server is killed too (systemd's final SIGKILL to the whole
    service, a power cut): its workers die by PR_SET_PDEATHSIG, and nobody removes their
    directories until the next fork server starts."""
    state = tmp_path / "state"
    (tmp_path / "station.toml").write_text(f'[station]\nstate_dir = "{state}"\n'
                                           f'[ipsw]\ncache_dir = "{tmp_path / "ipsw"}"\n')
    provision(IpswCache(IpswSection(cache_dir=tmp_path / "ipsw")), [MODEL], OS_IMAGE_MB << 20)
    (tmp_path / "restoring.toml").write_text(scenario("normal", "hold"))
    (tmp_path / "found-again.toml").write_text(scenario("recovery", "restore"))
    first_log = tmp_path / "first.log"

    # 1. Four phones restoring at once, their sessions on disk; then SIGKILL.
    with first_log.open("w") as stderr:
        child = subprocess.Popen(command(tmp_path, "run", "--sim", str(tmp_path / "restoring.toml"),
                                         "--speed", str(FIRST_SPEED)),
                                 stdout=subprocess.DEVNULL, stderr=stderr, text=True, cwd=tmp_path)
    try:
        wait_until(lambda: len(re.findall(r"slot\d: worker \d+ started", first_log.read_text())) == 4,
                   "four workers started", child)
        wait_until(lambda: sorted((s["slot"], s["state"], s["attempts"]) for s in sessions(tmp_path))
                   == [(slot, "restoring", 1) for slot in SLOTS], "four sessions restoring on disk", child)
        log = first_log.read_text()
        assert log.count("QUEUED -> RESTORING") == 4 and "RESTORING -> " not in log
        workers = [int(pid) for pid in re.findall(r"slot\d: worker (\d+) started", log)]
        server = int(re.search(r"fork server (\d+) started", log).group(1))
        assert all(running(pid) for pid in [server, *workers])
        if with_server:  # the station stopped first, so it cannot see its workers end
            child.send_signal(signal.SIGSTOP)
            os.kill(server, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -9

    # 2. No worker outlives the station, nor the fork server; nothing is left in their work dir.
    def gone() -> bool:  # a process being killed is not at once a zombie: give it a moment
        return not fork_server_processes(state / "work") and not any(running(pid) for pid in [server, *workers])

    deadline = time.monotonic() + 10
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fork_server_processes(state / "work") == []
    assert [pid for pid in [server, *workers] if running(pid)] == []
    server_log = (state / "restore-logs" / "fork-server.log").read_text()
    left = list((state / "work").iterdir())
    if with_server:
        assert f"fork server {server} stopped" not in server_log and len(left) == 4
    else:
        # Killed by the server when the station's end of its control socket closed, not left to
        # die of a broken report pipe at their next write (a worker blocked on USB writes nothing).
        assert sorted(int(pid) for pid in re.findall(r"worker (\d+) exited with -9", server_log)) == sorted(workers)
        assert f"fork server {server} stopped" in server_log
        assert left == []
    assert [s["outcome"] for s in sessions(tmp_path)] == [None] * 4  # open: nobody closed them

    # 3. Started again: the same phones, found in recovery, where the interrupted restore left them.
    again = subprocess.run(command(tmp_path, "run", "--sim", str(tmp_path / "found-again.toml"),
                                   "--speed", str(SECOND_SPEED)),
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stdout.splitlines() == [f"slot {slot}: DONE          DONE     iPhone 14 {SERIALS[slot]}"
                                         for slot in SLOTS]
    assert "StationStarted: closed session(s) #1, #2, #3, #4" in again.stderr
    # What the killed workers left (pymobiledevice3's updater output and baseband zips on a
    # real restore) does not stay on the card for ever.
    assert not any(path.exists() for path in left)

    records = sessions(tmp_path)
    assert len(records) == 8
    interrupted = sorted(records[:4], key=lambda s: s["slot"])  # in the order they were identified
    restored = sorted(records[4:], key=lambda s: s["slot"])
    for slot, old, new in zip(SLOTS, interrupted, restored):
        identity = (slot, f"{ECIDS[slot]:X}", SERIALS[slot])
        # The session the crash left open is closed at start-up, as interrupted in its restore.
        assert (old["slot"], old["ecid"], old["serial"]) == identity
        assert (old["outcome"], old["reason"], old["attempts"]) == ("interrupted", "interrupted in restoring", 1)
        assert old["ended_at"] and old["result"] is None and old["restore_finished_at"] is None
        assert transitions(state, old["id"])[-1] == ("StationStarted", "restoring", "empty")
        # The phone found again is a new session: its lock unknown in recovery, restored by the
        # policy, verified at Hello.
        assert (new["slot"], new["ecid"], new["serial"]) == identity and new["id"] > old["id"]
        assert (new["lock_result"], new["lock_reason"]) == ("unknown", "RECOVERY: lock not readable")
        assert (new["outcome"], new["attempts"], new["verify_result"]) == ("done", 1, "clear")
        assert new["ipsw_build"] == old["ipsw_build"] == SIM_BUILD  # the cached IPSW, both times
        assert new["started_at"] >= old["ended_at"]

    # Every restore a worker ran is an attempt in a record: none ran without one.
    started = len(re.findall(r"slot\d: worker \d+ started", first_log.read_text() + again.stderr))
    assert started == sum(s["attempts"] for s in records) == 8

    verified = subprocess.run(command(tmp_path, "records", "verify"), capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ok: 8 records, chain intact; 4 certificates" in verified.stdout
    assert "0 session(s) open" in verified.stdout


def test_a_new_fork_server_removes_only_the_worker_dirs_of_servers_that_are_gone(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "60"])  # stands in for another server running there
    try:
        for name in (f"restore-{dead.pid}-abc", f"restore-{os.getpid()}-abc", f"restore-{live.pid}-abc",
                     "restore-abc_9", "other"):
            (tmp_path / name).mkdir()
        fork_server._remove_orphaned_workdirs(str(tmp_path))
    finally:
        live.kill()
        live.wait()
    # Our own pid was a server's before a reboot; the older name has no server to ask.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", f"restore-{live.pid}-abc", "restore-abc_9"]
