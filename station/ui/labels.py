"""Short texts for ports, shared by the OLED screens and the command-line summary."""
from __future__ import annotations

from hw.phones import Lock
from station.machine import Port, State

# At most 7 characters, so a label fits an overview cell beside a two-digit slot number.
SHORT = {
    State.EMPTY: "EMPTY",
    State.DETECTING: "DETECT",
    State.IDENTIFIED: "ID",
    State.CHECKING_LOCK: "CHECK",
    State.NEEDS_TRUST: "TRUST?",
    State.LOCKED: "LOCKED",
    State.REFUSED: "REFUSED",
    State.NEEDS_CONFIRM: "OK?",
    State.QUEUED: "QUEUED",
    State.RESTORING: "RESTORE",  # shown as a percentage once there is one
    State.VERIFYING: "VERIFY",
    State.DONE: "DONE",
    State.FAILED: "FAIL",
}

# States that wait for a person: the overview frames them so they catch the eye.
NEEDS_PERSON = frozenset({State.NEEDS_TRUST, State.LOCKED, State.REFUSED, State.NEEDS_CONFIRM,
                          State.FAILED})

LOCK_TEXT = {Lock.UNCHECKED: "not checked", Lock.CLEAR: "clear", Lock.LOCKED: "LOCKED",
             Lock.UNKNOWN: "unknown"}

# What the operator does next, for the states that wait on them.
NEXT_STEP = {
    State.LOCKED: "never restored: unplug",
    State.REFUSED: "not restored: unplug",
    State.DONE: "unplug the phone",
    State.DETECTING: "reading the phone...",
    State.IDENTIFIED: "reading the phone...",
    State.CHECKING_LOCK: "checking the lock...",
    State.VERIFYING: "checking lock again...",
    State.QUEUED: "waiting for a free slot",
}


def short_state(port: Port) -> str:
    """At most 8 characters (7 for every state but a restore at 100%): one overview cell."""
    if port.state is State.RESTORING:
        return f"{port.percent:.0f}%"
    if port.state is State.NEEDS_CONFIRM and port.held:
        return "HOLD OK"
    if port.state is State.DONE and not port.verified:
        return "DONE?"  # restored, but the lock check after it could not tell
    return SHORT[port.state]


def eta_text(port: Port, now: float) -> str:
    """Time left at the pace so far, e.g. ``6m47s left``; empty until there is a pace to go by."""
    if port.state is not State.RESTORING or port.restore_started is None or port.percent < 1:
        return ""
    elapsed = max(0.0, now - port.restore_started)
    left = int(elapsed * (100.0 - port.percent) / port.percent)
    hours, rest = divmod(left, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m left" if hours else f"{minutes}m{seconds:02d}s left"


def model_text(port: Port) -> str:
    """The model's name, else its ProductType, else the mode it is in."""
    device = port.device
    if device is None:
        return ""
    return device.name or device.product_type or device.mode.value.upper()


def lock_text(port: Port) -> str:
    """``lock: LOCKED (Find My is on)``: the reason is left out when another line says it."""
    text = f"lock: {LOCK_TEXT[port.lock]}"
    if port.lock_reason and port.lock_reason != port.reason:
        text += f" ({port.lock_reason})"
    return text


def detail_lines(port: Port, now: float) -> list[str]:
    """The detail screen of one slot, one logical line each (the screen wraps long ones)."""
    device = port.device
    if device is None:
        return ["no phone", "plug a phone in"]
    version = f"iOS {device.ios_version}" if device.ios_version else device.mode.value.upper()
    lines = [model_text(port), f"{version}  {device.serial}".rstrip(), lock_text(port)]
    if port.state is State.RESTORING:
        lines += [f"{port.phase.replace('_', ' ')} {port.percent:.0f}%", eta_text(port, now)]
    elif port.state is State.NEEDS_CONFIRM:
        lines.append("hold OK to restore" if port.held else "press OK to restore")
    elif port.state is State.FAILED:
        lines.append(port.reason)
        if port.restore_started is not None:
            lines.append("press OK to retry")
    else:
        lines += [port.reason, NEXT_STEP.get(port.state, "")]
    return [line for line in lines if line]
