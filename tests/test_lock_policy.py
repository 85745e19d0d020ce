"""The lock policy, honestly: what ``unknown_lock`` may and may not decide.

- A phone known to be locked is never restored (tests/test_machine.py, tests/test_core.py).
- A phone running iOS whose lock cannot be read because it does not trust the station
  (passcode set, Trust denied or not answered) waits in NEEDS_TRUST under every policy:
  a real phone cannot be sent to recovery without trust, and no policy or button may
  stand in for the check that trust makes possible. Once it trusts, it is checked.
- Only phones whose lock cannot be read by nature (recovery, DFU) follow ``hold``,
  ``refuse`` or ``restore``; they are checked again after the restore, and the record
  says which.
"""
from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

import pytest

from hw import phones as phones_module
from hw.phones import Device, Lock, LockCheck, Mode, PhoneArrived, PhoneLeft, RestoreProgress
from station.config import Config, RestoreSection, StationSection
from station.core import Station
from station.machine import (Attached, Confirm, Detached, Identified, LockCheckStarted, LockResult,
                             Policy, Port, Progress, RestoreFinished, RestoreStarted, State, step)
from station.records import db
from station.records.recorder import Recorder

POLICIES = ("hold", "refuse", "restore")
MODES = ("counter", "line")
PHONE = Device(key="00008110-001A2B3C4D5E6F70", mode=Mode.NORMAL, product_type="iPhone14,7",
               udid="00008110-001A2B3C4D5E6F70", ecid=0x001A2B3C4D5E6F70, serial="F2LXQ0J1N7KC")
DFU = Device(key="ECID:001A2B3C4D5E6F71", mode=Mode.DFU, product_type="iPhone13,2",
             ecid=0x001A2B3C4D5E6F71, serial="F17XQ0J1N7KD")
UNTRUSTED = [
    LockResult(Lock.UNKNOWN, "passcode set: unlock the phone and tap Trust", "fmip", needs_trust=True),
    LockResult(Lock.UNKNOWN, "Trust denied on the phone", "fmip", needs_trust=True),
    LockResult(Lock.UNKNOWN, "Trust dialog not answered", "fmip", needs_trust=True),
]


def play(events, policy: Policy, port: Port | None = None) -> Port:
    port = port or Port(slot=1)
    for at, event in enumerate(events):
        port = step(port, event, policy, float(at)).port
    return port


def checking(device: Device = PHONE) -> list:
    return [Attached(Device(key=device.key, mode=device.mode)), Identified(device), LockCheckStarted()]


# The machine -----------------------------------------------------------------


@pytest.mark.parametrize("untrusted", UNTRUSTED, ids=["passcode", "denied", "dialog"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("unknown_lock", POLICIES)
def test_an_untrusting_phone_waits_for_trust_under_every_policy(unknown_lock, mode, untrusted):
    policy = Policy(mode=mode, unknown_lock=unknown_lock)
    port = play(checking() + [untrusted], policy)
    assert port.state is State.NEEDS_TRUST
    assert port.reason == untrusted.reason and port.lock is Lock.UNKNOWN
    # Nothing a person or the queue does gets it any further; only a check can.
    port = play([Confirm(long=True), Confirm(), RestoreStarted(), Progress("restore_image", 50),
                 RestoreFinished(), untrusted, Confirm(long=True)], policy, port)
    assert port.state is State.NEEDS_TRUST
    assert port.restore_started is None and port.confirmed_by == ""


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("unknown_lock", POLICIES)
def test_asking_again_while_untrusted_changes_nothing(unknown_lock, mode):
    policy = Policy(mode=mode, unknown_lock=unknown_lock)
    port = play(checking() + [UNTRUSTED[0]], policy)
    result = step(port, UNTRUSTED[0], policy, 99.0)
    assert result.port == port and result.effects == ()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("unknown_lock", POLICIES)
def test_once_trusted_the_phone_gets_the_ordinary_lock_check(unknown_lock, mode):
    policy = Policy(mode=mode, unknown_lock=unknown_lock)
    waiting = play(checking() + [UNTRUSTED[0]], policy)
    locked = play([LockCheckStarted(), LockResult(Lock.LOCKED, "Find My is on", "fmip")], policy, waiting)
    assert locked.state is State.LOCKED and locked.reason == "Find My is on"
    clear = play([LockResult(Lock.CLEAR, "no Activation Lock", "activation-server")], policy, waiting)
    assert clear.state is (State.QUEUED if mode == "line" else State.NEEDS_CONFIRM)
    assert clear.lock is Lock.CLEAR
    # Trusted, and still not readable (Find My not confirmed off): now the policy decides.
    unknown = play([LockResult(Lock.UNKNOWN, "Find My not confirmed off", "fmip")], policy, waiting)
    assert unknown.state is not State.NEEDS_TRUST


@pytest.mark.parametrize("mode", MODES)
def test_phones_unreadable_by_nature_follow_the_policy(mode):
    dfu = LockResult(Lock.UNKNOWN, "DFU: lock not readable", "none")
    held = play(checking(DFU) + [dfu], Policy(mode=mode, unknown_lock="hold"))
    assert held.state is State.NEEDS_CONFIRM and held.held
    refused = play(checking(DFU) + [dfu], Policy(mode=mode, unknown_lock="refuse"))
    assert refused.state is State.REFUSED
    restored = play(checking(DFU) + [dfu], Policy(mode=mode, unknown_lock="restore"))
    assert restored.state is (State.QUEUED if mode == "line" else State.NEEDS_CONFIRM)
    assert not restored.held


def test_an_untrusted_answer_never_reaches_a_restore_whatever_follows():
    """Every short event sequence after an untrusted answer: no restore starts without a new check."""
    events = [Confirm(long=True), Confirm(), RestoreStarted(), UNTRUSTED[0], UNTRUSTED[1],
              Progress("restore_image", 10), RestoreFinished(), LockCheckStarted()]
    for unknown_lock, mode in itertools.product(POLICIES, MODES):
        policy = Policy(mode=mode, unknown_lock=unknown_lock)
        start = play(checking() + [UNTRUSTED[0]], policy)
        for sequence in itertools.product(events, repeat=3):
            port = play(sequence, policy, start)
            assert port.state not in (State.QUEUED, State.RESTORING, State.VERIFYING, State.DONE), (
                unknown_lock, mode, sequence)


# The station: asked again until the phone trusts it ------------------------------------


class UntrustingPhones:
    """A phone layer double: the phone refuses trust ``refusals`` times, then answers ``then``."""

    def __init__(self, refusals: int | None, then: LockCheck) -> None:
        self.refusals = refusals
        self.then = then
        self.checks = 0
        self.restores: list[str] = []

    async def watch(self, emit):
        await asyncio.Event().wait()

    async def identify(self, device):
        await asyncio.sleep(0)
        return PHONE

    async def check_lock(self, device, after_restore=False):
        await asyncio.sleep(0)
        if after_restore:
            return LockCheck(Lock.CLEAR, "no Activation Lock", "activation-server")
        self.checks += 1
        if self.refusals is None or self.checks <= self.refusals:
            return LockCheck(Lock.UNKNOWN, "passcode set: unlock the phone and tap Trust", "fmip",
                             needs_trust=True)
        return self.then

    async def restore(self, device, firmware, report):
        self.restores.append(device.key)
        report(RestoreProgress("restore_image", 50.0))
        await asyncio.sleep(0)


def station_for(phones, unknown_lock: str, mode: str = "line") -> Station:
    config = Config(restore=replace(RestoreSection(), mode=mode, unknown_lock=unknown_lock))
    return Station(config, phones, clock=asyncio.get_running_loop().time)


async def until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
def quick_recheck(monkeypatch):
    monkeypatch.setattr(phones_module, "TRUST_RECHECK_S", 0.01)


@pytest.mark.parametrize("unknown_lock", POLICIES)
async def test_a_phone_that_never_trusts_is_never_restored(quick_recheck, unknown_lock):
    phones = UntrustingPhones(None, LockCheck(Lock.CLEAR))
    station = station_for(phones, unknown_lock)
    station.on_phone_event(PhoneArrived(1, Device(key=PHONE.key, mode=Mode.NORMAL)))
    await until(lambda: phones.checks >= 5)  # asked again and again
    for long in (True, False, True):
        station.press("ok", long)
        await asyncio.sleep(0.02)
    port = station.ports[1]
    assert port.state is State.NEEDS_TRUST and "passcode set" in port.reason
    assert phones.restores == []
    await station.stop_work()


@pytest.mark.parametrize("then, ends", [
    (LockCheck(Lock.LOCKED, "Find My is on", "fmip"), State.LOCKED),
    (LockCheck(Lock.CLEAR, "no Activation Lock", "activation-server"), State.DONE),
], ids=["find-my-on", "clear"])
@pytest.mark.parametrize("unknown_lock", POLICIES)
async def test_once_the_phone_trusts_the_station_it_is_checked(quick_recheck, unknown_lock, then, ends):
    phones = UntrustingPhones(3, then)
    station = station_for(phones, unknown_lock)
    station.on_phone_event(PhoneArrived(1, Device(key=PHONE.key, mode=Mode.NORMAL)))
    await until(lambda: station.ports[1].state is ends)
    assert phones.checks == 4
    assert phones.restores == ([PHONE.key] if ends is State.DONE else [])
    await station.stop_work()


async def test_the_recheck_stops_when_the_phone_leaves(quick_recheck):
    phones = UntrustingPhones(None, LockCheck(Lock.CLEAR))
    station = station_for(phones, "restore")
    station.on_phone_event(PhoneArrived(1, Device(key=PHONE.key, mode=Mode.NORMAL)))
    await until(lambda: phones.checks >= 2)
    station.on_phone_event(PhoneLeft(1))
    await until(lambda: not station._work)
    asked = phones.checks
    await asyncio.sleep(0.1)
    assert phones.checks == asked and station.ports[1].state is State.EMPTY


# The record says which -------------------------------------------------------------


def test_a_dfu_phone_restored_under_restore_says_so_in_its_record(tmp_path):
    section = StationSection(id="bench-1", state_dir=tmp_path / "state")
    policy = Policy(mode="line", unknown_lock="restore")
    with Recorder(section) as recorder:
        port = Port(slot=2)
        events = checking(DFU) + [
            LockResult(Lock.UNKNOWN, "DFU: lock not readable", "none"), RestoreStarted(),
            Progress("restore_image", 50.0), RestoreFinished(),
            LockResult(Lock.CLEAR, "no Activation Lock", "activation-server"), Detached()]
        for at, event in enumerate(events):
            old, port = port, step(port, event, policy, float(at)).port
            if port.state is not old.state:
                recorder.on_transition(old, port, event, 1_700_000_000.0 + at)
        assert recorder.flush(5)
    conn = db.open_existing(section.state_dir)
    try:
        [session] = [dict(row) for row in conn.execute("SELECT * FROM sessions")]
    finally:
        conn.close()
    assert (session["lock_method"], session["lock_result"], session["lock_reason"]) == (
        "none", "unknown", "DFU: lock not readable")
    assert (session["verify_method"], session["verify_result"], session["verified"]) == (
        "activation-server", "clear", 1)
    assert session["outcome"] == "done"
