"""Assembles a station from its config and backend, and runs it on one event loop."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from hw.backends import BACKENDS
from hw.clock import Clock
from hw.display import RecentLines, Redrawer, TerminalView
from hw.phones import Device
from station import keys, overrides
from station.cli import CommandError
from station.config import Config
from station.core import Station
from station.firmware import IpswFirmware
from station.fleet.publisher import FleetPublisher
from station.hooks import Hooks
from station.ipsw.cache import IpswCache
from station.ipsw.seen import models_seen
from station.ipsw.synthetic import provision
from station.ipsw.upkeep import Upkeep
from station.lag import LagMonitor
from station.machine import WORKING, Port, State
from station.records.recorder import Recorder
from station.records.statedir import (PRIVATE_UMASK, RecordsUnavailable, StationBusy, lock,
                                      prepare, secure)
from station.scenario import Scenario
from station.shutdown import GracefulStop
from station.snapshot import Screen, Snapshot
from station.systemd import Notifier
from station.ui.render import render

log = logging.getLogger("station")

POLL_S = 0.1  # how often a simulated run checks whether its scenario is over
IDLE_REDRAW_S = 5.0

# What each port's LED does: steady when finished well, blinking while working,
# fast when a person is needed (a decision, a refusal, a failure).
LED_PATTERNS = {
    State.EMPTY: "off", State.DETECTING: "blink", State.IDENTIFIED: "blink",
    State.CHECKING_LOCK: "blink", State.NEEDS_TRUST: "fast", State.LOCKED: "fast",
    State.REFUSED: "fast", State.NEEDS_CONFIRM: "fast", State.QUEUED: "blink",
    State.RESTORING: "blink", State.VERIFYING: "blink", State.DONE: "on", State.FAILED: "fast",
}


@dataclass(frozen=True)
class RunOptions:
    backend: str
    scenario: Scenario | None = None
    speed: float = 1.0
    duration: float | None = None  # scenario seconds; None: until the scenario is over
    interactive: bool = False
    # Serve the status page, API and /metrics ([web]). None: the appliance does when [web] enabled;
    # a simulation only when its scenario has a [config.web] table (tests play many simulations
    # at once: none may fight over one port, nor fail because it is taken).
    web: bool | None = None


@dataclass(frozen=True)
class RunResult:
    ports: tuple[Port, ...]
    scenario_over: bool  # False when stopped early (a signal, `q` in the terminal)


async def run_station(config: Config, options: RunOptions) -> RunResult:
    """Run until stopped (SIGINT/SIGTERM) or, in a simulation, until the scenario ends."""
    loop = asyncio.get_running_loop()
    backend = BACKENDS[options.backend]
    os.umask(PRIVATE_UMASK)  # pair records, keys, logs: nobody else's to read
    state_lock = _claim_state_dir(config.station.state_dir, options.scenario is not None)
    clock = Clock(options.speed, started=options.scenario is None)
    terminal = _terminal_view() if options.interactive else None
    display = backend.open_display(config.display, terminal)
    phones = backend.open_phones(config, options.scenario, clock)
    recorder = Recorder(config.station)  # never raises: a fault waits restores (NO RECORDS)
    if options.scenario is not None and recorder.fault:
        # A simulated run is a command: it would only wait for records that never come.
        recorder.stop()
        raise CommandError(recorder.fault)
    recorder.start()
    cache = IpswCache(config.ipsw)
    real_engine = options.scenario is not None and options.scenario.info.engine == "real"
    if real_engine:  # pymobiledevice3 restores from an IPSW: the simulation's own, built once
        await asyncio.to_thread(provision, cache, [phone.model for phone in options.scenario.phones],
                                options.scenario.info.os_image_mb << 20)
    firmware = IpswFirmware(cache, required=options.backend != "sim" or real_engine)
    station = Station(config, phones, firmware=firmware, listeners=(recorder,),
                      counter_source=recorder, records=recorder, clock=clock.now,
                      person_clock=time.monotonic)  # the idle return: real time at any --speed
    if options.scenario is not None:
        station.job_for = _scenario_jobs(options.scenario)

    def on_press(button: str, long: bool) -> None:  # called on gpiozero's threads
        loop.call_soon_threadsafe(station.press, button, long)

    if config.override_problem:  # a bad boot-partition config: said, and the last good one runs
        log.error("%s; %s", config.override_problem, overrides.fallback(config))
        station.set_fault("config", "BAD CONFIG", config.override_problem)
    else:
        await asyncio.to_thread(overrides.remember, config)
    panel = backend.open_panel(config.buttons, config.leds, on_press)
    if panel is None:
        station.set_fault("panel", "NO BUTTONS")
    views = [lambda snapshot: _set_leds(panel, snapshot)] if panel is not None else []
    redrawer = Redrawer(display, station.snapshot, render, config.display.min_redraw_s,
                        idle_s=IDLE_REDRAW_S, also=views)
    # What else watches the station (the web page, the fleet) adds itself here, and a listener
    # of transitions to ``station.listeners``.
    on_change: list[Callable[[], None]] = [redrawer.request]
    station.on_change = lambda: _each(on_change)
    hooks = Hooks(config.hooks, config.station, recorder)  # [hooks]: none configured runs nothing
    station.listeners += (hooks,)
    fleet = FleetPublisher(config, station, loop) if config.mqtt.enabled else None
    if fleet is not None:  # connects in the background: a broker that is down delays nothing
        on_change.append(fleet.changed)
        station.listeners += (fleet,)
        fleet.start()
    stop, scenario_over = asyncio.Event(), asyncio.Event()
    notifier = Notifier(station.snapshot)  # systemd: READY, the watchdog, STATUS, STOPPING
    graceful = GracefulStop(station, stop, config.station.stop_grace_s, on_draining=notifier.stopping)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, graceful.signal)
    tasks = [asyncio.create_task(station.run(), name="phones"),
             asyncio.create_task(redrawer.run(), name="views")]
    if terminal is not None and hasattr(panel, "press"):
        tasks.append(asyncio.create_task(keys.read_keys(panel, stop), name="keys"))
    if options.scenario is not None:
        tasks.append(asyncio.create_task(
            _play(options.scenario, station, panel, clock, options.duration, scenario_over, stop),
            name="scenario"))
        if options.scenario.info.stall_at is not None:
            tasks.append(asyncio.create_task(_stall(options.scenario, clock), name="stall"))
    tasks.append(asyncio.create_task(notifier.run(), name="systemd"))
    if options.scenario is None:  # a simulation has no catalog server to ask, nor days of phones seen
        upkeep = Upkeep(cache, status=station.set_status,
                        seen=lambda: models_seen(config.station.state_dir, config.ipsw.seen_days, time.time()),
                        busy=lambda: any(port.state in WORKING for port in station.ports.values()))
        tasks.append(asyncio.create_task(upkeep.run(), name="ipsw"))
    lag = LagMonitor()
    tasks.append(asyncio.create_task(lag.run(), name="lag"))
    web = None
    if _serves_web(config, options):
        from station.web.service import WebService  # FastAPI's import is paid only by a station that serves
        web = WebService(config, station, cache, recorder, lag)
        on_change.append(web.on_change)
        web.start()
    notifier.ready()
    try:
        await stop.wait()
    finally:
        notifier.stopping()
        graceful.cancel()
        if web is not None:
            await web.stop()  # its live streams end first: the server stops at once
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        log.info("%s", lag.summary())
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await hooks.stop()  # before the recorder: a hook stopped now is still in its record
        redrawer.push()  # the last state stays on the panel
        display.close()
        if panel is not None:
            panel.close()
        recorder.stop()
        if fleet is not None:  # after the recorder: the records closed at the stop may go too
            fleet.stop()
        if state_lock is not None:
            os.close(state_lock)
    return RunResult(tuple(station.ports.values()), scenario_over.is_set())


def _serves_web(config: Config, options: RunOptions) -> bool:
    if options.web is not None:
        return options.web
    if options.scenario is not None:
        return config.web.enabled and "web" in options.scenario.config
    return config.web.enabled


def _each(calls: list[Callable[[], None]]) -> None:
    for call in calls:
        call()


def _claim_state_dir(state_dir: Path, simulated: bool) -> int | None:
    """One station per state directory, made private; the descriptor holds the claim.

    A directory that cannot be used is the records' fault to report (NO RECORDS, tried
    again); for a simulated run, which is a command, it is one line and an exit.
    """
    try:
        fd = lock(prepare(state_dir))
    except StationBusy as error:
        raise CommandError(str(error)) from None
    except (RecordsUnavailable, OSError) as error:
        if simulated:
            raise CommandError(str(error)) from None
        log.error("%s", error)
        return None
    secure(state_dir)
    return fd


def _set_leds(panel: object, snapshot: Snapshot) -> None:
    for port in snapshot.ports:
        panel.set_led(port.slot, LED_PATTERNS[port.state])  # type: ignore[attr-defined]


def _terminal_view() -> TerminalView:
    """The live OLED in the terminal owns the screen: log lines show beneath it."""
    recent = RecentLines()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(recent)
    return TerminalView(log_lines=lambda: list(recent.lines), help_line=keys.HELP)


def _scenario_jobs(scenario: Scenario) -> Callable[[Device], str | None]:
    """A scenario phone's own ``job``, found by its serial or ECID once the station identified it."""
    by_serial = {p.serial: p.job for p in scenario.phones if p.job and p.serial}
    by_ecid = {p.ecid: p.job for p in scenario.phones if p.job and p.ecid is not None}

    def job_for(device: Device) -> str | None:
        return by_serial.get(device.serial) or by_ecid.get(device.ecid)
    return job_for


async def _play(scenario: Scenario, station: Station, panel: object, clock: Clock,
                duration: float | None, over: asyncio.Event, stop: asyncio.Event) -> None:
    """Press the scripted buttons, then stop once the scenario is over (or out of time)."""
    press = _presser(station, panel)
    await clock.sleep_until(0.0)  # the simulated bench is up
    for item in sorted(scenario.presses, key=lambda p: p.at):
        await clock.sleep_until(item.at)
        if item.slot is not None and item.slot not in station.ports:
            log.error("scenario %s: a press on slot %d, but this station has %d slots",
                      scenario.name, item.slot, len(station.ports))
            continue
        if item.slot is not None:
            while (station.view.screen, station.view.selected) != (Screen.DETAIL, item.slot):
                await press("select", False)
        await press(item.button, item.long)
    limit = duration if duration is not None else scenario.info.duration
    while not _scenario_over(station, scenario, clock.now()):
        if limit is not None and clock.now() >= limit:
            log.warning("scenario %s: stopped at its time limit (%.0f s)", scenario.name, limit)
            break
        await asyncio.sleep(POLL_S)
    over.set()
    stop.set()


async def _stall(scenario: Scenario, clock: Clock) -> None:
    """The scenario's hung station: the loop blocks, so nothing (the watchdog too) is served."""
    await clock.sleep_until(scenario.info.stall_at)
    log.warning("scenario %s: the event loop stalls for %.0f s", scenario.name, scenario.info.stall_s)
    time.sleep(scenario.info.stall_s)


def _scenario_over(station: Station, scenario: Scenario, now: float) -> bool:
    """Every event has happened, every plugged-in phone has been found, and no port is busy."""
    if now < scenario.last_event or any(p.state in WORKING for p in station.ports.values()):
        return False
    # A phone expected to end with its port empty (a cable pulled by a fault) is not waited for.
    plugged = {p.slot for p in scenario.phones
               if p.attach <= now and (p.detach is None or p.detach > now) and p.expect != "empty"}
    return all(station.ports[slot].state is not State.EMPTY for slot in plugged if slot in station.ports)


def _presser(station: Station, panel: object) -> Callable[[str, bool], Awaitable[None]]:
    """Presses go through the panel's (mock) pins when there is a panel, as a finger would."""
    async def press(button: str, long: bool) -> None:
        if panel is None:
            station.press(button, long)  # type: ignore[arg-type]
        else:
            await panel.press(button, long)  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)  # let the press reach the loop before the next one
    return press
