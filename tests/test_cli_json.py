"""Every `station` subcommand with --json, in-process: what it prints parses as JSON of the shape
the README's "Exit codes and JSON output" documents (an array for lists, an object for one thing,
null for what is not known, never "-"). A subcommand added without a case here fails
test_every_subcommand_has_a_case."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pty
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fleet.conftest import Broker, broker, mosquitto_binary  # noqa: F401 - the fixtures, used by name
from ipsw.conftest import Server, server  # noqa: F401 - the fixture, used by name
from ipsw.factory import build_ipsw, synthetic_manifest
from records import helpers
from records.helpers import FakeClock, Phone
from test_cli_devices import LOCKED
from test_cli_ports import bench, plug_soon  # noqa: F401 - the fixture, used by name
from web.running import STAY_UP, TOKEN, free_port, launch

from station.cli import build_parser, main
from station.config import StationSection
from station.records.recorder import Recorder

PHONE = {"mode", "product_type", "name", "ios", "build", "ecid", "udid", "serial"}
IPSW = {"file", "path", "size", "state", "build", "version", "models", "sha1", "sha256", "checked_at", "signed"}
SESSION = {"id", "slot", "started_at", "outcome", "serial", "ecid", "lock_result", "hash"}  # among all columns


@dataclass
class Station:
    dir: Path
    config: Path
    ipsw: Path
    scenario: Path
    serial: str = field(default_factory=lambda: helpers.device(1).serial)


EXAMPLE = Station(Path("DIR"), Path("DIR/station.toml"), Path("FILE.ipsw"), Path("SCENARIO"))  # for test ids


@pytest.fixture
def station(tmp_path: Path) -> Station:
    """A simulated station with records (a restore with its certificate, a locked phone), an
    IPSW in its cache, and a catalog URL nobody answers (offline)."""
    port = free_port()  # nobody answers there
    config = tmp_path / "station.toml"
    config.write_text(f'[station]\nstate_dir = "state"\n[hardware]\nbackend = "sim"\n[hub]\nslots = 4\n'
                      f'[ipsw]\ncache_dir = "ipsw"\ncatalog_url = "http://127.0.0.1:{port}/{{identifier}}"\n'
                      "download_retries = 0\n")
    clock = FakeClock()
    with Recorder(StationSection(state_dir=tmp_path / "state"), now=clock) as recorder:
        helpers.clean_restore(Phone(recorder, 1, clock), 1)
        helpers.locked(Phone(recorder, 2, clock), 2)
    scenario = tmp_path / "locked.toml"
    scenario.write_text(LOCKED)
    ipsw = build_ipsw(tmp_path / "iPhone14,7_18.0.1_22A3370_Restore.ipsw", synthetic_manifest())
    assert main(["ipsw", "add", str(ipsw), "--trust-unlisted", "--config", str(config)]) == 0
    return Station(tmp_path, config, ipsw, scenario)


@dataclass(frozen=True)
class Case:
    command: str
    arguments: Callable[[Station], list[str]]  # after the command's name
    shape: type  # list or dict
    keys: set[str]  # an object's keys, or each item's; exactly these unless `some`
    some: bool = False  # keys are a subset (the sessions' columns; station/ipsw's own objects)
    before: Callable[[Station, pytest.FixtureRequest], None] | None = None  # may ask for fixtures


def _plug_one(station: Station, request: pytest.FixtureRequest) -> None:
    plug_soon(request.getfixturevalue("bench"), (1, 4))


def _an_older_build(station: Station, request: pytest.FixtureRequest) -> None:
    """Something for prune to remove: the same model's older build, added as the station's was."""
    older = build_ipsw(station.dir / "iPhone14,7_17.5.1_21F90_Restore.ipsw",
                       synthetic_manifest(("iPhone14,7",), "17.5.1", "21F90"), seed=2)
    assert main(["ipsw", "add", str(older), "--trust-unlisted", "--config", str(station.config)]) == 0


def _online(station: Station, request: pytest.FixtureRequest) -> None:
    """A catalog server that publishes the station's IPSW, in place of the URL nobody answers."""
    publisher: Server = request.getfixturevalue("server")
    publisher.publish(station.ipsw, ("iPhone14,7",), "18.0.1", "22A3370")
    text = station.config.read_text()
    offline = text.split('catalog_url = "', 1)[1].split('"', 1)[0]
    station.config.write_text(text.replace(offline, publisher.catalog_url))


def _fleet(station: Station, request: pytest.FixtureRequest) -> None:
    """A broker, and the station's run publishing its ports to it."""
    running: Broker = request.getfixturevalue("broker")
    with station.config.open("a") as config:
        config.write(f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {running.port}\n')
    assert main(["run", "--sim", str(station.scenario), "--speed", "50", "--config", str(station.config)]) == 0


FLEET_PORT = {"station_id", "slot", "state", "short", "title", "lines", "eta", "percent", "phase", "reason",
              "lock", "held", "attempts", "job", "device", "station_status"}

def _serving(station: Station, request: pytest.FixtureRequest) -> None:
    """The station running (its locked phone's scenario, kept up) and serving its page on the
    config's [web] port, which `station status` reads."""
    port = free_port()
    with station.config.open("a") as config:
        config.write(f'[web]\nport = {port}\ntoken = "{TOKEN}"\n')
    scenario = station.dir / "serving.toml"
    scenario.write_text(f"{LOCKED}{STAY_UP}\n[config.web]\nport = {port}\ntoken = \"{TOKEN}\"\n")
    running = launch(station.config, scenario, 50, port)
    request.addfinalizer(running.stop)


CASES = [
    Case("run", lambda s: ["--check"], dict, {"config", "overrides", "scenario"}),
    Case("run", lambda s: ["--sim", str(s.scenario), "--speed", "50"], list,
         {"slot", "state", "outcome", "expected", "as_expected", "phone", "reason", "attempts"}),
    Case("devices", lambda s: ["--sim", str(s.scenario)], list, {"slot", *PHONE, "last_lock_check"}),
    Case("ports learn", lambda s: ["--slots", "1", "--timeout", "5"], dict, {"ports", "written"}, before=_plug_one),
    Case("records list", lambda s: [], list, SESSION, some=True),
    Case("records export", lambda s: [], list, {*SESSION, "transitions", "certificate"}, some=True),
    Case("records verify", lambda s: [], dict,
         {"ok", "signer", "records", "certificates", "open", "witnesses", "head_checked", "problem"}),
    Case("records new-chain", lambda s: ["--reason", "test"], dict, {"archive", "reason"}),
    Case("cert", lambda s: [s.serial], dict, {"media", "signature"}, some=True),
    Case("key show", lambda s: [], dict, {"fingerprint", "public_key", "created"}),
    Case("install-udev", lambda s: ["--root", str(s.dir / "root")], dict, {"written", "kept"}),
    Case("install-service", lambda s: ["--root", str(s.dir / "root")], dict, {"written", "kept"}),
    Case("status", lambda s: [], dict, {"station", "time", "ports", "counters", "faults", "fault_details",
                                        "status", "port_flags", "ipsw", "sensitive_shown"}, before=_serving),
    Case("ipsw list", lambda s: [], list, {"file", "path", "build", "version", "state"}, some=True),
    Case("ipsw match", lambda s: ["iPhone14,7"], dict, {"model", "file", "build", "identity"}, some=True),
    Case("ipsw add", lambda s: [str(s.ipsw)], dict, {*IPSW, "already_cached"}),
    Case("ipsw verify", lambda s: ["--all"], list, {*IPSW, "problem"}),
    Case("ipsw remove", lambda s: [s.ipsw.name], list, {"file", "path"}),
    Case("ipsw prune", lambda s: ["--keep", "1"], list, {"file", "path"}, before=_an_older_build),
    Case("fleet watch", lambda s: ["--once", "--wait", "1"], list, FLEET_PORT, before=_fleet),
    Case("fleet collect", lambda s: ["--db", str(s.dir / "fleet.sqlite3"), "--idle", "1"], dict,
         {"db", "stored", "duplicates", "refused", "stations"}, before=_fleet),
    Case("ipsw catalog refresh", lambda s: ["iPhone14,7"], dict,
         {"catalog", "entries", "models", "refreshed", "failed"}, before=_online),
]
PARAMS = [pytest.param(case, id=" ".join([case.command, *case.arguments(EXAMPLE)])) for case in CASES]


def subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found |= subcommands(child, f"{prefix} {name}".strip()) or {f"{prefix} {name}".strip()}
    return found


def test_every_subcommand_has_a_case():
    assert subcommands(build_parser()) == {case.command for case in CASES}


@pytest.mark.parametrize("case", PARAMS)
def test_json_output_has_the_documented_shape(case: Case, station: Station, request, capsys):
    if case.before is not None:
        case.before(station, request)
        capsys.readouterr()  # what a preparing command printed
    argv = [*case.command.split(), *case.arguments(station), "--json", "--config", str(station.config)]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    printed = json.loads(out)
    assert isinstance(printed, case.shape)
    objects = printed if isinstance(printed, list) else [printed]
    assert objects, "a case must print something to check"
    for item in objects:
        assert isinstance(item, dict)
        assert case.keys <= set(item) if case.some else set(item) == case.keys
    assert "-" not in _values(printed)


def _values(value: Any) -> list[Any]:
    """Every scalar inside ``value``, however deep."""
    if isinstance(value, dict):
        return [v for item in value.values() for v in _values(item)]
    if isinstance(value, list):
        return [v for item in value for v in _values(item)]
    return [value]


def test_run_sim_json_in_a_terminal_prints_the_summary_alone(station: Station):
    """A terminal on stdin and stdout would bring up the terminal view; --json keeps it away."""
    controller, terminal = pty.openpty()
    try:
        result = subprocess.Popen([sys.executable, "-m", "station.cli", "run", "--sim", str(station.scenario),
                                   "--speed", "50", "--json", "--config", str(station.config)],
                                  stdin=terminal, stdout=terminal, stderr=subprocess.DEVNULL, cwd=station.dir)
        os.close(terminal)
        printed = b""
        with contextlib.suppress(OSError):  # EIO once the process closed its end
            while chunk := os.read(controller, 65536):
                printed += chunk
        assert result.wait(timeout=120) == 0
    finally:
        os.close(controller)
    [port] = json.loads(printed.decode().replace("\r\n", "\n"))
    assert port["outcome"] == "locked"
