"""The worker's report protocol: one JSON object per line, worker -> station, on a pipe.

    {"type": "phase", "phase": "restore_image", "percent": 42.5}
    {"type": "status", "text": "restored: disk failure", "code": 6}
    {"type": "trust", "reason": "unlock phone, tap Trust"}
    {"type": "done"}
    {"type": "failed", "reason": "TSS refused", "kind": "network", "retryable": true}

"done" and "failed" are the last line a worker writes. ``decode`` raises
``MalformedMessage`` with a one-line reason for anything else.
"""
from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from typing import Any


class Kind(enum.StrEnum):
    """Why a restore failed, as far as retrying is concerned."""

    NETWORK = "network"  # TSS / signing / Apple unreachable
    USB = "usb"  # transfer error, phone gone or re-enumerated too late
    DEVICE_REJECTED = "device_rejected"  # the phone refused the image or reported a failure
    TIMEOUT = "timeout"
    INTERNAL = "internal"  # a bug or a broken setup: retrying repeats it


# Whether trying again may help, unless the failure knows better (e.g. a transient restored status).
RETRYABLE = {Kind.NETWORK: True, Kind.USB: True, Kind.TIMEOUT: True,
             Kind.DEVICE_REJECTED: False, Kind.INTERNAL: False}


@dataclass(frozen=True)
class Phase:
    phase: str
    percent: float


@dataclass(frozen=True)
class Status:
    """Something worth a line in the station's log (restored's StatusMsg, a wait, ...)."""

    text: str
    code: int | None = None


@dataclass(frozen=True)
class Trust:
    reason: str = "unlock phone, tap Trust"


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class Failed:
    reason: str
    kind: Kind
    retryable: bool


Message = Phase | Status | Trust | Done | Failed


class MalformedMessage(ValueError):
    """A line that is not one of the messages above; str() is one line."""


class WorkerFailure(Exception):
    """Raised inside the worker to end the restore with this ``Failed`` line."""

    def __init__(self, failed: Failed) -> None:
        super().__init__(failed.reason)
        self.failed = failed


def encode(message: Message) -> bytes:
    match message:
        case Phase(phase, percent):
            body: dict[str, Any] = {"type": "phase", "phase": phase, "percent": round(float(percent), 2)}
        case Status(text, code):
            body = {"type": "status", "text": text, "code": code}
        case Trust(reason):
            body = {"type": "trust", "reason": reason}
        case Done():
            body = {"type": "done"}
        case Failed(reason, kind, retryable):
            body = {"type": "failed", "reason": reason, "kind": Kind(kind).value, "retryable": retryable}
        case _:
            raise TypeError(f"not a worker message: {message!r}")
    # ensure_ascii keeps every line pure ASCII: no encoding question on either side.
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    try:
        body = json.loads(line)
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedMessage(f"not JSON ({error.__class__.__name__}): {_excerpt(line)}") from None
    if not isinstance(body, dict):
        raise MalformedMessage(f"not a JSON object: {_excerpt(line)}")
    kind = body.get("type")
    decoder = _DECODERS.get(kind) if isinstance(kind, str) else None
    if decoder is None:
        raise MalformedMessage(f"unknown message type {kind!r}: {_excerpt(line)}")
    try:
        return decoder(body)
    except (KeyError, TypeError, ValueError) as error:
        raise MalformedMessage(f"bad {kind} message ({error}): {_excerpt(line)}") from None


def _field(body: dict[str, Any], name: str, *types: type) -> Any:
    value = body[name]
    # bool is an int subclass: never accept it where a number is meant, nor a number for a bool.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise TypeError(f"{name} is {type(value).__name__}")
    return value


def _phase(body: dict[str, Any]) -> Phase:
    phase = _field(body, "phase", str)
    percent = float(_field(body, "percent", int, float))
    if not phase:
        raise ValueError("empty phase")
    if not math.isfinite(percent) or not 0.0 <= percent <= 100.0:
        raise ValueError(f"percent {percent} outside 0..100")
    return Phase(phase, percent)


def _status(body: dict[str, Any]) -> Status:
    code = body.get("code")
    if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
        raise TypeError(f"code is {type(code).__name__}")
    return Status(_field(body, "text", str), code)


def _failed(body: dict[str, Any]) -> Failed:
    return Failed(_field(body, "reason", str), Kind(_field(body, "kind", str)), _field(body, "retryable", bool))


_DECODERS = {
    "phase": _phase,
    "status": _status,
    "trust": lambda body: Trust(_field(body, "reason", str)),
    "done": lambda body: Done(),
    "failed": _failed,
}


def _excerpt(line: bytes, limit: int = 80) -> str:
    text = repr(line[:limit])
    return text + "..." if len(line) > limit else text
