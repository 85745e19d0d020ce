"""`station run`: the appliance loop, or a simulated scenario with --sim."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from hw import logsetup
from hw.backends import UnknownBackend, backend_name
from station.app import RunOptions, run_station
from station.cli import FAILED, INTERRUPTED, OK, CommandError, positive_number
from station.commands.output import phone_json, print_json
from station.config import PACKAGED_CONFIG, Config
from station.machine import Port, State
from station.scenario import Scenario, configure, load_scenario
from station.ui.labels import short_state


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the station (the appliance loop)")
    parser.add_argument("--sim", metavar="SCENARIO",
                        help="play a simulated scenario (phones, buttons) and exit when it ends")
    parser.add_argument("--speed", type=positive_number, metavar="FACTOR",
                        help="simulated time runs FACTOR times faster (with --sim; default 1)")
    parser.add_argument("--duration", type=positive_number, metavar="S",
                        help="stop after S seconds of scenario time (with --sim)")
    parser.add_argument("--web", action="store_true",
                        help="with --sim: serve the status page at the config's [web] address too "
                             "(a simulation serves it only when asked: tests play many at once)")
    parser.add_argument("--check", action="store_true",
                        help="load and check the config (and the scenario), start nothing, exit")
    parser.add_argument("--json", action="store_true",
                        help="with --check: an object naming the files checked; with --sim: an "
                             "array, one object per port, when the scenario ends")
    parser.set_defaults(handler=run, reports_config_problem=True)


def run(args: argparse.Namespace, config: Config) -> int:
    for option, what in (("duration", "counts"), ("speed", "speeds up")):
        if getattr(args, option) is not None and not args.sim:
            raise CommandError(f"--{option} needs --sim (it {what} scenario time)")
    if args.web and not args.sim:
        raise CommandError("--web needs --sim (the appliance serves the page when [web] enabled = true)")
    if args.json and not (args.check or args.sim):
        raise CommandError("--json needs --check or --sim (the appliance loop prints no result)")
    scenario = load_scenario(args.sim) if args.sim else None
    if scenario is not None:
        config = configure(own_state(config), scenario)
    try:
        backend = "sim" if scenario is not None else backend_name(config.hardware.backend)
    except UnknownBackend as error:
        raise CommandError(str(error)) from None
    if args.check:  # everything above is what a real start checks first; nothing was started
        if config.override_problem:
            raise CommandError(config.override_problem)
        checked = {"config": config.source, "overrides": config.overrides, "scenario": args.sim}
        if args.json:
            print_json({what: None if path is None else str(path) for what, path in checked.items()})
        else:
            for path in filter(None, checked.values()):
                print(f"{path}: OK")
        return 0
    _configure_logging(config.station.log_level)
    options = RunOptions(backend=backend, scenario=scenario, speed=args.speed or 1.0,
                         duration=args.duration, web=True if args.web else None,
                         # --json: stdout holds the summary alone, never the terminal view
                         interactive=not args.json and sys.stdout.isatty() and sys.stdin.isatty())
    result = asyncio.run(run_station(config, options))
    if scenario is None:
        return 0
    ports = summary(result.ports, scenario, judge=result.scenario_over)
    if args.json:
        print_json(ports)
    else:
        for line in _summary_lines(result.ports, ports):
            print(line)
    if not result.scenario_over:
        print("stopped before the scenario ended", file=sys.stderr)
        return INTERRUPTED
    return FAILED if any(port["as_expected"] is False for port in ports) else OK


def own_state(config: Config) -> Config:
    """A simulation run on the package's own config (a wheel with no /etc/station) keeps its
    records in the user's state directory, never in the appliance's /var/lib/station."""
    if config.source != PACKAGED_CONFIG:
        return config
    home = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "station-sim"
    return replace(config, station=replace(config.station, state_dir=home, override_file=None),
                   ipsw=replace(config.ipsw, cache_dir=home / "ipsw"), overrides=None)


def summary(ports: tuple[Port, ...], scenario: Scenario, judge: bool = True) -> list[dict[str, Any]]:
    """One object per port that held a phone or that the scenario expects something of; a port
    that ended other than the scenario expects is ``"as_expected": false`` (null when the run
    stopped before the scenario ended, or nothing was expected)."""
    expected = {}
    for phone in scenario.phones:  # the last phone on a slot is the one still there
        expected[phone.slot] = phone.expect
    rows = []
    for port in ports:
        want = expected.get(port.slot, "")
        if port.state is State.EMPTY and not want:
            continue
        rows.append({"slot": port.slot, "state": port.state.value, "outcome": outcome(port),
                     "expected": want or None,
                     "as_expected": outcome(port) == want if judge and want else None,
                     "phone": phone_json(port.device) if port.device else None,
                     "reason": port.reason or None, "attempts": port.attempts})
    return rows


def _summary_lines(ports: tuple[Port, ...], rows: list[dict[str, Any]]) -> list[str]:
    by_slot = {port.slot: port for port in ports}
    lines = []
    for row in rows:
        line = _summary_line(by_slot[row["slot"]])
        if row["as_expected"] is False:
            line += f"  UNEXPECTED (scenario expects {row['expected'].upper()})"
        lines.append(line)
    return lines


def outcome(port: Port) -> str:
    """What a scenario's ``expect`` names: a restored phone the Hello check could not clear is
    ``done_unverified``, not ``done``."""
    if port.state is State.DONE and not port.verified:
        return "done_unverified"
    return port.state.value


def _summary_line(port: Port) -> str:
    device = port.device
    who = f"{device.name or device.product_type} {device.label}" if device else "-"
    why = f"  {port.reason}" if port.reason else ""
    tries = f"  ({port.attempts} attempts)" if port.attempts > 1 else ""
    job = "  (erase)" if port.job == "erase" and port.restore_started is not None else ""
    return f"slot {port.slot}: {port.state.name:<13} {short_state(port):<8} {who}{why}{tries}{job}"


def _configure_logging(level: str) -> None:
    logsetup.configure(level, sys.stderr)  # nothing when -v or --log-level did it already
    # pymobiledevice3 narrates every pairing at INFO; the station logs what matters itself.
    logging.getLogger("pymobiledevice3").setLevel(max(logging.WARNING, logging.getLogger().level))
