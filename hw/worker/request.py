"""What the station asks a worker to do: one restore of one phone. Crosses the process boundary as JSON."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from hw.phones import Device, Mode
from hw.worker.messages import Kind


@dataclass(frozen=True)
class InjectedFailure:
    """Make the simulated restore fail once ``phase`` reaches ``percent``."""

    phase: str
    percent: float = 0.0
    kind: Kind = Kind.USB
    retryable: bool | None = None  # None: what the real worker would say for ``kind``
    reason: str = ""
    # "fail": the worker reports this failure; "kill": it dies there of SIGKILL (the OOM killer,
    # a crash), reporting nothing; "hang": it stops there and never reports again (a phone that
    # stopped answering), until the supervisor's timeout ends it; "pause": it waits there a moment
    # and goes on (a fault the station strikes when it sees the restore reach that point then
    # strikes there, however far its view of the progress lags the worker's).
    effect: Literal["fail", "kill", "hang", "pause"] = "fail"


@dataclass(frozen=True)
class SimParams:
    """The simulated restore engine: no phone, the same phases, real IPSW bytes when a path is given."""

    usb_rate: float = 35e6  # bytes/s of the simulated USB 2 link (ASR reaches ~35 MB/s)
    speed: float = 1.0  # time scale: 10 runs ten times faster than a real phone
    image_bytes: int = 8_700_000_000  # synthetic OS image when no IPSW is named: an iOS 18 restore
    fail: InjectedFailure | None = None
    # The USB link this phone's port shares (hw.sim.usb_links): its socket and name; none: the
    # phone has ``usb_rate`` to itself.
    link_socket: str | None = None
    link: str = ""


@dataclass(frozen=True)
class RestoreRequest:
    label: str  # names the log file and the log lines: a slot, e.g. "slot3"
    log_dir: str  # the worker's stdout/stderr and log go to <log_dir>/<label>-<time>.log
    mode: Mode = Mode.RECOVERY
    udid: str = ""  # normal mode: the usbmux serial
    ecid: int | None = None  # pins the restore to this phone; required outside the sim
    ipsw: str | None = None  # local IPSW path (for the sim: None means synthetic bytes)
    timeout: float = 3600.0  # whole restore, enforced by the supervisor
    trust_timeout: float = 120.0  # how long a passcode-locked phone may wait for Trust
    usb_timeout: float = 120.0  # each wait for the phone to re-enumerate on USB
    usbmux_address: str | None = None  # USBMUXD_SOCKET_ADDRESS for this worker
    signing_url: str = "http://gs.apple.com/TSS/controller?action=2"  # [restore] signing_url
    log_level: str = "INFO"
    sim: SimParams | None = None

    @classmethod
    def for_device(cls, device: Device, label: str, log_dir: str, ipsw: str | None, **options: Any) -> RestoreRequest:
        return cls(label=label, log_dir=log_dir, mode=device.mode, udid=device.udid, ecid=device.ecid,
                   ipsw=ipsw, **options)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), default=_enum_value).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> RestoreRequest:
        raw = json.loads(data)
        sim = raw.pop("sim", None)
        request = cls(**{**raw, "mode": Mode(raw.get("mode", Mode.RECOVERY.value))})
        if sim is None:
            return request
        fail = sim.pop("fail", None)
        if fail is not None:
            fail = InjectedFailure(**{**fail, "kind": Kind(fail["kind"])})
        return replace(request, sim=SimParams(**sim, fail=fail))


def _enum_value(value: object) -> object:
    if isinstance(value, (Mode, Kind)):
        return value.value
    raise TypeError(f"not JSON serialisable: {value!r}")
