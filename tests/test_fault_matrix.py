"""Fault matrix (issue 13 item 4): each restore phase x each fault, ending as the station's policy says.

Every cell plays a scenario with `station run --sim` on the timed engine at 300x: a phone whose
restore meets the fault when it reaches the row's phase (the scenario key ``fault_at``, see
station/scenario.py), and a neighbour on another slot restoring at the same time. Per cell it
checks what a user sees: the port's end state, the session record (outcome, reason, attempts),
that [restore] retries was honoured, the neighbour, and that nothing was left behind (no worker
or other child process, no asyncio task, no file descriptor the run opened).

The faults local to one port (pull, kill-worker, hang) are played a few rows of a column per
scenario, every row a phone of its own: each faulted phone is also the others' neighbour. The station-wide ones
(network-down, usbmuxd-restart) reach every restore that needs the service at that moment, so
each cell has a scenario of its own, and its neighbour's fate follows the same policy from the
phase the neighbour was in (the simulation logs it when it strikes).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from hw.phones import Mode
from hw.worker import phases

from leftovers import DRIVER

ROOT = Path(__file__).resolve().parents[1]
SPEED = 300
PARALLEL = 4  # scenarios played at once: mostly waiting on simulated time
GROUP = 4  # faulted phones (and a neighbour) per scenario: a dozen restores at once at 300x, on
# two busy cores, starve the simulated daemons past lockdownd's 3 s bound
STAGGER_S = 120  # scenario seconds between two phones' arrivals (0.4 s), for the same reason
RETRIES = 1  # [restore] retries
TIMEOUT_S = 10  # [restore] timeout_s (its lower bound): a hung restore is stopped after this
# Scenario seconds the service stays down: the network until this long after the struck restore
# attempt ended (so it is down at its next signing request, however slow a busy machine plays
# it); usbmuxd a quick restart.
DOWN_S = {"network-down": 150, "usbmuxd-restart": 150}

# The policy, cell by cell. A pulled phone is a departure, never a retry (machine.py: Detached
# empties the port and stops its work; the layer reports a failed restore only once the slot knows
# whether its phone is still there). Every other fault here is retryable: a worker killed by a
# signal ("restore worker died", exit code < 0: hw/worker/supervisor.py), a timeout, a lost
# usbmuxd connection (USB), Apple out of reach (NETWORK): hw/worker/messages.py RETRYABLE. So
# with retries = 1 the second attempt restores the phone (machine.py _restore_failed: requeued
# while attempts <= retries), and a fault struck on every attempt fails it after retries + 1.
# A fault that does not reach the restore leaves it alone:
# - usbmuxd carries the restore in enter_recovery (lockdownd) and from prepare_disk on (restored);
#   iBoot in recovery (send_ibec, boot_ramdisk) is reached over libusb;
# - a restore asks Apple's signing server when it begins and for the baseband (at the start of
#   update_baseband): a network down from update_baseband's middle on is not met;
# - no worker runs during the check at Hello (nothing to kill); the simulated Hello check asks the
#   simulated activation server, which the station's network fault does not cut; a usbmuxd
#   restart there only delays it.
#   E  EMPTY: session "detached", 1 attempt, no certificate
#   R  retried: DONE (verified at Hello), 2 attempts
#   D  unaffected: DONE (verified), 1 attempt
#   F  retries exhausted: FAILED, retries + 1 attempts
#   U  restored, not verified: DONE? (the check at Hello gave up on a phone that stopped answering)
#   P  restored, not verified: DONE? (the check at Hello gave up waiting for the pulled phone; the
#      port empties once the slot's hold on the rebooting phone ends, hello_wait after the pull)
#   .  not played
# "hello" is the check at the Hello screen after the restore (the port VERIFYING). The last row
# strikes on every attempt (fault_at times = retries + 1).
MATRIX = """
row                  phase            percent  times  pull  kill-worker  network-down  hang  usbmuxd-restart
enter_recovery       enter_recovery   50       1      E     R            R             R     R
send_ibec            send_ibec        50       1      E     R            R             R     D
boot_ramdisk         boot_ramdisk     50       1      E     R            R             R     D
restore_image@0      restore_image    0        1      E     R            R             R     R
restore_image@50     restore_image    50       1      E     R            R             R     R
restore_image@99     restore_image    99       1      E     R            R             R     R
verify_restore       verify_restore   50       1      E     R            R             R     R
flash_firmware       flash_firmware   50       1      E     R            R             R     R
update_baseband      update_baseband  50       1      E     R            D             R     R
reboot               reboot           50       1      E     R            D             R     R
hello                hello            0        1      P     D            D             U     D
every-attempt        restore_image    50       2      .     F            .             F     .
"""

PORT_LOCAL = ("pull", "kill-worker", "hang")
STATION_WIDE = ("network-down", "usbmuxd-restart")
USBMUX_PHASES = {phases.ENTER_RECOVERY, *phases.sequence(Mode.NORMAL)[3:]}  # restored's


@dataclass(frozen=True)
class Cell:
    row: str
    phase: str
    percent: float
    times: int
    fault: str
    expected: str  # a letter of the legend above


def cells() -> list[Cell]:
    header, *lines = MATRIX.strip().splitlines()
    faults = header.split()[4:]
    found = []
    for line in lines:
        row, phase, percent, times, *letters = line.split()
        for fault, letter in zip(faults, letters, strict=True):
            if letter != ".":
                found.append(Cell(row, phase, float(percent), int(times), fault, letter))
    return found


CELLS = cells()
EXPECT = {"E": "empty", "R": "done", "D": "done", "F": "failed", "U": "done_unverified", "P": "done_unverified"}


def runs() -> dict[str, list[Cell]]:
    """Which cells play together: a column of port-local faults, or one station-wide cell."""
    grouped: dict[str, list[Cell]] = {}
    for cell in CELLS:
        name = cell.fault if cell.fault in PORT_LOCAL else f"{cell.fault}-{cell.row}"
        grouped.setdefault(name, []).append(cell)
    split: dict[str, list[Cell]] = {}
    for name, group in grouped.items():
        for first in range(0, len(group), GROUP):
            split[name if len(group) <= GROUP else f"{name}-{first // GROUP + 1}"] = group[first:first + GROUP]
    return split


def phone_name(cell: Cell) -> str:
    return f"{cell.row}-{cell.fault}"


def scenario(cells: list[Cell]) -> str:
    """The cells' phones on slots 1..n, the neighbour on n + 1, each slot with a USB link of its own."""
    slots = len(cells) + 1
    links = ", ".join(f"s{slot} = {{ slots = [{slot}], mb_s = 40 }}" for slot in range(1, slots + 1))
    text = ('[scenario]\nengine = "timed"\nusbmuxd = "always"\nduration = 20000\n'
            f'[config.restore]\nmode = "line"\nretries = {RETRIES}\ntimeout_s = {TIMEOUT_S}\n'
            'max_parallel_restores = 16\nmemory_per_restore_mb = 100\n'
            f'[config.hub]\nslots = {slots}\nlinks = {{ {links} }}\n')
    for slot, cell in enumerate(cells, 1):
        fault = (f'{{ phase = "{cell.phase}", percent = {cell.percent:g}, fault = "{cell.fault}", '
                 f'times = {cell.times}, down_s = {DOWN_S.get(cell.fault, 0)} }}')
        if cell.row == "hello" and cell.fault == "kill-worker":
            fault = ""  # no worker runs then: the restore plays without a fault (see MATRIX)
        text += (f'[[phone]]\nname = "{phone_name(cell)}"\nslot = {slot}\nserial = "F2LXQ0FM{slot:04d}"\n'
                 f'attach = {slot * STAGGER_S}\n'
                 f'expect = "{EXPECT[cell.expected]}"\n' + (f"fault_at = {fault}\n" if fault else ""))
    # The neighbour arrives with the middle phone (before a lone one): restoring beside them.
    return text + (f'[[phone]]\nname = "neighbour"\nslot = {slots}\nserial = "F2LXQ0FMNBR0"\n'
                   f'attach = {(len(cells) // 2) * STAGGER_S}\nexpect = "done"\n')


# A phone whose identification or lock check found lockdownd silent past its 3 s bound never got
# to its restore: on a machine busy with other work, the simulated daemons (in the station's
# process) were starved. That is the load's doing, before any fault: such a scenario is played
# once more (a second time it fails the test).
STARVED = re.compile(r"(DETECTING -> FAILED|CHECKING_LOCK -> NEEDS_CONFIRM) \(lockdownd did not answer")


# A scenario starts only once those running are past that part (or this long after they began):
# four stations starting and pairing their phones at once starved each other in a fresh-clone CI
# run, twice in a row for the same scenarios.
CHECKING_CAP_S = 10
LOCK_CHECKED = re.compile(r"slot (\d+) \[[^]]*\] (?:CHECKING_LOCK|DETECTING) -> (?!IDENTIFIED)")


def checked(folder: Path, phones: int) -> bool:
    """Whether each of a scenario's phones is identified and its lock check ended."""
    log = (folder / "err").read_text(errors="replace")
    return len(set(LOCK_CHECKED.findall(log))) >= phones


@dataclass
class Played:
    folder: Path
    returncode: int
    stdout: str
    log: str
    seconds: float

    @property
    def left(self) -> dict:
        return json.loads((self.folder / "left.json").read_text())

    @property
    def sessions(self) -> dict[int, list[dict]]:
        by_slot: dict[int, list[dict]] = {}
        for session in json.loads((self.folder / "left.json.records").read_text()):
            by_slot.setdefault(session["slot"], []).append(session)
        return by_slot


def start(folder: Path, cells: list[Cell]) -> subprocess.Popen[bytes]:
    (folder / "station.toml").write_text(f'[station]\nstate_dir = "{folder / "state"}"\n'
                                         f'[ipsw]\ncache_dir = "{folder / "ipsw"}"\n')
    (folder / "scenario.toml").write_text(scenario(cells))
    command = [sys.executable, "-c", DRIVER, str(folder / "left.json"), str(folder / "station.toml"),
               str(folder / "scenario.toml"), str(SPEED)]
    # Output to files, not pipes: a pipe nobody reads yet fills up and blocks the station.
    with (folder / "out").open("w") as out, (folder / "err").open("w") as err:
        return subprocess.Popen(command, stdout=out, stderr=err, cwd=folder, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Played]:
    waiting = sorted(runs().items(), key=lambda item: item[1][0].fault != "hang")  # the long ones first
    running: dict[str, tuple[Path, float, subprocess.Popen[bytes]]] = {}
    finished: dict[str, Played] = {}
    replayed: set[str] = set()
    began = time.monotonic()
    while waiting or running:
        while waiting and len(running) < PARALLEL and all(
                checked(folder, len(runs()[name]) + 1) or time.monotonic() - since > CHECKING_CAP_S
                for name, (folder, since, _) in running.items()):
            name, group = waiting.pop(0)
            folder = tmp_path_factory.mktemp(name)
            running[name] = (folder, time.monotonic(), start(folder, group))
        for name, (folder, since, process) in list(running.items()):
            if process.poll() is not None:
                del running[name]
                log = (folder / "err").read_text()
                if STARVED.search(log) and name not in replayed:
                    replayed.add(name)  # not the matrix's doing: played once more (see STARVED)
                    waiting.insert(0, (name, runs()[name]))
                    continue
                finished[name] = Played(folder, process.returncode, (folder / "out").read_text(), log,
                                        time.monotonic() - since)
            elif time.monotonic() - since > 120:
                process.kill()
        time.sleep(0.1)
    print(f"\nfault matrix: {len(finished)} scenarios in {time.monotonic() - began:.0f} s "
          f"(longest {max(p.seconds for p in finished.values()):.0f} s; played again: {sorted(replayed)})")
    return finished


def run_of(cell: Cell) -> str:
    return next(name for name, group in runs().items() if cell in group)


def workers_of(state: Path) -> list[int]:
    """Processes of this run's fork server or its workers still alive (not zombies)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if str(state).encode() in cmdline and stat[stat.rindex(")") + 2] != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: f"{c.row}-{c.fault}")
def test_fault_ends_as_the_policy_says(played, cell):
    run = played[run_of(cell)]
    slot = runs()[run_of(cell)].index(cell) + 1
    tail = run.stdout + run.log[-3000:]
    assert "Traceback" not in run.log, run.log[-6000:]
    # The port's end state (the command judges every port against its phone's expect).
    line = next(line for line in run.stdout.splitlines() if line.startswith(f"slot {slot}:"))
    assert "UNEXPECTED" not in line, tail
    state = {"E": "EMPTY", "R": "DONE", "D": "DONE", "F": "FAILED", "U": "DONE", "P": "DONE"}[cell.expected]
    assert line.split()[2] == state, tail

    # The session record: one per phone, its outcome, reason and attempts.
    [session] = run.sessions[slot]
    attempts = {"E": 1, "R": RETRIES + 1, "D": 1, "F": RETRIES + 1, "U": 1, "P": 1}[cell.expected]
    assert session["attempts"] == attempts, (session, tail)
    assert session["serial"] == f"F2LXQ0FM{slot:04d}"
    if cell.expected == "E":
        assert (session["outcome"], session["reason"]) == ("detached", "detached in restoring"), session
        assert session["verify_result"] in (None, "")
    elif cell.expected == "F":
        assert session["outcome"] == "failed" and session["reason"], session
        assert session["restore_finished_at"] is None
    else:
        assert session["outcome"] == "done", session
        assert session["reason"].startswith("not verified: ") if cell.expected in "UP" else not session["reason"]
        assert session["restore_finished_at"] is not None
        assert session["verify_result"] == ("unknown" if cell.expected in "UP" else "clear"), session
    if cell.expected in "UP":
        assert re.search(rf"slot {slot} \[[^]]*\] VERIFYING -> DONE \(not verified: lockdownd did not answer", run.log)
    # Retried exactly as the policy says: each retry names the failure, and a phone never retried
    # more than [restore] retries times.
    retries = re.findall(rf"slot {slot} \[[^]]*\] RESTORING -> QUEUED \(retrying: ([^\n]*)\)", run.log)
    assert len(retries) == attempts - 1, retries
    reason = {"kill-worker": "restore worker died (killed by SIGKILL)", "hang": f"timed out after {TIMEOUT_S} s",
              "network-down": "cannot reach Apple", "usbmuxd-restart": "USB connection lost"}.get(cell.fault, "")
    for why in retries:
        assert why.startswith(reason), retries
    if cell.expected == "F":
        assert session["reason"].startswith(reason), session

    # The neighbour, restoring beside it.
    [neighbour] = run.sessions[len(runs()[run_of(cell)]) + 1]
    assert (neighbour["outcome"], neighbour["verify_result"]) == ("done", "clear"), neighbour
    assert neighbour["attempts"] in neighbour_attempts(cell, run), (neighbour, tail)

    # Nothing left behind.
    assert run.returncode == 0, tail
    assert run.left == {"tasks": [], "fds": [], "children": []}, run.left
    assert workers_of(run.folder / "state") == []
    server_log = (run.folder / "state" / "restore-logs" / "fork-server.log").read_text()
    forked = re.findall(r"worker (\d+) forked", server_log)
    exited = re.findall(r"worker (\d+) exited", server_log)
    assert sorted(forked) == sorted(exited) and forked, server_log
    assert re.search(r"fork server \d+ stopped", server_log)
    killed = re.findall(r"worker \d+ exited with -9", server_log)
    if cell.fault == "kill-worker" and cell.row != "hello":
        assert len(killed) >= cell.times, server_log


def neighbour_attempts(cell: Cell, run: Played) -> set[int]:
    """A port-local fault never reaches the neighbour. A station-wide one reaches it when it was in a
    phase that needs the service, as for the faulted phone (it was struck once: times = 1)."""
    if cell.fault in PORT_LOCAL:
        return {1}
    struck = re.search(rf"scenario: {cell.fault} for {re.escape(phone_name(cell))} .*\(restores under "
                       r"way: ([^)]*)\)", run.log)
    assert struck, run.log[-3000:]
    phase = dict(part.split(" in ", 1) for part in struck.group(1).split(", ") if " in " in part).get("neighbour")
    if phase is None or phase == "its start":
        return {1, 2}  # not under way (finished, or not begun): the race is the machine's, not the policy's
    if cell.fault == "usbmuxd-restart":
        return {2} if phase in USBMUX_PHASES else {1}
    order = phases.sequence(Mode.NORMAL)
    return {2} if order.index(phase) < order.index(phases.UPDATE_BASEBAND) else {1}


def test_the_matrix_covers_every_phase_and_fault():
    rows = {cell.row for cell in CELLS}
    assert {"enter_recovery", "send_ibec", "boot_ramdisk", "restore_image@0", "restore_image@50",
            "restore_image@99", "verify_restore", "update_baseband", "flash_firmware", "reboot",
            "hello"} <= rows
    for row in rows - {"every-attempt"}:
        assert {c.fault for c in CELLS if c.row == row} == set(PORT_LOCAL + STATION_WIDE), row
