"""Station configuration: TOML read once at start-up into frozen, typed objects.

Every section is a frozen dataclass; its fields name the keys, their types and
(through ``field(metadata=...)``) their bounds. Unknown keys, wrong types and
out-of-range values stop start-up with one line naming the key, e.g.::

    config error: [restore] max_parallel_restores = 0: must be 1..32

Relative paths are resolved against the directory of the config file, so a
config and the state it names travel together.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import pwd
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any, Literal, get_args, get_origin

from hw.settings import ButtonsSection, DisplaySection, LedsSection, bounded

# The default config, inside the package so that a wheel installed anywhere runs with it
# (the checkout's config/station.toml links to it; `station install-service` copies it to /etc).
PACKAGED_CONFIG = Path(__file__).resolve().parent / "system" / "station.toml"
SYSTEM_CONFIG = Path("/etc/station/station.toml")


class ConfigError(Exception):
    """A config problem, already worded as the one line the operator reads."""

    prefix = "config error"

    def __str__(self) -> str:
        return f"{self.prefix}: {self.args[0]}"


@dataclass(frozen=True)
class StationSection:
    id: str = "station-1"
    location: str = ""
    operator: str = ""
    state_dir: Path = Path("/var/lib/station")
    # Free space kept for the records: below it no new restore starts (a record must fit).
    records_reserve_mb: int = field(default=64, metadata=bounded(1, 1_000_000))
    # On SIGTERM running restores finish, for at most this long (systemd is asked for the time).
    stop_grace_s: float = field(default=900.0, metadata=bounded(0.0, 3600.0))
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # A second config file whose keys override this one's: on the appliance, the FAT boot
    # partition's station.toml, which a shop edits from any PC (station.overrides).
    override_file: Path | None = None


@dataclass(frozen=True)
class HardwareSection:
    backend: Literal["pi", "sim"] = "pi"


BCM_PINS = (0, 27)  # the GPIO numbers on a Raspberry Pi's 40-pin header


@dataclass(frozen=True)
class UsbLink:
    slots: tuple[int, ...]
    mb_s: float = field(default=40.0, metadata=bounded(1.0, 100000.0))


DEFAULT_LINK = "usb"


@dataclass(frozen=True)
class HubSection:
    slots: int = field(default=7, metadata=bounded(1, 64))
    # USB port path (as sysfs names it, e.g. "1-1.3") -> station slot number. A USB 3 hub port
    # has one path on each bus (USB 2 and SuperSpeed): both may name the same slot.
    ports: dict[str, int] = field(default_factory=dict)
    # The USB links the slots share, by name, each with the ASR payload rate it carries: a Pi 4's
    # ports all share one USB 2.0 link (36-40 MB/s in idevicerestore's logs), a Pi 5 has two, a
    # hub's upstream port is one. Empty: one 40 MB/s link behind every slot.
    links: dict[str, UsbLink] = field(default_factory=dict)
    # What one phone's filesystem transfer takes on an idle link (ASR: about 35 MB/s).
    phone_mb_s: float = field(default=35.0, metadata=bounded(1.0, 100000.0))

    def link_of(self, slot: int) -> str:
        return next((name for name, link in self.links.items() if slot in link.slots), DEFAULT_LINK)

    def link_rates(self) -> dict[str, float]:
        """Each link's rate in bytes/s (the default link when none is named)."""
        return {name: link.mb_s * 1e6 for name, link in self.links.items()} or {DEFAULT_LINK: 40e6}

    def __post_init__(self) -> None:
        on_link: dict[int, str] = {}
        for name, link in self.links.items():
            for slot in link.slots:
                where = f"[hub] links.{_key(name)}.slots = {toml_value(list(link.slots))}"
                if not 1 <= slot <= self.slots:
                    raise ConfigError(f"{where}: slot {slot} is not 1..{self.slots} ([hub] slots)")
                if slot in on_link:
                    raise ConfigError(f"{where}: slot {slot} is also on link {on_link[slot]}")
                on_link[slot] = name
        if self.links and len(on_link) < self.slots:
            missing = min(set(range(1, self.slots + 1)) - set(on_link))
            raise ConfigError(f"[hub] links: slot {missing} is on no link (every slot needs one)")
        seen: dict[tuple[int, str], str] = {}
        for path, slot in self.ports.items():
            where = f"[hub] ports.{path} = {slot}"
            if not re.fullmatch(r"\d+-\d+(\.\d+)*", path):
                raise ConfigError(f"[hub] ports.{path}: not a USB port path like \"1-1.3\"")
            if not 1 <= slot <= self.slots:
                raise ConfigError(f"{where}: must be 1..{self.slots} ([hub] slots)")
            bus = path.split("-", 1)[0]
            if (slot, bus) in seen:
                raise ConfigError(f"{where}: slot {slot} is also {seen[slot, bus]} on the same bus")
            seen[slot, bus] = path


@dataclass(frozen=True)
class RestoreSection:
    mode: Literal["counter", "line"] = "counter"
    unknown_lock: Literal["hold", "refuse", "restore"] = "hold"
    # Each phone's job at plug-in: "restore" reinstalls iOS from an IPSW; "erase" asks a phone
    # running iOS that trusts the station and whose lock check says CLEAR to erase itself
    # (mobilebackup2 EraseDevice); any other phone is restored (station.machine).
    job: Literal["restore", "erase"] = "restore"
    # "bus": start restores so that each USB link's filesystem transfers keep it busy and never
    # oversubscribe it ([hub] links), up to max_parallel_restores and memory; "fixed": start up to
    # max_parallel_restores at once, whatever they do on the bus.
    schedule: Literal["bus", "fixed"] = "bus"
    max_parallel_restores: int = field(default=8, metadata=bounded(1, 32))
    retries: int = field(default=1, metadata=bounded(0, 5))
    timeout_s: float = field(default=5400.0, metadata=bounded(10.0, 86400.0))
    # Peak memory of one restore worker: about 7x the RestoreRamDisk while pymobiledevice3
    # personalises it (994 MiB for iOS 18's 149 MB ramdisk; `python -m bench.restore_memory`).
    memory_per_restore_mb: int = field(default=1100, metadata=bounded(100, 65536))
    # Apple's TSS endpoint, as pymobiledevice3 and idevicerestore call it; a site with its own
    # signing proxy names it here (Apple Configurator: AuthInstallSigningServerURL).
    signing_url: str = "http://gs.apple.com/TSS/controller?action=2"

    def __post_init__(self) -> None:
        parts = urlsplit(self.signing_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or any(
                ord(c) < 33 or ord(c) > 126 for c in self.signing_url):
            raise ConfigError(f"[restore] signing_url = {toml_value(self.signing_url)}: "
                              "not an http(s) URL")


@dataclass(frozen=True)
class IpswSection:
    cache_dir: Path = Path("/var/lib/station/ipsw")
    # Published sizes and digests of one model's IPSWs, in the ipsw.me v4 shape;
    # "{identifier}" becomes the ProductType, so a mirror or a test server can stand in.
    catalog_url: str = "https://api.ipsw.me/v4/device/{identifier}?type=ipsw"
    # ProductTypes `station ipsw catalog refresh` fetches (empty: every iPhone from iPhone10,1)
    # and prefetch keeps (empty: only the models seen lately).
    models: tuple[str, ...] = ()  # each a ProductType: it becomes part of a URL and a file name
    # ProductType -> iOS version (or build) to restore instead of the newest verified one.
    pin: dict[str, str] = field(default_factory=dict)
    download_timeout_s: float = field(default=60.0, metadata=bounded(1.0, 600.0))
    # Attempts to resume an interrupted download before `add` gives up (the part file stays).
    download_retries: int = field(default=5, metadata=bounded(0, 100))
    # Keep the newest signed build of every model in `models` and every model seen lately in the
    # cache, downloaded in quiet hours or when idle (station.ipsw.prefetch), and prune the builds
    # Apple no longer signs that no pin names. Off: the cache changes only by `station ipsw`.
    prefetch: bool = False
    # The most the cache's IPSWs may take together: prefetch downloads nothing that would pass it.
    max_cache_gb: float = field(default=64.0, metadata=bounded(1.0, 1_000_000.0))
    # Prefetch also the models of phones the station had on its slots in this many days (0: none).
    seen_days: int = field(default=30, metadata=bounded(0, 3650))
    # "HH:MM-HH:MM" (local time, may pass midnight): prefetch then, busy or not; "": never.
    quiet_hours: str = ""
    # Outside quiet hours, prefetch once no port has been busy for this long; a phone that comes
    # meanwhile pauses the download (its part file is resumed later).
    idle_minutes: float = field(default=15.0, metadata=bounded(1.0, 1440.0))

    @property
    def quiet_minutes(self) -> tuple[int, int] | None:
        """``quiet_hours`` as (start, end) in minutes after midnight; None when there are none."""
        if not self.quiet_hours:
            return None
        start, end = (int(t[:2]) * 60 + int(t[3:]) for t in self.quiet_hours.split("-"))
        return start, end

    def __post_init__(self) -> None:
        if self.quiet_hours:
            found = QUIET_HOURS.fullmatch(self.quiet_hours)
            if not found or found[1] == found[2]:
                raise ConfigError(f"[ipsw] quiet_hours = {toml_value(self.quiet_hours)}: "
                                  "must be \"HH:MM-HH:MM\" (two different times, 24-hour clock), or \"\"")
        if "{identifier}" not in self.catalog_url:
            raise ConfigError(f"[ipsw] catalog_url = {toml_value(self.catalog_url)}: "
                              "must contain {identifier}")
        for model in self.models:
            if not PRODUCT_TYPE.fullmatch(model):
                raise ConfigError(f"[ipsw] models = {toml_value(list(self.models))}: "
                                  f"{toml_value(model)} is not a ProductType like \"iPhone14,2\"")
        for model in self.pin:
            if not PRODUCT_TYPE.fullmatch(model):
                raise ConfigError(f"[ipsw] pin.{_key(model)}: not a ProductType like \"iPhone14,2\"")


@dataclass(frozen=True)
class WebSection:
    """The status page, its JSON API and /metrics, served by the station's own event loop."""

    enabled: bool = True
    # Reading is open to whoever reaches this address: loopback by default; "0.0.0.0" opens it
    # to the shop LAN (README: Watching stations).
    listen: str = "127.0.0.1"
    port: int = field(default=8080, metadata=bounded(1, 65535))
    # Actions (cancel, retry, abort) and what names a phone or a customer (serials, IMEIs,
    # certificates) need this token ("Authorization: Bearer <token>"); "": none are served.
    # Confirming a held phone is never an action over the network: it is a long press on OK.
    token: str = ""


@dataclass(frozen=True)
class MqttSection:
    """The fleet: port states, events and every closed record published to an MQTT broker."""

    enabled: bool = False
    host: str = "localhost"
    port: int = field(default=1883, metadata=bounded(1, 65535))
    username: str = ""
    password: str = ""
    tls: bool = False
    ca_file: Path | None = None  # TLS: the broker's CA (default: the system's)
    topic_prefix: str = "station"  # topics are <topic_prefix>/<[station] id>/...
    keepalive_s: float = field(default=30.0, metadata=bounded(5.0, 3600.0))


@dataclass(frozen=True)
class HooksSection:
    """Commands run when a phone arrives, is found locked, is done or failed, with its facts in
    environment variables; each bounded by ``timeout_s``. An empty command runs nothing."""

    on_attach: str = ""
    on_locked: str = ""
    on_done: str = ""
    on_failed: str = ""
    timeout_s: float = field(default=60.0, metadata=bounded(1.0, 3600.0))


PRODUCT_TYPE = re.compile(r"iPhone\d{1,3},\d{1,3}")
_HH_MM = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]"
QUIET_HOURS = re.compile(rf"({_HH_MM})-({_HH_MM})")


@dataclass(frozen=True)
class Config:
    station: StationSection = field(default_factory=StationSection)
    hardware: HardwareSection = field(default_factory=HardwareSection)
    display: DisplaySection = field(default_factory=DisplaySection)
    buttons: ButtonsSection = field(default_factory=ButtonsSection)
    leds: LedsSection = field(default_factory=LedsSection)
    hub: HubSection = field(default_factory=HubSection)
    restore: RestoreSection = field(default_factory=RestoreSection)
    ipsw: IpswSection = field(default_factory=IpswSection)
    web: WebSection = field(default_factory=WebSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    hooks: HooksSection = field(default_factory=HooksSection)
    source: Path | None = field(default=None, compare=False)
    # The override file applied (or the last good copy of it), and, when the override file
    # itself could not be used, its one-line error: see station.overrides.
    overrides: Path | None = field(default=None, compare=False)
    override_problem: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _check_pins(self.buttons, self.leds)


def _check_pins(buttons: ButtonsSection, leds: LedsSection) -> None:
    """Each GPIO pin does one job. Checked on the whole config: a section alone cannot tell."""
    owners: dict[int, str] = {}
    for name in ("select_pin", "ok_pin", "back_pin"):
        pin = getattr(buttons, name)
        if pin in owners:
            raise ConfigError(f"[buttons] {name} = {pin}: pin {pin} is also {owners[pin]}")
        owners[pin] = name
    where = f"[leds] pins = {toml_value(list(leds.pins))}"
    for pin in leds.pins:
        if not BCM_PINS[0] <= pin <= BCM_PINS[1]:
            raise ConfigError(f"{where}: {pin} is not a BCM pin ({BCM_PINS[0]}..{BCM_PINS[1]})")
    for i, pin in enumerate(leds.pins):
        if pin in leds.pins[:i]:
            raise ConfigError(f"{where}: pin {pin} is named twice")
        if pin in owners:
            raise ConfigError(f"{where}: pin {pin} is also [buttons] {owners[pin]}")


def find_config(explicit: str | os.PathLike[str] | None) -> Path:
    """--config, else $STATION_CONFIG, else /etc/station, else the package's own default.

    An empty name is a mistake (an unset shell variable), not "use the default": a station
    that silently read another config would restore with another station's settings.
    """
    if explicit is not None:
        if not os.fspath(explicit):
            raise ConfigError("--config: empty file name")
        return Path(explicit)
    from_env = os.environ.get("STATION_CONFIG")
    if from_env is not None:
        if not from_env:
            raise ConfigError("STATION_CONFIG is set but empty: name a config file, or unset it")
        return Path(from_env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else PACKAGED_CONFIG


def load_config(path: str | os.PathLike[str]) -> Config:
    path = Path(path)
    data = read_toml(path, ConfigError)
    try:
        return parse_config(data, base_dir=path.resolve().parent, source=path)
    except RecursionError:
        raise ConfigError(f"{path}: values nested too deeply") from None


def read_toml(path: Path, error_class: type[ConfigError]) -> dict[str, Any]:
    """A TOML file's tables, or ``error_class`` with one line saying why not."""
    if "\0" in str(path):
        raise error_class(f"{toml_value(str(path))}: a path cannot contain a NUL character")
    try:
        text = path.read_bytes().decode("utf-8")
        return tomllib.loads(text)
    except FileNotFoundError:
        raise error_class(f"{path}: no such file") from None
    except OSError as error:
        raise error_class(f"{path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        line = error.object[:error.start].count(b"\n") + 1
        raise error_class(f"{path}: line {line}: not UTF-8 (byte 0x{error.object[error.start]:02x})") \
            from None
    except tomllib.TOMLDecodeError as error:
        raise error_class(f"{path}: {error}") from None
    except RecursionError:
        raise error_class(f"{path}: values nested too deeply") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise error_class(f"{path}: {error}") from None


def parse_config(data: dict[str, Any], base_dir: Path, source: Path | None = None) -> Config:
    return dataclasses.replace(with_overrides(Config(), data, base_dir), source=source)


PROVENANCE_FIELDS = ("source", "overrides", "override_problem")  # where the config came from


def with_overrides(config: Config, data: dict[str, Any], base_dir: Path) -> Config:
    """``config`` with some sections' keys replaced, validated like the file itself."""
    sections = _fields(Config)
    changes = {}
    for name, raw in data.items():
        if name not in sections or name in PROVENANCE_FIELDS:
            raise ConfigError(f"[{_key(name)}]: unknown section{_suggest(name, sections)}")
        if not isinstance(raw, dict):
            raise ConfigError(f"[{name}] = {toml_value(raw)}: must be a table")
        current = getattr(config, name)
        update = parse_table(f"[{name}]", type(current), raw, base_dir)
        changes[name] = dataclasses.replace(current, **{k: getattr(update, k) for k in raw})
    return dataclasses.replace(config, **changes)


def parse_table(where: str, cls: type, raw: dict[str, Any], base_dir: Path) -> Any:
    """One TOML table into the frozen dataclass ``cls``; ``where`` names it in errors."""
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"{where} {_key(key)}: unknown key{_suggest(key, fields)}")
        label = f"{where} {key}"
        values[key] = _coerce(label, hints[key], value, base_dir)
        bounds = fields[key].metadata.get("bounds")
        if bounds and not bounds[0] <= values[key] <= bounds[1]:
            low, high = bounds
            raise ConfigError(f"{label} = {toml_value(value)}: must be {_number(low)}..{_number(high)}")
    missing = [name for name, f in fields.items() if name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where} {missing[0]}: missing key")
    return cls(**values)


def _coerce(label: str, hint: Any, value: Any, base_dir: Path) -> Any:
    where = f"{label} = {toml_value(value)}"
    origin, args = get_origin(hint), get_args(hint)
    if origin in (types.UnionType, typing.Union):  # "X | None": absent means None
        return _coerce(label, next(a for a in args if a is not type(None)), value, base_dir)
    if origin is Literal:  # by type too: false == 0 and 2.0 == 2 in Python, not in the file
        if not any(type(value) is type(arg) and value == arg for arg in args):
            raise ConfigError(f"{where}: must be one of {', '.join(map(toml_value, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: must be a list")
        return tuple(_coerce(label, args[0], item, base_dir) for item in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a table")
        return {k: _coerce(f"{label}.{_key(k)}", args[1], v, base_dir) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a table")
        return parse_table(label, hint, value, base_dir)
    if hint is Path:  # a key named *_file names a file, every other path a directory
        return _path(where, value, base_dir, file=label.endswith("_file"))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is an int in Python; a config "true" where a number belongs is a mistake.
    if not isinstance(value, hint) or (hint is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}: must be {_type_name(hint)}")
    return value


def _path(where: str, value: Any, base_dir: Path, file: bool = False) -> Path:
    """A directory or file named in the config: absolute, resolved, and not a file posing as a
    directory (that much is cheap to know now; whether it can be created or written is said by
    the command that writes there)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: must be a path")
    if "\0" in value:
        raise ConfigError(f"{where}: a path cannot contain a NUL character")
    if value.startswith("~"):
        user = value[1:].split("/", 1)[0]
        try:
            if user:
                pwd.getpwnam(user)
            path = Path(value).expanduser()
        except (KeyError, RuntimeError):
            who = f"no user {user}" if user else "no home directory ($HOME unset)"
            raise ConfigError(f"{where}: {who} for {toml_value(value.split('/', 1)[0])}") from None
    else:
        path = Path(value)
    try:
        path = (base_dir / path).resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop
        raise ConfigError(f"{where}: {error}") from None
    if file and path.is_dir():
        raise ConfigError(f"{where}: {path} is a directory, not a file")
    if not file and path.exists() and not path.is_dir():
        raise ConfigError(f"{where}: {path} is a file, not a directory")
    return path


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _suggest(name: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def toml_value(value: Any, depth: int = 8) -> str:
    """A value as the operator wrote it in the file, on one line (nesting below ``depth``
    and long lists are elided: an error message names a value, it does not dump it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, (list, tuple)):
        if depth <= 0:
            return "[...]"
        shown = [toml_value(item, depth - 1) for item in value[:10]]
        return "[" + ", ".join(shown + ["..."] * (len(value) > 10)) + "]"
    if isinstance(value, dict):
        if depth <= 0:
            return "{...}"
        shown = [f"{_key(k)} = {toml_value(v, depth - 1)}" for k, v in list(value.items())[:10]]
        return "{ " + ", ".join(shown + ["..."] * (len(value) > 10)) + " }"
    return str(value)


def _key(name: str) -> str:
    """A key as TOML would need it written: bare if it can be, else quoted (so never two lines)."""
    return name if re.fullmatch(r"[A-Za-z0-9_.-]+", name) else json.dumps(name)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _type_name(hint: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        hint, hint.__name__)
