"""Assembles a station from its config and backend, and runs it on one event loop."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

from hw.backends import BACKENDS
from station.clock import Clock
from station.config import Config
from station.core import Station
from station.machine import WORKING, Port
from station.scenario import Scenario
from station.ui.render import render

log = logging.getLogger("station")

POLL_S = 0.1  # how often a simulated run checks whether its scenario is over


@dataclass(frozen=True)
class RunOptions:
    backend: str
    scenario: Scenario | None = None
    speed: float = 1.0
    duration: float | None = None  # scenario seconds; None: until the scenario is over
    interactive: bool = False


async def run_station(config: Config, options: RunOptions) -> tuple[Port, ...]:
    """Run until stopped (SIGINT/SIGTERM) or, in a simulation, until the scenario ends."""
    loop = asyncio.get_running_loop()
    backend = BACKENDS[options.backend]
    clock = Clock(options.speed)
    display = backend.open_display(config.display, options.interactive)
    redraw = asyncio.Event()
    phones = backend.open_phones(config, options.scenario, clock)
    station = Station(config, phones, clock=clock.now, on_change=redraw.set)

    def on_press(button: str, long: bool) -> None:  # called on gpiozero's threads
        loop.call_soon_threadsafe(station.press, button, long)

    panel = backend.open_panel(config.buttons, config.leds, on_press)
    if panel is None:
        station.set_fault("panel", "NO BUTTONS")
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    tasks = [asyncio.create_task(station.run(), name="phones"),
             asyncio.create_task(_redraw(station, display, redraw, config.display.min_redraw_s),
                                 name="display")]
    if options.scenario is not None:
        tasks.append(asyncio.create_task(
            _play(options.scenario, station, panel, config, clock, options.duration, stop),
            name="scenario"))
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        with contextlib.suppress(Exception):
            display.show(render(station.snapshot()))
            display.close()
        if panel is not None:
            panel.close()
    return tuple(station.ports.values())


async def _redraw(station: Station, display: object, wanted: asyncio.Event,
                  min_interval: float) -> None:
    """Push a new frame when something changed, at most one per ``min_interval``."""
    while True:
        await wanted.wait()
        wanted.clear()
        display.show(render(station.snapshot()))  # type: ignore[attr-defined]
        await asyncio.sleep(min_interval)


async def _play(scenario: Scenario, station: Station, panel: object, config: Config,
                clock: Clock, duration: float | None, stop: asyncio.Event) -> None:
    """Press the scripted buttons, then stop once the scenario is over."""
    press = _presser(station, panel, config)
    for item in sorted(scenario.presses, key=lambda p: p.at):
        await clock.sleep_until(item.at)
        if item.slot is not None:
            while (station.view.screen.value, station.view.selected) != ("detail", item.slot):
                await press("select", False)
        await press(item.button, item.long)
    limit = duration if duration is not None else scenario.info.duration
    while not _scenario_over(station, scenario, clock.now()):
        if limit is not None and clock.now() >= limit:
            log.warning("scenario %s: stopped at its time limit (%.0f s)", scenario.name, limit)
            break
        await asyncio.sleep(POLL_S)
    stop.set()


def _scenario_over(station: Station, scenario: Scenario, now: float) -> bool:
    return now >= scenario.last_event and not any(p.state in WORKING for p in station.ports.values())


def _presser(station: Station, panel: object, config: Config) -> Callable[[str, bool], object]:
    """Presses go through the panel's (mock) pins when there is a panel, as a finger would."""
    async def press(button: str, long: bool) -> None:
        if panel is None:
            station.press(button, long)  # type: ignore[arg-type]
        else:
            await panel.press(button, long)  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)  # let the press reach the loop before the next one
    return press
