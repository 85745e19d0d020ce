"""[hooks]: real commands (small scripts each test writes) run by the real station and recorder.

The first test is a whole simulated run through the `station` command; the others run a
station in this process, with a test double for the phone layer (as tests/test_core.py does),
so that a test can pull a phone or stop the station while a hook runs.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from hw.phones import Device, LockCheck, Lock, Mode, PhoneArrived, PhoneLeft, RestoreProgress
from station.config import Config, HooksSection, RestoreSection, StationSection
from station.core import Station
from station.hooks import process, runner
from station.hooks.runner import Hooks
from station.machine import State
from station.records.recorder import Recorder
from station.ui.labels import operator_reason

from leftovers import DRIVER

ROOT = Path(__file__).resolve().parents[1]

# Writes what it was told (and the certificate it was handed, while it exists) as one JSON line.
TELL = """
import json, os, sys
told = {name: os.environ.get(name) for name in sys.argv[2].split(",")}
told["PASSED"] = sorted(os.environ)
if told.get("CERTIFICATE"):
    with open(told["CERTIFICATE"]) as certificate:
        told["certificate_text"] = certificate.read()
    told["certificate_mode"] = oct(os.stat(told["CERTIFICATE"]).st_mode & 0o777)
with open(sys.argv[1], "a") as out:
    out.write(json.dumps(told) + "\\n")
print("told", told.get("OUTCOME"))
"""
TOLD = "SLOT,ECID,UDID,SERIAL,PRODUCT_TYPE,IOS,OUTCOME,REASON,CERTIFICATE,STATION_ID,RECORD_ID"


def script(tmp_path: Path, name: str, text: str) -> str:
    """A command line running ``text`` as a Python script."""
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}"


def told(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- a whole run: what each hook is told -----------------------------------------------------

SCENARIO = """
[scenario]
description = "one phone done, one locked, one failing"
engine = "timed"

[config.restore]
mode = "line"
retries = 0

[[phone]]
name = "clean"
slot = 1
model = "iPhone14,7"
ios = "17.5.1"
serial = "F2LXQ0J1N7KC"
ecid = 0x1A2B3C4D5E6F
attach = 1
expect = "done"

[[phone]]
name = "locked"
slot = 2
model = "iPhone15,4"
ios = "18.0.1"
serial = "G6TZK2P4Q1MN"
find_my = true
activation_lock = true
attach = 1
expect = "locked"

[[phone]]
name = "failing"
slot = 3
model = "iPhone14,5"
ios = "17.5.1"
serial = "DNPWL4H8Q6VR"
attach = 1
fail = { phase = "restore_image", percent = 60, times = 1, kind = "usb" }
expect = "failed"
"""


def station_command(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "station.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=120, cwd=config.parent)


def test_each_hook_is_told_its_phone_as_the_records_keep_it(tmp_path):
    out = tmp_path / "told.jsonl"
    tell = script(tmp_path, "tell", TELL) + f" {shlex.quote(str(out))} {TOLD}"
    config = tmp_path / "station.toml"
    config.write_text(f'[station]\nid = "bench-7"\nstate_dir = "{tmp_path / "state"}"\n'
                      f'[ipsw]\ncache_dir = "{tmp_path / "ipsw"}"\n[hooks]\n'
                      + "".join(f"{key} = {json.dumps(tell)}\n"
                                for key in ("on_attach", "on_locked", "on_done", "on_failed")))
    (tmp_path / "scenario.toml").write_text(SCENARIO)
    run = station_command(config, "run", "--sim", str(tmp_path / "scenario.toml"), "--speed", "100")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr

    records = {r["slot"]: r for r in json.loads(station_command(config, "records", "export", "--json").stdout)}
    by_slot: dict[int, dict[str, dict]] = {}
    for each in told(out):
        by_slot.setdefault(int(each["SLOT"]), {})[each["OUTCOME"]] = each
    assert {slot: sorted(events) for slot, events in by_slot.items()} == {
        1: ["attach", "done"], 2: ["attach", "locked"], 3: ["attach", "failed"]}
    for slot, events in by_slot.items():
        record = records[slot]
        for outcome, each in events.items():
            assert {name: each[name] for name in ("ECID", "UDID", "SERIAL", "PRODUCT_TYPE", "IOS",
                                                  "STATION_ID", "RECORD_ID")} == {
                "ECID": record["ecid"], "UDID": record["udid"], "SERIAL": record["serial"],
                # a restored phone runs the iOS it was restored to, where the record knows it
                "PRODUCT_TYPE": record["model"],
                "IOS": (outcome == "done" and record["ios_after"]) or record["ios_before"],
                "STATION_ID": "bench-7", "RECORD_ID": str(record["id"])}, (slot, outcome)
            # Nothing of the station's environment but PATH and LANG reaches a hook.
            assert set(each["PASSED"]) - {"PATH", "LANG", "LC_CTYPE"} == set(TOLD.split(","))
            hooks_rows = [t["detail"] for t in record["transitions"] if t["event"] == "Hook"]
            assert any(row.startswith(f"on_{'attach' if outcome == 'attach' else outcome}: exit 0 after ")
                       and f"told {outcome}" in row for row in hooks_rows), hooks_rows
    assert by_slot[1]["attach"]["ECID"] == "1A2B3C4D5E6F"
    assert by_slot[2]["locked"]["REASON"] == "Find My is on"
    assert by_slot[3]["failed"]["REASON"] == operator_reason(records[3]["reason"]) != ""
    assert [each["CERTIFICATE"] for slot in (2, 3) for each in by_slot[slot].values()] == ["", "", "", ""]
    assert by_slot[1]["attach"]["CERTIFICATE"] == ""

    # The done hook's file is the stored certificate, as `station cert` prints it; gone after.
    done = by_slot[1]["done"]
    assert done["CERTIFICATE"] == str(tmp_path / "state" / "certificates" / f"{records[1]['id']}.json")
    cert = station_command(config, "cert", f"#{records[1]['id']}")
    assert cert.returncode == 0 and done["certificate_text"] == cert.stdout
    assert json.loads(done["certificate_text"]) == records[1]["certificate"]
    assert done["certificate_mode"] == "0o600" and not Path(done["CERTIFICATE"]).exists()
    verify = station_command(config, "records", "verify")
    assert verify.returncode == 0 and verify.stdout.startswith("ok: 3 records"), verify.stdout + verify.stderr
    assert run.stderr.count("hook on_attach: exit 0") == 3


# -- in this process: a station, its recorder and its hooks ---------------------------------

class Phones:
    """The phone layer's interface, answering at once; restores take ``restore_s``."""

    erase_tool = "double EraseDevice"

    def __init__(self, restore_s: float = 0.05, locked: frozenset[str] = frozenset()) -> None:
        self.restore_s = restore_s
        self.locked = locked

    async def watch(self, emit):
        await asyncio.Event().wait()

    async def identify(self, device):
        await asyncio.sleep(0)
        return replace(device, product_type="iPhone14,7", serial=device.key.upper(), ios_version="17.5.1",
                       udid=f"00008110-{device.key.upper():0>16}", ecid=0xC0FFEE + len(device.key))

    async def check_lock(self, device, after_restore=False):
        await asyncio.sleep(0)
        if device.key in self.locked:
            return LockCheck(Lock.LOCKED, "Find My is on", "fmip")
        return LockCheck(Lock.CLEAR, "Find My off", "fmip")

    async def restore(self, device, firmware, report):
        report(RestoreProgress("restore image", 50))
        await asyncio.sleep(self.restore_s)

    async def erase(self, device, report):
        await asyncio.sleep(self.restore_s)


@contextlib.asynccontextmanager
async def hooked_station(state_dir: Path, hooks: HooksSection, phones: Phones, firmware=None):
    section = StationSection(id="bench-7", state_dir=state_dir)
    recorder = Recorder(section, retry_s=0.05)  # records that failed are tried again soon
    recorder.start()
    runner_ = Hooks(hooks, section, recorder)
    station = Station(Config(station=section, restore=RestoreSection(mode="line"), hooks=hooks), phones,
                      listeners=(recorder, runner_), counter_source=recorder, records=recorder,
                      clock=asyncio.get_running_loop().time, firmware=firmware)
    task = asyncio.create_task(station.run())
    try:
        yield station
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner_.stop()
        recorder.stop()


def plug(station: Station, slot: int, key: str) -> None:
    station.on_phone_event(PhoneArrived(slot, Device(key=key, mode=Mode.NORMAL)))


async def until(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def hook_rows(state_dir: Path) -> list[tuple[str, int, str]]:
    """(serial, slot, detail) of every Hook row of the records."""
    conn = sqlite3.connect(state_dir / "records.sqlite3")
    try:
        return conn.execute("SELECT s.serial, s.slot, t.detail FROM transitions t JOIN sessions s "
                            "ON s.id = t.session_id WHERE t.event = 'Hook' ORDER BY t.id").fetchall()
    finally:
        conn.close()


def outcomes(state_dir: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(state_dir / "records.sqlite3")
    try:
        return conn.execute("SELECT serial, outcome FROM sessions ORDER BY id").fetchall()
    finally:
        conn.close()


def hook_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("station.hooks")]


FAILING = """
import sys
print("printer offline", flush=True)
print("giving up", file=sys.stderr)
sys.exit(3)
"""


@dataclass(frozen=True)
class Ipsw:
    build: str = "22C152"
    version: str = "18.2"
    sha256: str = "ab" * 32
    path: None = None


class OneIpsw:
    """A cache with one build for every phone (the IPSW itself is the phone double's concern)."""

    def select(self, device: Device) -> Ipsw:
        return Ipsw()


async def test_a_restored_phones_done_hook_is_told_the_ios_it_runs_now(tmp_path):
    out = tmp_path / "told.jsonl"
    hooks = HooksSection(on_attach=script(tmp_path, "tell", TELL) + f" {out} {TOLD}",
                         on_done=script(tmp_path, "tell", TELL) + f" {out} {TOLD}")
    async with hooked_station(tmp_path / "state", hooks, Phones(), firmware=OneIpsw()) as station:
        station.on_phone_event(PhoneArrived(1, Device(key="p1", mode=Mode.NORMAL, ios_version="17.5.1")))
        await until(lambda: len(told(out)) == 2)
    assert [(each["OUTCOME"], each["IOS"]) for each in told(out)] == [("attach", "17.5.1"), ("done", "18.2")]


async def test_a_failing_hook_is_logged_and_recorded_and_the_phone_is_done(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    hooks = HooksSection(on_done=script(tmp_path, "failing", FAILING))
    async with hooked_station(tmp_path / "state", hooks, Phones()) as station:
        plug(station, 1, "p1")
        await until(lambda: hook_rows(tmp_path / "state"))
        assert station.ports[1].state is State.DONE
    [(serial, slot, detail)] = hook_rows(tmp_path / "state")
    assert (serial, slot) == ("P1", 1)
    assert detail.startswith("on_done: exit 3 after ") and detail.endswith(" s\nprinter offline\ngiving up\n")
    assert outcomes(tmp_path / "state") == [("P1", "done")]
    [line] = hook_lines(caplog)
    assert line.startswith("slot 1 [P1] hook on_done: exit 3 after ")
    assert line.endswith('; output: "printer offline\\ngiving up"')
    assert [r.levelname for r in caplog.records if r.name.startswith("station.hooks")] == ["WARNING"]
    assert not any(r.exc_info for r in caplog.records)


# Hangs, and so does a child it started, which ignores SIGTERM; both say who they are first.
HANGING = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                          "signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"], stdout=subprocess.PIPE)
child.stdout.readline()  # it ignores SIGTERM from now on
with open(sys.argv[1] + os.environ["SLOT"], "w") as out:
    out.write(f"{os.getpid()} {child.pid}")
print("waiting for the label printer", flush=True)
time.sleep(600)
"""


@pytest.fixture(autouse=True)
def no_hook_left(tmp_path: Path):
    """A test that failed leaves no hanging hook behind (the pids its HANGING hooks wrote)."""
    yield
    for written in tmp_path.glob("pids[0-9]*"):
        for pid in map(int, written.read_text().split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie is dead, only not yet reaped
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


async def test_a_hanging_hook_is_stopped_at_its_timeout_with_what_it_started(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    pids = tmp_path / "pids1"
    hooks = HooksSection(on_attach=script(tmp_path, "hanging", HANGING) + f" {tmp_path / 'pids'}", timeout_s=1.0)
    async with hooked_station(tmp_path / "state", hooks, Phones(restore_s=0.3)) as station:
        plug(station, 1, "p1")
        await until(pids.exists)
        # The hook hangs: its phone and the one plugged next are restored all the same, meanwhile.
        plug(station, 2, "p2")
        await until(lambda: station.ports[1].state is State.DONE and station.ports[2].state is State.DONE)
        assert not any("timed out" in line for line in hook_lines(caplog)), "the phones waited for the hook"
        hook, child = map(int, pids.read_text().split())  # slot 1's hook (slot 2's writes elsewhere)
        await until(lambda: len(hook_rows(tmp_path / "state")) == 2, timeout=5)
        assert not alive(hook) and not alive(child)
    assert hook_rows(tmp_path / "state") == [
        (serial, slot, "on_attach: timed out after 1 s\nwaiting for the label printer\n")
        for serial, slot in (("P1", 1), ("P2", 2))]
    assert outcomes(tmp_path / "state") == [("P1", "done"), ("P2", "done")]
    assert sorted(hook_lines(caplog)) == [
        f'slot {slot} [P{slot}] hook on_attach: timed out after 1 s; output: "waiting for the label printer"'
        for slot in (1, 2)]


@pytest.mark.parametrize("fault", ["missing", "not executable"])
async def test_a_hook_that_cannot_start_is_one_log_line_and_nothing_else(tmp_path, caplog, fault):
    caplog.set_level(logging.INFO)
    command = tmp_path / "print-label"
    if fault == "not executable":
        command.write_text("#!/bin/sh\necho printed\n")
        command.chmod(0o644)
    async with hooked_station(tmp_path / "state", HooksSection(on_done=str(command)), Phones()) as station:
        plug(station, 1, "p1")
        await until(lambda: hook_rows(tmp_path / "state"))
        assert station.ports[1].state is State.DONE
    why = "No such file or directory" if fault == "missing" else "Permission denied"
    assert hook_lines(caplog) == [f"slot 1 [P1] hook on_done: could not start: {command}: {why}"]
    assert hook_rows(tmp_path / "state") == [("P1", 1, f"on_done: could not start: {command}: {why}")]
    assert outcomes(tmp_path / "state") == [("P1", "done")]
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


async def test_a_hook_still_running_when_its_phone_leaves_is_only_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    started = tmp_path / "started"
    slow = script(tmp_path, "slow", f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\n"
                                    "time.sleep(1)\nprint('uploaded')\n")
    async with hooked_station(tmp_path / "state", HooksSection(on_done=slow), Phones()) as station:
        plug(station, 1, "p1")
        await until(started.exists)
        station.on_phone_event(PhoneLeft(1))  # the record is sealed while the hook runs
        await until(lambda: bool(hook_lines(caplog)), timeout=5)
    [line] = hook_lines(caplog)
    assert line.startswith("slot 1 [P1] hook on_done: exit 0 after ")
    assert line.endswith('; not recorded: record #1 was sealed when the phone left; output: "uploaded"')
    assert hook_rows(tmp_path / "state") == []
    assert outcomes(tmp_path / "state") == [("P1", "done")]
    verify = station_command(_config(tmp_path), "records", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n')
    return path


async def test_the_stop_of_the_station_stops_running_hooks_and_records_it(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(runner, "STOP_GRACE_S", 0.2)
    pids = tmp_path / "pids1"
    hooks = HooksSection(on_done=script(tmp_path, "hanging", HANGING) + f" {tmp_path / 'pids'}")
    begun = time.monotonic()
    async with hooked_station(tmp_path / "state", hooks, Phones()) as station:
        plug(station, 1, "p1")
        await until(pids.exists)
    assert time.monotonic() - begun < process.KILL_GRACE_S + 5  # not the hook's 60 s
    hook, child = map(int, pids.read_text().split())
    assert not alive(hook) and not alive(child)
    [(serial, _, detail)] = hook_rows(tmp_path / "state")
    assert serial == "P1" and detail.startswith("on_done: stopped with the station after ")
    assert outcomes(tmp_path / "state") == [("P1", "done")]
    [line] = hook_lines(caplog)
    assert line.startswith("slot 1 [P1] hook on_done: stopped with the station after ")


LOUD = """
import sys
chunk = b"x" * 65535 + b"\\n"
for _ in range(1600):  # 100 MB
    sys.stdout.buffer.write(chunk)
sys.stdout.buffer.write(b"the last line\\n")
"""
# As busy for about as long, printing nothing: what the machine's load costs the loop anyway.
QUIET = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\nwhile time.monotonic() < end: pass\n"


async def worst_lag_while(run) -> tuple[float, object]:
    """The longest the loop was late (10 ms timer) while ``run`` was awaited, and its result."""
    worst = 0.0

    async def sample() -> None:
        nonlocal worst
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - before - 0.01)

    sampler = asyncio.create_task(sample())
    try:
        result = await run
    finally:
        sampler.cancel()
    return worst, result


async def loud_and_quiet_lags() -> tuple[float, float, process.Finished]:
    """The loop's worst lag while the loud hook ran, and while a quiet one as long ran after it."""
    began = time.monotonic()
    loud_lag, result = await worst_lag_while(process.run([sys.executable, "-c", LOUD], {}, timeout_s=60))
    took = time.monotonic() - began
    quiet_lag, _ = await worst_lag_while(process.run([sys.executable, "-c", QUIET, str(took)], {}, timeout_s=60))
    return loud_lag, quiet_lag, result


async def test_a_hook_printing_megabytes_keeps_only_its_last_lines_and_the_loop_runs_on(tmp_path):
    loud_lag, quiet_lag, result = await loud_and_quiet_lags()
    assert result.ok and result.status.startswith("exit 0 after ")
    assert len(result.output.encode()) == process.TAIL_BYTES
    assert result.output.endswith("x\nthe last line\n")
    if loud_lag >= max(0.05, 3 * quiet_lag):
        # Once more before failing: a loop held by the output is held every time, while a machine
        # running other test processes can hold this one for a moment at any time.
        loud_lag, quiet_lag, _ = await loud_and_quiet_lags()
    assert loud_lag < max(0.05, 3 * quiet_lag), \
        f"the hook's output held the loop up {loud_lag * 1000:.0f} ms (a quiet hook: {quiet_lag * 1000:.0f} ms)"


async def test_one_phones_hooks_run_in_order_and_other_phones_hooks_alongside(tmp_path):
    log_file = tmp_path / "order"
    step = script(tmp_path, "step", "import os, sys, time\n"
                                    "with open(sys.argv[1], 'a') as out: out.write(f\"start {os.environ['SERIAL']} {os.environ['OUTCOME']}\\n\")\n"
                                    "time.sleep(0.5)\n"
                                    "with open(sys.argv[1], 'a') as out: out.write(f\"end {os.environ['SERIAL']} {os.environ['OUTCOME']}\\n\")\n")
    hooks = HooksSection(on_attach=f"{step} {log_file}", on_locked=f"{step} {log_file}")
    async with hooked_station(tmp_path / "state", hooks, Phones(locked=frozenset({"p1", "p2"}))) as station:
        plug(station, 1, "p1")
        plug(station, 2, "p2")
        await until(lambda: len(hook_rows(tmp_path / "state")) == 4)
    lines = log_file.read_text().splitlines()
    for serial in ("P1", "P2"):  # attach ends before locked starts
        own = [line for line in lines if f" {serial} " in line]
        assert own == [f"start {serial} attach", f"end {serial} attach",
                       f"start {serial} locked", f"end {serial} locked"]
    assert lines[:2] in (["start P1 attach", "start P2 attach"], ["start P2 attach", "start P1 attach"])


async def test_while_records_cannot_be_written_a_hook_runs_without_a_record_id(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(runner, "RECORD_WAIT_S", 0.3)
    blocker = tmp_path / "disk"
    blocker.write_text("")  # the state dir cannot be created: records cannot be kept
    out = tmp_path / "told.jsonl"
    hooks = HooksSection(on_attach=script(tmp_path, "tell", TELL) + f" {out} {TOLD}")
    async with hooked_station(blocker / "state", hooks, Phones()) as station:
        plug(station, 1, "p1")
        await until(lambda: bool(hook_lines(caplog)))
        assert station.ports[1].state is State.QUEUED  # no record, no erase; the hook ran all the same
        blocker.unlink()  # records work again: the phone goes on
        await until(lambda: station.ports[1].state is State.DONE)
    [each] = told(out)
    assert (each["SERIAL"], each["OUTCOME"], each["RECORD_ID"]) == ("P1", "attach", "")
    [line] = hook_lines(caplog)
    assert line.startswith("slot 1 [P1] hook on_attach: exit 0 after ")
    assert line.endswith('; not recorded: no record of it within 0.3 s; output: "told attach"')


# -- a whole run stopping while a hook hangs: nothing left behind -----------------------------

def test_a_run_that_ends_while_a_hook_hangs_stops_it_and_leaves_nothing_behind(tmp_path):
    hanging = script(tmp_path, "hanging", HANGING) + f" {tmp_path / 'pids'}"
    config = tmp_path / "station.toml"
    config.write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n[ipsw]\ncache_dir = "{tmp_path / "ipsw"}"\n'
                      f'[hooks]\non_done = {json.dumps(hanging)}\n')  # timeout_s: 60, longer than the run
    run = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "left.json"), str(config),
                          str(ROOT / "config/sim/one-restore.toml"), "100"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "left.json").read_text()) == {"tasks": [], "fds": [], "children": []}
    hook, child = map(int, (tmp_path / "pids1").read_text().split())
    assert not alive(hook) and not alive(child)
    assert "hook on_done: stopped with the station after " in run.stderr and "Traceback" not in run.stderr
    [record] = json.loads(station_command(config, "records", "export", "--json").stdout)
    assert record["outcome"] == "done"
    [row] = [t for t in record["transitions"] if t["event"] == "Hook"]
    assert row["detail"].startswith("on_done: stopped with the station after ")
    assert station_command(config, "records", "verify").returncode == 0
