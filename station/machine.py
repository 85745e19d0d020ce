"""The per-port state machine: data plus one pure transition function.

``step(port, event, policy, now)`` returns the next ``Port`` and the effects the
station must carry out; it does no I/O and knows nothing of asyncio, so every
path through it can be tested exhaustively. The graph::

    EMPTY --Attached--> DETECTING --Identified--> IDENTIFIED --LockCheckStarted--> CHECKING_LOCK
    any state with a phone --LockResult(locked)--> LOCKED   (never restored; work stops)
    CHECKING_LOCK --LockResult(unknown, needs trust)--> NEEDS_TRUST   (every policy)
    NEEDS_TRUST --LockResult(unknown, needs trust)--> NEEDS_TRUST   (asked again: still waiting)
    NEEDS_TRUST --LockResult(any other)--> as from CHECKING_LOCK   (it trusts the station now)
    CHECKING_LOCK --LockResult(unknown), policy refuse--> REFUSED
    CHECKING_LOCK --LockResult(clear | unknown+restore)--> QUEUED (line) | NEEDS_CONFIRM (counter)
    CHECKING_LOCK --LockResult(unknown), policy hold--> NEEDS_CONFIRM (held: long press OK)
    CHECKING_LOCK --TrustNeeded--> NEEDS_TRUST --LockCheckStarted--> CHECKING_LOCK
    NEEDS_CONFIRM --Confirm--> QUEUED --Cancel--> NEEDS_CONFIRM
    QUEUED --Waiting--> QUEUED (why it is not started yet: WAIT MEM)
    QUEUED --RestoreStarted--> RESTORING --Progress--> RESTORING
    RESTORING --TrustNeeded--> NEEDS_TRUST --Progress--> RESTORING
    RESTORING --RestoreFinished--> VERIFYING --LockResult(clear)--> DONE
    VERIFYING --LockResult(locked)--> LOCKED
    RESTORING --RestoreFailed(retryable, attempts left)--> QUEUED
    RESTORING --RestoreFailed | Abort--> FAILED --Confirm(retryable)--> QUEUED
    any working state --PortFault--> FAILED
    any state --Detached--> EMPTY
    a phone not yet started --ChooseJob(restore | erase)--> the same state, that job
    a phone not yet started --SwitchJob--> the same state, the other job (held SELECT)

The lock rule lives in two places that cannot both be wrong: LOCKED is left
only by Detached, and RESTORING is entered only from QUEUED by a port whose
lock status is CLEAR, or UNKNOWN under a policy that allows it.

The job (``Port.job``): a ``restore`` reinstalls iOS from an IPSW; an ``erase`` asks the phone
to erase itself (Erase All Content and Settings: mobilebackup2's EraseDevice) and keeps its iOS.
Both run through RESTORING -> VERIFYING -> DONE, with the same Hello-screen check after. The
policy's job is the port's at plug-in; ``ChooseJob`` (an operator's choice) changes it until the
work starts. An erase needs what only a phone running iOS can give: it trusts the station and its
lock check said CLEAR. A phone that cannot be erased (recovery, DFU, lock UNKNOWN, held) becomes
a restore at its lock answer, decided by the policy as any restore is; a LOCKED or REFUSED one
gets neither. That rule, too, is in two places: ``_lock_result`` and ``erasable``, which
``_restore_started`` asks again.

The policy (``unknown_lock``) decides only for a phone whose lock cannot be read
by nature (recovery, DFU): ``refuse`` refuses it, ``hold`` waits for a long press,
``restore`` restores it. A phone running iOS that trusts the station but whose
check proved nothing (Find My not confirmed off, Apple's server unclear) is
refused under ``refuse`` and otherwise held for a long press, as under ``hold``.
A phone running iOS that does not trust the station (the phone layer says
``needs_trust``) could be read once it does, and a real phone cannot be sent to
recovery without trust: it waits in NEEDS_TRUST under every policy, and no
button moves it on; only a lock check does. That too lives in two places: the
port keeps ``untrusted`` until a check answers, and ``_restorable`` refuses it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Literal

from hw.phones import Device, Lock, Mode


class State(enum.Enum):
    EMPTY = "empty"
    DETECTING = "detecting"
    IDENTIFIED = "identified"
    CHECKING_LOCK = "checking_lock"
    NEEDS_TRUST = "needs_trust"
    LOCKED = "locked"
    REFUSED = "refused"
    NEEDS_CONFIRM = "needs_confirm"
    QUEUED = "queued"
    RESTORING = "restoring"
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.name


# States in which the station is doing something to the phone; a detach must stop it.
WORKING = frozenset({State.DETECTING, State.IDENTIFIED, State.CHECKING_LOCK, State.NEEDS_TRUST,
                     State.QUEUED, State.RESTORING, State.VERIFYING})
# States that wait for the phone to be unplugged (or, for FAILED, an operator retry).
FINISHED = frozenset({State.LOCKED, State.REFUSED, State.DONE, State.FAILED})


@dataclass(frozen=True)
class Policy:
    mode: Literal["counter", "line"] = "counter"
    unknown_lock: Literal["hold", "refuse", "restore"] = "hold"
    retries: int = 1
    job: Literal["restore", "erase"] = "restore"  # each phone's job at plug-in


@dataclass(frozen=True)
class Port:
    slot: int
    state: State = State.EMPTY
    device: Device | None = None
    lock: Lock = Lock.UNCHECKED
    lock_reason: str = ""
    held: bool = False  # unknown lock under "hold": only a long press on OK confirms
    untrusted: bool = False  # lock unknown because the phone does not trust the station: no policy applies
    confirmed_by: str = ""  # "operator" or "policy" once the restore was allowed to queue
    phase: str = ""
    percent: float = 0.0
    attempts: int = 0  # restores started since the phone was queued (a manual retry starts again at 0)
    max_attempts: int = 0  # how many the policy allows (retries + 1), set when a restore starts
    reason: str = ""  # why LOCKED / REFUSED / FAILED, shown to the operator
    retryable: bool = False
    verified: bool = False
    since: float = 0.0  # when the current state was entered
    restore_started: float | None = None
    job: Literal["restore", "erase"] = "restore"  # what RESTORING does: reinstall iOS, or erase it


# Events --------------------------------------------------------------------


@dataclass(frozen=True)
class Attached:
    device: Device


@dataclass(frozen=True)
class Identified:
    device: Device


@dataclass(frozen=True)
class LockCheckStarted:
    pass


@dataclass(frozen=True)
class TrustNeeded:
    reason: str = "unlock phone, tap Trust"


@dataclass(frozen=True)
class LockResult:
    lock: Lock
    reason: str = ""
    method: str = ""  # how the phone layer decided, for the record
    needs_trust: bool = False  # unknown only because the phone does not trust the station (yet)


@dataclass(frozen=True)
class Confirm:
    long: bool = False


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class Abort:
    pass


@dataclass(frozen=True)
class Waiting:
    """A queued phone cannot start yet, for this reason (shown to the operator)."""

    reason: str


@dataclass(frozen=True)
class RestoreStarted:
    pass


@dataclass(frozen=True)
class Progress:
    phase: str
    percent: float


@dataclass(frozen=True)
class RestoreFinished:
    pass


@dataclass(frozen=True)
class RestoreFailed:
    reason: str
    retryable: bool


@dataclass(frozen=True)
class PortFault:
    """Something on this port raised: the port fails, nothing else does."""

    reason: str


@dataclass(frozen=True)
class Detached:
    pass


@dataclass(frozen=True)
class ChooseJob:
    """The operator's (or the scenario's) job for this phone, before its work starts."""

    job: Literal["restore", "erase"]


@dataclass(frozen=True)
class SwitchJob:
    """The operator's other job for this phone (restore <-> erase), before its work starts."""


Event = (Attached | Identified | LockCheckStarted | TrustNeeded | LockResult | Confirm | Cancel
         | Abort | Waiting | RestoreStarted | Progress | RestoreFinished | RestoreFailed | PortFault
         | Detached | ChooseJob | SwitchJob)


# Effects: what the station must do after a transition --------------------


class Effect(enum.Enum):
    IDENTIFY = "identify"
    CHECK_LOCK = "check_lock"
    ENQUEUE = "enqueue"
    DEQUEUE = "dequeue"
    STOP_WORK = "stop_work"  # cancel whatever task runs for this port (check, restore, verify)
    VERIFY = "verify"  # post-restore lock check at the Hello screen


@dataclass(frozen=True)
class Step:
    port: Port
    effects: tuple[Effect, ...] = ()
    note: str = ""  # why an event was ignored, for the log


def step(port: Port, event: Event, policy: Policy, now: float) -> Step:
    """The one transition function. Unexpected events leave the port as it is, with a note."""
    handler = _HANDLERS.get(type(event))
    if handler is None:
        return Step(port, note=f"unknown event {event!r}")
    return handler(port, event, policy, now)


def _enter(port: Port, state: State, now: float, *effects: Effect, **changes: object) -> Step:
    return Step(replace(port, state=state, since=now, **changes), tuple(effects))


def _ignore(port: Port, event: Event) -> Step:
    return Step(port, note=f"{type(event).__name__} ignored in {port.state}")


def _attached(port: Port, event: Attached, policy: Policy, now: float) -> Step:
    if port.state is not State.EMPTY:
        return _ignore(port, event)
    return _enter(Port(slot=port.slot), State.DETECTING, now, Effect.IDENTIFY, device=event.device,
                  job=policy.job)


def _identified(port: Port, event: Identified, policy: Policy, now: float) -> Step:
    if port.state is not State.DETECTING:
        return _ignore(port, event)
    return _enter(port, State.IDENTIFIED, now, Effect.CHECK_LOCK, device=event.device)


def _lock_check_started(port: Port, event: LockCheckStarted, policy: Policy, now: float) -> Step:
    if port.state not in (State.IDENTIFIED, State.NEEDS_TRUST) or port.restore_started is not None:
        return _ignore(port, event)
    return _enter(port, State.CHECKING_LOCK, now)


def _trust_needed(port: Port, event: TrustNeeded, policy: Policy, now: float) -> Step:
    if port.state not in (State.CHECKING_LOCK, State.RESTORING):
        return _ignore(port, event)
    return _enter(port, State.NEEDS_TRUST, now, reason=event.reason)


def _lock_result(port: Port, event: LockResult, policy: Policy, now: float) -> Step:
    if event.lock is Lock.LOCKED and port.state not in (State.EMPTY, State.LOCKED):
        return _locked(port, event, now)
    checking = port.state in (State.CHECKING_LOCK, State.NEEDS_TRUST) and port.restore_started is None
    if port.state is State.VERIFYING:
        return _verified(port, event, now)
    if not checking or event.lock is Lock.UNCHECKED:
        return _ignore(port, event)
    if event.needs_trust:
        return _untrusted(port, event, now)
    port = replace(port, lock=event.lock, lock_reason=event.reason, reason="", untrusted=False)
    if event.lock is Lock.UNKNOWN and policy.unknown_lock == "refuse":
        return _enter(port, State.REFUSED, now,
                      reason=f"lock unknown ({event.reason or 'not checkable'})")
    # "restore" decides only for a phone unreadable by nature; a phone running iOS whose check
    # was inconclusive is held for a person (who can ask its owner), under every policy.
    held = event.lock is Lock.UNKNOWN and (policy.unknown_lock == "hold" or not _unreadable_by_nature(port))
    port = replace(port, held=held)
    if port.job == "erase" and not erasable(port):
        port = replace(port, job="restore")  # it cannot erase itself: restored, as any phone is
    if policy.mode == "line" and not held:
        return _enter(port, State.QUEUED, now, Effect.ENQUEUE, confirmed_by="policy")
    return _enter(port, State.NEEDS_CONFIRM, now)


def _untrusted(port: Port, event: LockResult, now: float) -> Step:
    """Not readable until the phone trusts the station: no policy decides, the phone waits.

    Fails closed: an answer that says both "clear" and "needs trust" is taken as unknown.
    """
    port = replace(port, lock=Lock.UNKNOWN, lock_reason=event.reason, untrusted=True, held=False,
                   confirmed_by="")
    if port.state is State.NEEDS_TRUST:  # asked again, still not trusted
        return Step(replace(port, reason=event.reason))
    return _enter(port, State.NEEDS_TRUST, now, reason=event.reason)


def _locked(port: Port, event: LockResult, now: float) -> Step:
    """Locked, whenever the answer comes: whatever the port was doing stops."""
    effects: tuple[Effect, ...] = ()
    if port.state is State.QUEUED:
        effects = (Effect.DEQUEUE,)
    elif port.state in WORKING:
        effects = (Effect.STOP_WORK,)
    reason = event.reason or "Activation Lock is on"
    if port.state is State.VERIFYING:
        reason = f"still locked after restore: {reason}"
    return _enter(port, State.LOCKED, now, *effects, lock=Lock.LOCKED, lock_reason=event.reason,
                  reason=reason)


def _verified(port: Port, event: LockResult, now: float) -> Step:
    if event.lock is Lock.CLEAR:
        return _enter(port, State.DONE, now, verified=True, lock=Lock.CLEAR, reason="")
    return _enter(port, State.DONE, now, verified=False,
                  reason=f"not verified: {event.reason or 'lock status unknown'}")


def _confirm(port: Port, event: Confirm, policy: Policy, now: float) -> Step:
    if port.state is State.NEEDS_CONFIRM:
        if port.held and not event.long:
            return Step(port, note="held: hold OK to confirm this port")
        return _enter(port, State.QUEUED, now, Effect.ENQUEUE, confirmed_by="operator")
    # A manual retry is the operator's call, whatever the failure; the lock rule still applies.
    if port.state is State.FAILED and port.restore_started is not None and _restorable(port, policy):
        return _enter(port, State.QUEUED, now, Effect.ENQUEUE, reason="", attempts=0,
                      phase="", percent=0.0, restore_started=None)
    return _ignore(port, event)


def _cancel(port: Port, event: Cancel, policy: Policy, now: float) -> Step:
    if port.state is State.QUEUED:
        return _enter(port, State.NEEDS_CONFIRM, now, Effect.DEQUEUE, confirmed_by="")
    return _ignore(port, event)


def _abort(port: Port, event: Abort, policy: Policy, now: float) -> Step:
    if port.state not in (State.RESTORING, State.NEEDS_TRUST) or port.restore_started is None:
        return _ignore(port, event)
    return _enter(port, State.FAILED, now, Effect.STOP_WORK, reason="aborted by operator",
                  retryable=True)


def _restore_started(port: Port, event: RestoreStarted, policy: Policy, now: float) -> Step:
    if port.state is not State.QUEUED or not _restorable(port, policy):
        return _ignore(port, event)
    if port.job == "erase" and not erasable(port):
        return Step(port, note="erase refused: only a trusted phone running iOS whose lock is clear")
    return _enter(port, State.RESTORING, now, phase="starting", percent=0.0, reason="",
                  attempts=port.attempts + 1, max_attempts=policy.retries + 1, restore_started=now)


def _waiting(port: Port, event: Waiting, policy: Policy, now: float) -> Step:
    if port.state is not State.QUEUED:
        return _ignore(port, event)
    return Step(replace(port, reason=event.reason))


def _restorable(port: Port, policy: Policy) -> bool:
    """The lock rule: only a checked-clear phone, or an unknown one the policy or a held confirm
    allows; never one whose lock is unknown because it does not trust the station."""
    if port.untrusted:
        return False
    if port.lock is Lock.CLEAR:
        return True
    if port.lock is not Lock.UNKNOWN:
        return False
    if policy.unknown_lock == "refuse":
        return False
    if policy.unknown_lock == "restore" and _unreadable_by_nature(port):
        return True
    return port.confirmed_by == "operator"


def erasable(port: Port) -> bool:
    """The erase rule: a phone running iOS that trusts the station, checked CLEAR, not held."""
    return (port.lock is Lock.CLEAR and not port.untrusted and not port.held
            and port.device is not None and port.device.mode is Mode.NORMAL)


# States in which the job may still be chosen: the phone is there and its work has not started.
CHOOSING = frozenset({State.DETECTING, State.IDENTIFIED, State.CHECKING_LOCK, State.NEEDS_TRUST,
                      State.NEEDS_CONFIRM})


def _choose_job(port: Port, event: ChooseJob, policy: Policy, now: float) -> Step:
    if port.state not in CHOOSING or port.restore_started is not None or event.job == port.job:
        return _ignore(port, event)
    if event.job == "erase" and port.state is State.NEEDS_CONFIRM and not erasable(port):
        return Step(port, note="erase refused: only a trusted phone running iOS whose lock is clear")
    return Step(replace(port, job=event.job))


def _switch_job(port: Port, event: SwitchJob, policy: Policy, now: float) -> Step:
    return _choose_job(port, ChooseJob("restore" if port.job == "erase" else "erase"), policy, now)


def _unreadable_by_nature(port: Port) -> bool:
    """Recovery and DFU phones have no lockdownd to ask: the only phones ``unknown_lock`` decides for."""
    return port.device is not None and port.device.mode is not Mode.NORMAL


def _progress(port: Port, event: Progress, policy: Policy, now: float) -> Step:
    if port.state is State.NEEDS_TRUST and port.restore_started is not None:
        port = replace(port, state=State.RESTORING, since=now, reason="")
    elif port.state is not State.RESTORING:
        return _ignore(port, event)
    percent = min(100.0, max(0.0, event.percent))
    return Step(replace(port, phase=event.phase, percent=percent))


def _restore_finished(port: Port, event: RestoreFinished, policy: Policy, now: float) -> Step:
    if port.state not in (State.RESTORING, State.NEEDS_TRUST) or port.restore_started is None:
        return _ignore(port, event)
    return _enter(port, State.VERIFYING, now, Effect.VERIFY, phase="verifying", percent=100.0)


def _restore_failed(port: Port, event: RestoreFailed, policy: Policy, now: float) -> Step:
    if port.state not in (State.RESTORING, State.NEEDS_TRUST) or port.restore_started is None:
        return _ignore(port, event)
    if event.retryable and port.attempts <= policy.retries:
        return _enter(port, State.QUEUED, now, Effect.ENQUEUE, reason=f"retrying: {event.reason}")
    return _enter(port, State.FAILED, now, reason=event.reason, retryable=event.retryable)


def _port_fault(port: Port, event: PortFault, policy: Policy, now: float) -> Step:
    if port.state not in WORKING:
        return _ignore(port, event)
    effects = (Effect.STOP_WORK,) + ((Effect.DEQUEUE,) if port.state is State.QUEUED else ())
    return _enter(port, State.FAILED, now, *effects, reason=event.reason, retryable=False)


def _detached(port: Port, event: Detached, policy: Policy, now: float) -> Step:
    if port.state is State.EMPTY:
        return _ignore(port, event)
    effects: tuple[Effect, ...] = ()
    if port.state in WORKING:
        effects = (Effect.DEQUEUE,) if port.state is State.QUEUED else (Effect.STOP_WORK,)
    return Step(Port(slot=port.slot, since=now), effects)


_HANDLERS = {
    Attached: _attached,
    Identified: _identified,
    LockCheckStarted: _lock_check_started,
    TrustNeeded: _trust_needed,
    LockResult: _lock_result,
    Confirm: _confirm,
    Cancel: _cancel,
    Abort: _abort,
    Waiting: _waiting,
    RestoreStarted: _restore_started,
    Progress: _progress,
    RestoreFinished: _restore_finished,
    RestoreFailed: _restore_failed,
    PortFault: _port_fault,
    Detached: _detached,
    ChooseJob: _choose_job,
    SwitchJob: _switch_job,
}


def describe(old: Port, new: Port) -> str:
    """The log line of a transition: ``slot 3 [F2LXXXX] CHECKING_LOCK -> LOCKED (Find My is on)``."""
    device = new.device or old.device
    who = f" [{device.label}]" if device else ""
    reason = new.reason if new.reason != old.reason else ""
    if not reason and new.lock_reason != old.lock_reason:
        reason = new.lock_reason  # why a phone waits for a person (lock unknown)
    if not reason and new.state is State.RESTORING and old.state is not State.RESTORING and new.job == "erase":
        reason = "erase"
    why = f" ({reason})" if reason else ""
    return f"slot {new.slot}{who} {old.state} -> {new.state}{why}"
