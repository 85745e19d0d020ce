"""Simulation scenarios: which phones arrive where and when, and who presses what.

A scenario is a TOML file; the same file drives the demo, the end-to-end tests
and the benchmarks::

    [scenario]
    description = "..."
    duration = 900            # optional hard stop, scenario seconds
    usbmuxd = "on-demand"     # as on Debian: runs only while a phone runs iOS | "always"
    engine = "real"           # real (default): pymobiledevice3's Restore against the simulated phones |
                              #   timed: phases walked with timers (fast, for thousands of restores)
    unsigned_models = ["iPhone15,4"]  # real engine: the signing server refuses their IPSW, as Apple does
    os_image_mb = 16          # real engine: size of the simulated IPSWs' OS image (an iOS 18 one: ~8700)
    link_fail_load = 2.0      # a USB link asked for more than 2x its rate ([hub] links) ...
    link_fail_s = 30          # ... for 30 s fails a filesystem transfer, as on a Pi 4 (idevicerestore #604)

    [config.restore]          # optional: config keys this scenario needs
    mode = "line"

    [[phone]]
    name = "clean"
    slot = 1
    model = "iPhone14,7"
    ios = "17.5.1"
    mode = "normal"           # normal | recovery | dfu
    activation_lock = false
    find_my = false
    attach = 0                # scenario seconds
    detach = 500              # optional
    pairing = "auto"          # auto (Hello screen) | dialog | passcode | denied
    fail = { phase = "restore_image", percent = 60, times = 1, kind = "usb" }  # timed engine
    # Timed engine: a fault when this phone's restore reaches a phase (percent within it), on the
    # first ``times`` attempts; at most one of fail and fault_at. ``phase`` is a restore phase, or
    # "hello": the lock check after the restore, once the phone is back at the Hello screen.
    fault_at = { phase = "restore_image", percent = 50, fault = "pull", times = 1, down_s = 300 }
                              # fault: pull (the cable: the phone leaves the bus) | kill-worker
                              #   (SIGKILL of its restore worker) | hang (the restore stops answering:
                              #   [restore] timeout_s ends it; at "hello", lockdownd stops answering) |
                              #   network-down (for down_s scenario seconds) | usbmuxd-restart
                              #   (stopped, started again down_s later)
    restore_fault = ""        # real engine: where the phone fails, once: status-<n> | pulled-during-asr |
                              #   usb-pulled-upload | ibss-rejected
    expect = "done"           # what the port must show at the end ("done": verified at Hello)
    # Quirks of real phones and of Apple's server (hw/sim/phone.py cites each one's source):
    find_my_answer = "honest" # what IsAssociated says: honest | false | absent
    activation_answer = "auto"  # Apple's page: auto | record | record-html | form | form-html |
                              #   error | ack | ack-plist | error-html | http-500 | wrong-type
    activation_ready_after = 0  # s after each boot before the activation daemon answers
    lockdown_stalls = false   # lockdownd takes connections and never answers
    usb3 = false              # USB-C phone on a USB 3 hub: SuperSpeed path in iOS, USB 2 in iBoot
    vanish_on_scan = 0        # the next N USB scans catch it re-enumerating
    # What refurbishers record (hw/sim/phone.py has the defaults; left out: the simulated phone's own):
    cellular = true           # false: no IMEI, IMEI2 or MEID (a Wi-Fi-only phone)
    storage_gb = 128          # com.apple.disk_usage TotalDiskCapacity, decimal GB
    color = "1"               # DeviceColor
    enclosure_color = "#3b3b3c"  # DeviceEnclosureColor
    battery_cycle_count = 87  # diagnostics relay (AppleSmartBattery)
    battery_design_capacity = 3227       # mAh
    battery_full_charge_capacity = 2951  # mAh

    [[press]]
    at = 30
    button = "ok"             # select | ok | back
    long = true
    slot = 3                  # optional: SELECT to this slot's detail first

    [[network]]               # the station's internet link goes down / comes back
    at = 200
    up = false

    [[usbmuxd]]               # usbmuxd stops (a crash, an upgrade) / starts again
    at = 30
    running = false

A failure's ``percent`` is within its phase (``restore_image`` at 60: 60% of the OS image sent).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hw.phones import Mode
from hw.sim import check_restore_fault
from hw.sim.activation_pages import ANSWERS, GIVES_A_RECORD
from hw.worker.phases import TYPICAL_SECONDS, sequence
from station.config import Config, ConfigError, bounded, parse_table, read_toml, toml_value, \
    with_overrides
from station.ipsw.models import boards_for

PHASES = tuple(TYPICAL_SECONDS)
ActivationAnswerName = Literal[("auto", *ANSWERS)]  # type: ignore[valid-type]

class ScenarioError(ConfigError):
    prefix = "scenario error"


@dataclass(frozen=True)
class Failure:
    phase: str = "restore_image"
    percent: float = field(default=50.0, metadata=bounded(0, 100))
    times: int = field(default=1, metadata=bounded(1, 100))
    kind: Literal["network", "usb", "device_rejected", "timeout"] = "usb"


HELLO = "hello"  # fault_at's pseudo-phase: the lock check at the Hello screen after the restore
FAULTS_AT = ("pull", "kill-worker", "hang", "network-down", "usbmuxd-restart")


@dataclass(frozen=True)
class PhaseFault:
    """A fault struck when a phone's restore reaches ``phase`` at ``percent`` (timed engine)."""

    phase: str
    fault: Literal["pull", "kill-worker", "hang", "network-down", "usbmuxd-restart"]
    percent: float = field(default=0.0, metadata=bounded(0, 100))
    times: int = field(default=1, metadata=bounded(1, 100))
    down_s: float = field(default=300.0, metadata=bounded(0, 86400))  # network-down, usbmuxd-restart


@dataclass(frozen=True)
class ScenarioPhone:
    name: str
    slot: int = field(metadata=bounded(1, 64))
    model: str = "iPhone14,7"
    ios: str = "17.5.1"
    build: str = ""
    mode: Literal["normal", "recovery", "dfu"] = "normal"
    activated: bool = False  # set up past the Hello screen (implied by find_my)
    activation_lock: bool = False  # Apple's server asks for the Apple ID
    find_my: bool = False
    pairing: Literal["auto", "dialog", "passcode", "denied"] = "auto"
    attach: float = field(default=0.0, metadata=bounded(0, 86400))
    detach: float | None = field(default=None, metadata=bounded(0, 86400))
    serial: str = ""
    ecid: int | None = field(default=None, metadata=bounded(1, 2**64 - 1))  # a 64-bit chip id
    fail: Failure | None = None
    fault_at: PhaseFault | None = None
    expect: Literal["", "empty", "done", "done_unverified", "locked", "refused", "failed",
                    "needs_confirm"] = ""
    find_my_answer: Literal["honest", "false", "absent"] = "honest"
    activation_answer: ActivationAnswerName = "auto"
    activation_ready_after: float = field(default=0.0, metadata=bounded(0, 3600))
    lockdown_stalls: bool = False
    usb3: bool = False
    vanish_on_scan: int = field(default=0, metadata=bounded(0, 100))
    restore_fault: str = ""
    # This phone's job, as an operator would choose it ("": the station's [restore] job). The
    # machine still decides: an erase runs only for a trusted phone running iOS that checks CLEAR.
    job: Literal["", "restore", "erase"] = ""
    # What refurbishers record; None: the simulated phone's default (hw/sim/phone.py).
    cellular: bool = True
    storage_gb: int | None = field(default=None, metadata=bounded(1, 65536))
    color: str | None = None
    enclosure_color: str | None = None
    battery_cycle_count: int | None = field(default=None, metadata=bounded(0, 100_000))
    battery_design_capacity: int | None = field(default=None, metadata=bounded(1, 100_000))
    battery_full_charge_capacity: int | None = field(default=None, metadata=bounded(1, 100_000))

    def phone_facts(self) -> dict[str, Any]:
        """The simulated phone's fields these keys set (hw.sim.SimPhone), only those given."""
        given = {"cellular": self.cellular, "color": self.color, "enclosure_color": self.enclosure_color,
                 "battery_cycle_count": self.battery_cycle_count,
                 "battery_design_capacity": self.battery_design_capacity,
                 "battery_full_charge_capacity": self.battery_full_charge_capacity,
                 "storage_bytes": None if self.storage_gb is None else self.storage_gb * 1_000_000_000}
        return {name: value for name, value in given.items() if value is not None}


@dataclass(frozen=True)
class ScenarioPress:
    at: float = field(metadata=bounded(0, 86400))
    button: Literal["select", "ok", "back"]
    long: bool = False
    slot: int | None = field(default=None, metadata=bounded(1, 64))


@dataclass(frozen=True)
class NetworkChange:
    at: float = field(metadata=bounded(0, 86400))
    up: bool


@dataclass(frozen=True)
class UsbmuxdChange:
    at: float = field(metadata=bounded(0, 86400))
    running: bool


@dataclass(frozen=True)
class ScenarioInfo:
    description: str = ""
    duration: float | None = field(default=None, metadata=bounded(0, 86400))
    usbmuxd: Literal["on-demand", "always"] = "on-demand"
    engine: Literal["timed", "real"] = "real"
    unsigned_models: tuple[str, ...] = ()  # models whose simulated IPSW Apple no longer signs
    os_image_mb: int = field(default=16, metadata=bounded(1, 16384))  # the simulated IPSWs' OS image
    # A hung station: at this scenario second the event loop blocks for stall_s real seconds
    # (what systemd's watchdog is for; make image-test checks that it restarts the station).
    stall_at: float | None = field(default=None, metadata=bounded(0, 86400))
    stall_s: float = field(default=0.0, metadata=bounded(0, 86400))
    # A USB link whose filesystem transfers ask for more than this many times its rate for
    # link_fail_s scenario seconds fails one of them (hw.sim.usb_links: idevicerestore #604).
    link_fail_load: float = field(default=2.0, metadata=bounded(1.0, 1000.0))
    link_fail_s: float = field(default=30.0, metadata=bounded(0.0, 86400.0))


@dataclass(frozen=True)
class Scenario:
    name: str
    info: ScenarioInfo
    phones: tuple[ScenarioPhone, ...]
    presses: tuple[ScenarioPress, ...]
    config: dict[str, Any]  # overrides, validated against the config schema by the caller
    base_dir: Path
    network: tuple[NetworkChange, ...] = ()
    usbmuxd: tuple[UsbmuxdChange, ...] = ()
    source: Path | None = None  # the file, named in errors found later (against the config)

    @property
    def last_event(self) -> float:
        times = [p.attach for p in self.phones] + [p.detach or 0.0 for p in self.phones]
        times += [p.at for p in self.presses] + [n.at for n in self.network]
        times += [u.at for u in self.usbmuxd]
        if self.info.stall_at is not None:
            times.append(self.info.stall_at)
        return max(times, default=0.0)


_SERIAL = re.compile(r"^[A-Z0-9]{8,14}$")


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    data = read_toml(path, ScenarioError)
    try:
        return _parse(path, data)
    except RecursionError:
        raise ScenarioError(f"{path.name}: values nested too deeply") from None
    except ScenarioError:
        raise
    except ConfigError as error:
        raise ScenarioError(f"{path.name}: {error.args[0]}") from None


def configure(config: Config, scenario: Scenario) -> Config:
    """The station's config with the scenario's [config] overrides, checked to fit the
    scenario: every slot it names is on the hub. Done before anything starts."""
    config = with_overrides(config, scenario.config, scenario.base_dir)
    slots = config.hub.slots
    named = [(f"[[phone]] {phone.name}", phone.slot) for phone in scenario.phones]
    named += [(f"[[press]] #{i}", press.slot) for i, press in enumerate(scenario.presses, 1)]
    for where, slot in named:
        if slot is not None and slot > slots:
            file = (scenario.source or Path(scenario.name)).name
            raise ScenarioError(f"{file}: {where} slot = {slot}: beyond the hub ([hub] slots = {slots})")
    return config


def _parse(path: Path, data: dict[str, Any]) -> Scenario:
    known = {"scenario", "config", "phone", "press", "network", "usbmuxd"}
    for key in data:
        if key not in known:
            raise ConfigError(f"[{key}]: unknown table (expected one of {', '.join(sorted(known))})")
    info = parse_table("[scenario]", ScenarioInfo, _table(data, "scenario"), path.parent)
    phones = tuple(parse_table(f"[[phone]] #{i}", ScenarioPhone, raw, path.parent)
                   for i, raw in enumerate(_array(data, "phone"), 1))
    presses = tuple(parse_table(f"[[press]] #{i}", ScenarioPress, raw, path.parent)
                    for i, raw in enumerate(_array(data, "press"), 1))
    network = tuple(parse_table(f"[[network]] #{i}", NetworkChange, raw, path.parent)
                    for i, raw in enumerate(_array(data, "network"), 1))
    usbmuxd = tuple(parse_table(f"[[usbmuxd]] #{i}", UsbmuxdChange, raw, path.parent)
                    for i, raw in enumerate(_array(data, "usbmuxd"), 1))
    for number, phone in enumerate(phones, 1):
        _check_phone(number, phone)
        if phone.fault_at is not None and info.engine != "timed":
            raise ConfigError(f"[[phone]] {phone.name} fault_at: the timed engine's "
                              '([scenario] engine = "timed")')
    _check_slots(phones)
    return Scenario(path.stem, info, phones, presses, _table(data, "config"), path.parent, network,
                    usbmuxd, source=path)


def _check_phone(number: int, phone: ScenarioPhone) -> None:
    if not phone.name.isprintable() or not phone.name:  # it names the phone in every message
        raise ConfigError(f"[[phone]] #{number} name = {toml_value(phone.name)}: "
                          "must be one line of printable characters")
    where = f"[[phone]] {phone.name}"
    if not re.fullmatch(r"iPhone\d+,\d+", phone.model):
        raise ConfigError(f"{where} model = {toml_value(phone.model)}: must look like 'iPhone14,7'")
    if not boards_for(phone.model):  # the simulated phone takes its chip and board from there
        raise ConfigError(f"{where} model = {toml_value(phone.model)}: "
                          "no such iPhone (pymobiledevice3's IRECV_DEVICES)")
    if not re.fullmatch(r"\d+(\.\d+){1,2}", phone.ios):
        raise ConfigError(f"{where} ios = {toml_value(phone.ios)}: must look like '17.5.1'")
    if phone.serial and not _SERIAL.fullmatch(phone.serial):
        raise ConfigError(f"{where} serial = {toml_value(phone.serial)}: "
                          "must be 8-14 capital letters or digits")
    if phone.fail is not None and phone.fail.phase not in PHASES:
        raise ConfigError(f"{where} fail phase = {toml_value(phone.fail.phase)}: "
                          f"must be one of {', '.join(PHASES)}")
    if phone.fault_at is not None:
        _check_fault_at(where, phone)
    try:
        check_restore_fault(phone.restore_fault)
    except ValueError as error:
        raise ConfigError(f"{where} restore_fault = {toml_value(phone.restore_fault)}: {error}") from None
    if phone.detach is not None and phone.detach < phone.attach:
        raise ConfigError(f"{where} detach = {phone.detach}: before attach = {phone.attach}")
    if phone.activation_lock and phone.activation_answer in GIVES_A_RECORD:
        raise ConfigError(f"{where} activation_answer = {toml_value(phone.activation_answer)}: "
                          "Apple never sends an activation record for a locked phone")


def _check_fault_at(where: str, phone: ScenarioPhone) -> None:
    fault = phone.fault_at
    assert fault is not None
    reached = sequence(Mode(phone.mode))
    if fault.phase != HELLO and fault.phase not in reached:
        raise ConfigError(f"{where} fault_at phase = {toml_value(fault.phase)}: a restore from "
                          f"{phone.mode} mode goes through {', '.join(reached)}, then {HELLO!r}")
    if fault.phase == HELLO and fault.fault == "kill-worker":
        raise ConfigError(f"{where} fault_at = kill-worker at {HELLO!r}: no restore worker runs "
                          "once the restore is over")
    if phone.fail is not None:
        raise ConfigError(f"{where}: fail and fault_at both set (one injected fault per phone)")


def _check_slots(phones: tuple[ScenarioPhone, ...]) -> None:
    """Two phones may share a slot only one after the other."""
    by_slot: dict[int, list[ScenarioPhone]] = {}
    for phone in phones:
        by_slot.setdefault(phone.slot, []).append(phone)
    for slot, group in by_slot.items():
        group.sort(key=lambda p: p.attach)
        for first, second in zip(group, group[1:]):
            if first.detach is None or first.detach > second.attach:
                raise ConfigError(f"[[phone]] {second.name} slot = {slot}: "
                                  f"{first.name} is still plugged in there")


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}]: must be a table")
    return value


def _array(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{key}: must be written [[{key}]]")
    return value
