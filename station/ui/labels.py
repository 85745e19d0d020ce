"""Short texts for ports, shared by the OLED screens and the command-line summary.

The display tells the operator what to do, in their words: a failure reads
"USB connection lost while copying iOS", not the worker's phase name and
exception (those stay in the log and the record, ``Port.reason``).
"""
from __future__ import annotations

import re

from hw.phones import Lock
from hw.worker import phases
from station.machine import Port, State, erasable

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


# What went wrong, first match wins: (a pattern of the full reason, the operator's words).
# The full reasons come from hw.worker.classify (a real restore), hw.worker.real
# (restored's status, the phone not coming back), hw.worker.sim (injected failures), the
# station's own timeout, and the IPSW cache (NO IPSW, NOT SIGNED: already operator words).
_WHAT: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(pattern, re.IGNORECASE), words) for
                                                       pattern, words in (
    (r"^phone reported restore status (\d+)(?::\s*(.+))?", "phone error {0}{1}"),
    (r"^(?:USB connection lost|USB transfer failed)\b|\busb failure\b|\bpulled\b|send data to ASR",
     "USB connection lost"),
    (r"^phone did not come back\b", "phone did not restart"),
    (r"\bdid not come back\b|\bno answer\b|\bnot answering\b", "phone stopped answering"),
    (r"^cannot reach Apple|\bnetwork failure\b", "no answer from Apple"),
    (r"^Apple's signing server refused", "Apple would not sign this iOS"),
    (r"^timed out\b|\btimeout failure\b", "took too long"),
    (r"^internal error\b|\binternal failure\b", "station error: see the log"),
    (r"\bdevice_rejected failure\b", "the phone refused the restore"),
))
# Where in the restore, for a reason that names the phase (phases.py's names).
PHASE_WORDS = {
    phases.ENTER_RECOVERY: "entering recovery",
    phases.SEND_IBSS: "starting the restore",
    phases.SEND_IBEC: "starting the restore",
    phases.BOOT_RAMDISK: "starting the restore",
    phases.PREPARE_DISK: "preparing the disk",
    phases.RESTORE_IMAGE: "copying iOS",
    phases.VERIFY_RESTORE: "checking iOS",
    phases.FLASH_FIRMWARE: "updating firmware",
    phases.UPDATE_BASEBAND: "updating the modem",
    phases.SEAL_SYSTEM_VOLUME: "sealing iOS",
    phases.REBOOT: "restarting",
}
_PHASE = re.compile(r"\b(" + "|".join(PHASE_WORDS) + r")\b")
RETRYING = "retrying: "  # machine._restore_failed's prefix for a failure it retries


def operator_reason(reason: str) -> str:
    """The operator's words for why a restore failed: what went wrong, and while doing what.

    A reason no rule knows is shown as it is (the caller cuts it to the screen).
    """
    what = ""
    for pattern, words in _WHAT:
        match = pattern.search(reason)
        if match:
            number, text = (match.groups() + (None, None))[:2]  # restored's status and its text
            what = words.format(number, f": {text}" if text else "")
            break
    phase = _PHASE.search(reason)
    if not what:
        if phase is None:
            return reason
        what = "restore failed"
    return f"{what} while {PHASE_WORDS[phase.group(1)]}" if phase else what


def retry_text(port: Port) -> str:
    """``RETRY 2/2`` while the station retries a failed restore by itself (between the attempts
    too); "" for a first attempt and for anything else."""
    if port.restore_started is None or port.max_attempts < 2:
        return ""
    if port.state in (State.RESTORING, State.NEEDS_TRUST) and port.attempts > 1:
        return f"RETRY {port.attempts}/{port.max_attempts}"
    if port.state is State.QUEUED and port.attempts >= 1:
        return f"RETRY {port.attempts + 1}/{port.max_attempts}"
    return ""


def state_title(port: Port) -> str:
    """The state as the detail screen's title says it: an erase job's RESTORING is ERASING."""
    if port.state is State.RESTORING and port.job == "erase":
        return "ERASING"
    return port.state.name.replace("_", " ")


def short_state(port: Port) -> str:
    """At most 8 characters (7 for every state but a restore at 100%): one overview cell."""
    if port.state is State.RESTORING:
        return "ERASE" if port.job == "erase" else f"{port.percent:.0f}%"  # an erase has no pace to show
    if port.state is State.QUEUED and retry_text(port):
        return "RETRY"
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
        phase = "erasing" if port.job == "erase" else port.phase.replace('_', ' ')
        lines += [f"{phase} {port.percent:.0f}%", eta_text(port, now)]
    elif port.state is State.NEEDS_CONFIRM:
        lines.append(f"{'hold' if port.held else 'press'} OK to {port.job}")
        if erasable(port):  # the other job is the operator's to choose (navigation: SwitchJob)
            lines.append(f"hold SELECT: {'restore' if port.job == 'erase' else 'erase'}")
    elif port.state is State.FAILED:
        lines.append(operator_reason(port.reason))
        if port.restore_started is not None:
            lines.append("press OK to retry")
    elif port.state is State.QUEUED and port.reason.startswith(RETRYING):
        lines.append(f"retry after: {operator_reason(port.reason.removeprefix(RETRYING))}")
    else:
        lines += [port.reason, NEXT_STEP.get(port.state, "")]
    return [line for line in lines if line]
