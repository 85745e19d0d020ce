"""The per-port state machine: its transition table and the lock rule as a property."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.phones import Device, Lock, Mode
from station.machine import (WORKING, Abort, Attached, Cancel, ChooseJob, Confirm, Detached, Effect, SwitchJob,
                             Identified, LockCheckStarted, LockResult, Policy, Port, PortFault,
                             Progress, RestoreFailed, RestoreFinished, RestoreStarted, State,
                             TrustNeeded, describe, step)

PHONE = Device(key="00008110-000A1B2C3D4E5F60", mode=Mode.NORMAL, product_type="iPhone14,7",
               serial="F2LXQ0J1N7KC", ecid=0xA1B2C3D4E5F60)
DFU = Device(key="ecid:A1B2C3", mode=Mode.DFU, ecid=0xA1B2C3)
COUNTER = Policy(mode="counter")
LINE = Policy(mode="line")


def drive(*events, policy: Policy = COUNTER, port: Port | None = None) -> tuple[Port, list]:
    port = port or Port(slot=1)
    effects: list = []
    for now, event in enumerate(events):
        result = step(port, event, policy, float(now))
        port = result.port
        effects.append(result.effects)
    return port, effects


CHECKING = (Attached(PHONE), Identified(PHONE), LockCheckStarted())
CHECKING_DFU = (Attached(DFU), Identified(DFU), LockCheckStarted())
CLEAR = LockResult(Lock.CLEAR, "Find My off", "fmip")


@pytest.mark.parametrize("events, policy, state", [
    ((Attached(PHONE),), COUNTER, State.DETECTING),
    ((Attached(PHONE), Identified(PHONE)), COUNTER, State.IDENTIFIED),
    (CHECKING, COUNTER, State.CHECKING_LOCK),
    (CHECKING + (LockResult(Lock.LOCKED, "Find My is on"),), LINE, State.LOCKED),
    (CHECKING + (CLEAR,), COUNTER, State.NEEDS_CONFIRM),
    (CHECKING + (CLEAR,), LINE, State.QUEUED),
    (CHECKING_DFU + (LockResult(Lock.UNKNOWN, "DFU"),), Policy(unknown_lock="hold", mode="line"),
     State.NEEDS_CONFIRM),
    (CHECKING_DFU + (LockResult(Lock.UNKNOWN, "DFU"),), Policy(unknown_lock="refuse"), State.REFUSED),
    (CHECKING_DFU + (LockResult(Lock.UNKNOWN, "DFU"),), Policy(unknown_lock="restore", mode="line"),
     State.QUEUED),
    # A phone running iOS whose check proved nothing: "restore" does not decide for it.
    (CHECKING + (LockResult(Lock.UNKNOWN, "Find My not confirmed off"),),
     Policy(unknown_lock="restore", mode="line"), State.NEEDS_CONFIRM),
    (CHECKING + (LockResult(Lock.UNKNOWN, "Find My not confirmed off"), RestoreStarted()),
     Policy(unknown_lock="restore", mode="line"), State.NEEDS_CONFIRM),
    (CHECKING + (LockResult(Lock.UNKNOWN, "Find My not confirmed off"), Confirm(long=True)),
     Policy(unknown_lock="restore", mode="line"), State.QUEUED),
    (CHECKING + (CLEAR, Confirm()), COUNTER, State.QUEUED),
    (CHECKING + (CLEAR, Confirm(), Cancel()), COUNTER, State.NEEDS_CONFIRM),
    (CHECKING + (CLEAR, RestoreStarted()), LINE, State.RESTORING),
    (CHECKING + (CLEAR, RestoreStarted(), Progress("restore image", 42)), LINE, State.RESTORING),
    (CHECKING + (CLEAR, RestoreStarted(), TrustNeeded()), LINE, State.NEEDS_TRUST),
    (CHECKING + (CLEAR, RestoreStarted(), TrustNeeded(), Progress("x", 5)), LINE, State.RESTORING),
    (CHECKING + (TrustNeeded(),), LINE, State.NEEDS_TRUST),
    (CHECKING + (TrustNeeded(), LockCheckStarted(), CLEAR), LINE, State.QUEUED),
    (CHECKING + (CLEAR, RestoreStarted(), RestoreFinished()), LINE, State.VERIFYING),
    (CHECKING + (CLEAR, RestoreStarted(), RestoreFinished(), CLEAR), LINE, State.DONE),
    (CHECKING + (CLEAR, RestoreStarted(), RestoreFinished(), LockResult(Lock.LOCKED, "AL")),
     LINE, State.LOCKED),
    (CHECKING + (CLEAR, RestoreStarted(), RestoreFailed("usb", True)), LINE, State.QUEUED),
    (CHECKING + (CLEAR, RestoreStarted(), RestoreFailed("usb", True), RestoreStarted(),
                 RestoreFailed("usb", True)), LINE, State.FAILED),
    (CHECKING + (CLEAR, RestoreStarted(), RestoreFailed("rejected", False)), LINE, State.FAILED),
    (CHECKING + (CLEAR, RestoreStarted(), RestoreFailed("rejected", False), Confirm()),
     LINE, State.QUEUED),
    (CHECKING + (CLEAR, RestoreStarted(), Abort()), LINE, State.FAILED),
    (CHECKING + (PortFault("boom"),), LINE, State.FAILED),
    (CHECKING + (CLEAR, RestoreStarted(), Detached()), LINE, State.EMPTY),
])
def test_transition_table(events, policy, state):
    port, _ = drive(*events, policy=policy)
    assert port.state is state


def test_held_phone_needs_a_long_press_on_ok():
    held, _ = drive(Attached(DFU), Identified(DFU), LockCheckStarted(),
                    LockResult(Lock.UNKNOWN, "DFU mode"))
    assert held.held
    assert step(held, Confirm(long=False), COUNTER, 9).port.state is State.NEEDS_CONFIRM
    confirmed = step(held, Confirm(long=True), COUNTER, 9)
    assert confirmed.port.state is State.QUEUED and confirmed.effects == (Effect.ENQUEUE,)
    assert step(confirmed.port, RestoreStarted(), COUNTER, 10).port.state is State.RESTORING


def test_locked_phone_ignores_every_button_and_start():
    locked, _ = drive(*CHECKING, LockResult(Lock.LOCKED, "Find My is on"), policy=LINE)
    for event in (Confirm(), Confirm(long=True), RestoreStarted(), CLEAR, LockCheckStarted()):
        result = step(locked, event, Policy(mode="line", unknown_lock="restore"), 9)
        assert result.port.state is State.LOCKED
        assert not result.effects
    assert locked.reason == "Find My is on"


def test_a_locked_answer_stops_a_running_restore():
    restoring, _ = drive(*CHECKING, CLEAR, RestoreStarted(), policy=LINE)
    result = step(restoring, LockResult(Lock.LOCKED, "Find My is on"), LINE, 9)
    assert result.port.state is State.LOCKED and result.effects == (Effect.STOP_WORK,)


def test_detach_stops_work_and_leaves_queue():
    queued, _ = drive(*CHECKING, CLEAR, policy=LINE)
    assert step(queued, Detached(), LINE, 9).effects == (Effect.DEQUEUE,)
    restoring = step(queued, RestoreStarted(), LINE, 9).port
    assert step(restoring, Detached(), LINE, 9).effects == (Effect.STOP_WORK,)


def test_a_restore_knows_which_attempt_it_is_of_how_many():
    policy = Policy(mode="line", retries=1)
    first, _ = drive(*CHECKING, CLEAR, RestoreStarted(), policy=policy)
    assert (first.attempts, first.max_attempts) == (1, 2)
    between = step(first, RestoreFailed("usb", True), policy, 9).port
    assert between.state is State.QUEUED and (between.attempts, between.max_attempts) == (1, 2)
    second = step(between, RestoreStarted(), policy, 10).port
    assert (second.attempts, second.max_attempts) == (2, 2)
    # A manual retry after a failure starts counting again, under the policy of the moment.
    failed = step(second, RestoreFailed("usb", True), policy, 11).port
    again = step(step(failed, Confirm(), Policy(mode="line", retries=2), 12).port, RestoreStarted(),
                 Policy(mode="line", retries=2), 13).port
    assert (again.attempts, again.max_attempts) == (1, 3)


def test_describe_names_slot_device_and_both_states():
    old, _ = drive(*CHECKING)
    new = step(old, LockResult(Lock.LOCKED, "Find My is on"), LINE, 5).port
    assert describe(old, new) == "slot 1 [F2LXQ0J1N7KC] CHECKING_LOCK -> LOCKED (Find My is on)"


# -- the lock rule, over thousands of random event sequences ------------------

devices = st.sampled_from([PHONE, DFU])
UNTRUSTED = LockResult(Lock.UNKNOWN, "passcode set: unlock the phone and tap Trust", "fmip",
                       needs_trust=True)
events = st.one_of(
    devices.map(Attached), devices.map(Identified), st.just(LockCheckStarted()),
    st.sampled_from(list(Lock)).map(lambda lock: LockResult(lock, "r")),
    st.sampled_from(list(Lock)).map(lambda lock: LockResult(lock, "not trusted", needs_trust=True)),
    st.booleans().map(lambda long: Confirm(long=long)), st.just(Cancel()), st.just(Abort()),
    st.just(RestoreStarted()), st.floats(-10, 200).map(lambda p: Progress("restore image", p)),
    st.just(RestoreFinished()), st.booleans().map(lambda r: RestoreFailed("x", r)),
    st.just(PortFault("boom")), st.just(Detached()), st.just(TrustNeeded()),
    st.sampled_from(["restore", "erase"]).map(ChooseJob), st.just(SwitchJob()),
)
policies = st.builds(Policy, mode=st.sampled_from(["counter", "line"]),
                     unknown_lock=st.sampled_from(["hold", "refuse", "restore"]),
                     retries=st.integers(0, 3), job=st.sampled_from(["restore", "erase"]))


# Uniformly random events rarely get past DETECTING; three draws in four therefore
# offer an event that moves the current state forward, so the runs reach
# RESTORING, VERIFYING and DONE, while the fourth keeps arriving at random.
FORWARD = {
    State.EMPTY: [Attached(PHONE), Attached(DFU)],
    State.DETECTING: [Identified(PHONE), Identified(DFU)],
    State.IDENTIFIED: [LockCheckStarted()],
    State.CHECKING_LOCK: [LockResult(lock, "r") for lock in Lock] + [TrustNeeded(), UNTRUSTED],
    State.NEEDS_TRUST: [LockCheckStarted(), Progress("restore image", 50), UNTRUSTED,
                        LockResult(Lock.CLEAR, "r"), LockResult(Lock.UNKNOWN, "r")],
    State.NEEDS_CONFIRM: [Confirm(long=False), Confirm(long=True)],
    State.QUEUED: [RestoreStarted()],
    State.RESTORING: [Progress("restore image", 50), RestoreFinished(), RestoreFailed("usb", True)],
    State.VERIFYING: [LockResult(lock, "r") for lock in Lock],
}


def run_random(data, policy, steps=40):
    """Yield (old, event, new) for a random, mostly forward-moving history of one port."""
    port = Port(slot=1)
    for now in range(data.draw(st.integers(1, steps))):
        forward = FORWARD.get(port.state)
        go_forward = forward and data.draw(st.integers(0, 3)) > 0
        event = data.draw(st.sampled_from(forward) if go_forward else events)
        old, port = port, step(port, event, policy, float(now)).port
        yield old, event, port


@settings(max_examples=2000, deadline=None)
@given(st.data(), policies)
def test_no_restore_ever_starts_for_a_locked_phone(data, policy):
    answered_locked = False  # the phone layer said LOCKED for the phone now plugged in
    for old, event, port in run_random(data, policy):
        if port.state is State.EMPTY:
            answered_locked = False
        if isinstance(event, LockResult) and event.lock is Lock.LOCKED and old.state is not State.EMPTY:
            answered_locked = True
        if port.state is State.RESTORING and old.state is not State.RESTORING:
            assert not answered_locked, "restore started for a phone reported locked"
            assert port.lock is Lock.CLEAR or (port.lock is Lock.UNKNOWN and (
                policy.unknown_lock == "restore" or port.confirmed_by == "operator"))
        if answered_locked:
            assert port.state is State.LOCKED
        assert 0.0 <= port.percent <= 100.0


@settings(max_examples=2000, deadline=None)
@given(st.data(), policies)
def test_a_phone_that_does_not_trust_the_station_waits_whatever_the_policy(data, policy):
    untrusted = False  # the last lock answer for the phone now plugged in said "needs trust"
    for old, event, port in run_random(data, policy):
        if port.state is State.EMPTY:
            untrusted = False
        checking = old.state in (State.CHECKING_LOCK, State.NEEDS_TRUST) and old.restore_started is None
        if isinstance(event, LockResult) and checking and event.lock is not Lock.UNCHECKED:
            untrusted = event.needs_trust and event.lock is not Lock.LOCKED
        if untrusted:
            # Only a new lock answer, a detach or a fault moves it on; never a policy or a button.
            waiting = (State.NEEDS_TRUST, State.CHECKING_LOCK, State.FAILED, State.LOCKED)
            assert port.state in waiting, (event, port.state)
            assert port.restore_started is None


@settings(max_examples=2000, deadline=None)
@given(st.data(), policies)
def test_detach_always_empties_the_port_and_stops_its_work(data, policy):
    port = Port(slot=1)
    for _, _, port in run_random(data, policy):
        pass
    result = step(port, Detached(), policy, 99.0)
    assert result.port.state is State.EMPTY and result.port.device is None
    if port.state in WORKING:
        assert set(result.effects) & {Effect.STOP_WORK, Effect.DEQUEUE}


# Erase jobs ----------------------------------------------------------------

ERASE = Policy(mode="line", job="erase")


def test_an_erase_job_runs_for_a_trusted_clear_phone_running_ios():
    port, effects = drive(*CHECKING, CLEAR, RestoreStarted(), policy=ERASE)
    assert port.state is State.RESTORING and port.job == "erase"
    port, _ = drive(RestoreFinished(), CLEAR, policy=ERASE, port=port)
    assert port.state is State.DONE and port.verified and port.job == "erase"


@pytest.mark.parametrize("events, policy", [
    # recovery/DFU phones cannot erase themselves: they are restored (or refused) as today
    (CHECKING_DFU + (LockResult(Lock.UNKNOWN, "DFU"),), Policy(mode="line", unknown_lock="restore", job="erase")),
    (CHECKING_DFU + (LockResult(Lock.UNKNOWN, "DFU"), Confirm(long=True)), ERASE),
    # a phone running iOS whose lock check proved nothing: held, and restored once confirmed
    (CHECKING + (LockResult(Lock.UNKNOWN, "Find My not confirmed off"), Confirm(long=True)), ERASE),
])
def test_an_erase_job_is_never_run_for_a_phone_not_proven_clear(events, policy):
    port, _ = drive(*events, policy=policy)
    assert port.state is State.QUEUED and port.job == "restore"
    port, _ = drive(RestoreStarted(), policy=policy, port=port)
    assert port.state is State.RESTORING and port.job == "restore"


def test_a_locked_or_refused_phone_is_neither_erased_nor_restored():
    port, _ = drive(*CHECKING, LockResult(Lock.LOCKED, "Find My is on"), ChooseJob("erase"),
                    RestoreStarted(), policy=ERASE)
    assert port.state is State.LOCKED
    port, _ = drive(*CHECKING_DFU, LockResult(Lock.UNKNOWN, "DFU"), ChooseJob("erase"),
                    RestoreStarted(), policy=Policy(mode="line", unknown_lock="refuse", job="erase"))
    assert port.state is State.REFUSED


def test_the_operator_chooses_the_job_before_it_starts():
    port, _ = drive(*CHECKING, CLEAR, ChooseJob("erase"), policy=COUNTER)
    assert port.state is State.NEEDS_CONFIRM and port.job == "erase"
    port, _ = drive(Confirm(), RestoreStarted(), ChooseJob("restore"), policy=COUNTER, port=port)
    assert port.state is State.RESTORING and port.job == "erase"  # too late to change
    # chosen at plug-in, before the check: a check that is not CLEAR makes it a restore
    port, _ = drive(Attached(PHONE), ChooseJob("erase"), Identified(PHONE), LockCheckStarted(),
                    LockResult(Lock.UNKNOWN, "Find My not confirmed off"), policy=COUNTER)
    assert port.state is State.NEEDS_CONFIRM and port.held and port.job == "restore"
    # a held phone cannot be made an erase afterwards
    port, _ = drive(ChooseJob("erase"), policy=COUNTER, port=port)
    assert port.job == "restore"


def test_describe_says_an_erase_starts():
    old, _ = drive(*CHECKING, CLEAR, policy=ERASE)
    new = step(old, RestoreStarted(), ERASE, 9.0).port
    assert describe(old, new) == "slot 1 [F2LXQ0J1N7KC] QUEUED -> RESTORING (erase)"


@settings(max_examples=2000, deadline=None)
@given(st.data(), policies)
def test_an_erase_only_ever_starts_for_a_trusted_clear_phone_running_ios(data, policy):
    for old, event, port in run_random(data, policy):
        if port.state is State.RESTORING and old.state is not State.RESTORING and port.job == "erase":
            assert port.lock is Lock.CLEAR and not port.untrusted and not port.held
            assert port.device is not None and port.device.mode is Mode.NORMAL


def test_switching_the_job_goes_between_restore_and_erase_until_the_work_starts():
    port, _ = drive(*CHECKING, CLEAR, SwitchJob(), policy=COUNTER)
    assert port.state is State.NEEDS_CONFIRM and port.job == "erase"
    port, _ = drive(SwitchJob(), policy=COUNTER, port=port)
    assert port.job == "restore"
    port, _ = drive(SwitchJob(), Confirm(), RestoreStarted(), SwitchJob(), policy=COUNTER, port=port)
    assert port.state is State.RESTORING and port.job == "erase"  # too late to switch back
    # a held phone is not proven clear: it stays a restore
    port, _ = drive(*CHECKING, LockResult(Lock.UNKNOWN, "Find My not confirmed off"), SwitchJob(),
                    policy=COUNTER)
    assert port.held and port.job == "restore"
    # an erase job switched on a phone that cannot erase itself: back to a restore, and on
    port, _ = drive(*CHECKING_DFU, LockResult(Lock.UNKNOWN, "DFU"), SwitchJob(), policy=Policy(job="erase"))
    assert port.job == "restore"
