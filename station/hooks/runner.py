"""The hooks: a listener that runs ``[hooks]`` commands when a phone arrives, is found locked,
is done or failed, with the phone's facts in environment variables.

``on_transition`` only starts a task, so the loop goes on at once. Each task waits for its
transition to be committed to the records (the record id, and at DONE the certificate, are
then known), runs the command (station.hooks.process), logs one line, and adds the result to
the phone's session as a "Hook" row while that session is open. A hook that ends after its
phone left (the session sealed) is only logged: sealed rows never change.

One phone's hooks run in the order of its events (an attach hook ends before its done hook
starts); hooks of different phones run at the same time, at most ``MAX_RUNNING``. Nothing a
hook does changes its phone's outcome: the station never waits for a hook.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from station.config import HooksSection, StationSection
from station.hooks import handover, process
from station.machine import Port, State
from station.records import db
from station.records.writer import HookResult
from station.ui.labels import operator_reason

log = logging.getLogger(__name__)

# The state a port enters -> (its hook's config key, the OUTCOME a hook is told).
HOOKS = {State.IDENTIFIED: ("on_attach", "attach"), State.LOCKED: ("on_locked", "locked"),
         State.DONE: ("on_done", "done"), State.FAILED: ("on_failed", "failed")}
MAX_RUNNING = 4  # label printers and uploads, beside restores on a Pi: a few at a time is plenty
RECORD_WAIT_S = 10.0  # records that cannot be written meanwhile: the hook runs without a record id
RECORD_POLL_S = 0.05
STOP_GRACE_S = 3.0  # at the station's stop, running hooks get this long before they are stopped
PASSED_ON = ("PATH", "LANG")  # of the station's own environment; nothing else of it


class HookRecords(Protocol):
    def on_hook(self, result: HookResult) -> None:
        """Add a hook's result to its phone's session (station.records.recorder)."""


@dataclass(frozen=True)
class Command:
    name: str  # the config key: "on_done"
    argv: tuple[str, ...]
    problem: str = ""  # why the command line cannot be split; "" when it can


def commands(config: HooksSection) -> dict[State, Command]:
    """The configured hooks by the state that runs them; an empty command is no hook."""
    found = {}
    for state, (key, _) in HOOKS.items():
        line = getattr(config, key)
        if not line.strip():
            continue
        try:
            found[state] = Command(key, tuple(shlex.split(line)))
        except ValueError as error:  # an unbalanced quote: said at every run, as a missing command is
            found[state] = Command(key, (), f"[hooks] {key} cannot be read: {error}")
    return found


def environment(port: Port, outcome: str, record_id: int | None, certificate: Path | None,
                station_id: str, ios_now: str = "") -> dict[str, str]:
    """What a hook is told, all text: "" for what is not known (a DFU phone has no serial).
    ``ios_now``: the iOS a done phone runs (the record's), where the port knows only the one
    it came with."""
    device = port.device
    facts = {"ECID": "", "UDID": "", "SERIAL": "", "PRODUCT_TYPE": "", "IOS": ios_now}
    if device is not None:
        facts = {"ECID": f"{device.ecid:X}" if device.ecid is not None else "",  # as the records
                 "UDID": device.udid, "SERIAL": device.serial, "PRODUCT_TYPE": device.product_type,
                 "IOS": ios_now or device.ios_version}
    return {**{name: os.environ[name] for name in PASSED_ON if name in os.environ},
            "SLOT": str(port.slot), **facts, "OUTCOME": outcome,
            "REASON": operator_reason(port.reason) if port.reason else "",
            "CERTIFICATE": str(certificate or ""), "STATION_ID": station_id,
            "RECORD_ID": str(record_id or "")}


class Hooks:
    """The station's hook runner: a ``Listener``; ``stop()`` before the recorder stops."""

    def __init__(self, config: HooksSection, station: StationSection, records: HookRecords) -> None:
        self._commands = commands(config)
        self._timeout_s = config.timeout_s
        self._station_id = station.id
        self._state_dir = station.state_dir
        self._records = records
        self._running = asyncio.Semaphore(MAX_RUNNING)
        self._in_order: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)  # slot -> its turn
        self._sessions: defaultdict[int, int] = defaultdict(int)  # slot -> sessions opened/closed on it
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    # Listener: on the event loop, returns at once. ---------------------------------

    def on_transition(self, old: Port, new: Port, event: object, at: float) -> None:
        if new.state is old.state:
            return
        if new.state in (State.IDENTIFIED, State.EMPTY):  # the records open / seal a session here
            self._sessions[new.slot] += 1
        command = self._commands.get(new.state)
        if command is None or self._stopping:
            return
        task = asyncio.get_running_loop().create_task(
            self._run(command, new, at, self._sessions[new.slot]), name=f"hook {command.name} slot {new.slot}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_firmware(self, slot: int, build: str, version: str, sha256: str, tool: str = "") -> None:
        """No hook runs for the firmware chosen."""

    async def stop(self) -> None:
        """Running hooks get ``STOP_GRACE_S`` to end, then they are stopped (and said so)."""
        self._stopping = True
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_GRACE_S)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # One hook run. --------------------------------------------------------------------

    async def _run(self, command: Command, port: Port, at: float, session: int) -> None:
        outcome = HOOKS[port.state][1]
        record_id: int | None = None
        started: float | None = None  # once it has its turn
        try:
            async with self._in_order[port.slot]:
                record_id = await self._record_of(port, at)
                certificate = await self._certificate(record_id) if outcome == "done" else None
                try:
                    async with self._running:
                        started = time.monotonic()
                        finished = await self._start(command, port, outcome, record_id, certificate)
                finally:
                    if certificate is not None:
                        with contextlib.suppress(OSError):
                            certificate.unlink()
        except asyncio.CancelledError:
            status = ("not run: the station stopped first" if started is None else
                      f"stopped with the station after {time.monotonic() - started:.1f} s")
            self._report(command, port, record_id, session, process.Finished(status, "", False))
            raise
        except Exception as error:  # noqa: BLE001 - the station's fault, not the phone's: one line
            log.error("slot %d: hook %s not run: %s", port.slot, command.name, error)
            return
        self._report(command, port, record_id, session, finished)

    async def _start(self, command: Command, port: Port, outcome: str, record_id: int | None,
                     certificate: Path | None) -> process.Finished:
        if command.problem:
            return process.Finished(f"could not start: {command.problem}", "", False)
        ios_now = ""
        if outcome == "done" and record_id is not None:
            ios_now = await asyncio.to_thread(handover.ios_after, self._state_dir, record_id)
        env = environment(port, outcome, record_id, certificate, self._station_id, ios_now)
        return await process.run(command.argv, env, self._timeout_s)

    async def _record_of(self, port: Port, at: float) -> int | None:
        """The record id once the transition is committed; None after ``RECORD_WAIT_S``."""
        stamp, deadline = db.iso(at), time.monotonic() + RECORD_WAIT_S
        while True:
            found = await asyncio.to_thread(handover.record_of, self._state_dir, port.slot, stamp,
                                            port.state.value)
            if found is not None or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(RECORD_POLL_S)

    async def _certificate(self, record_id: int | None) -> Path | None:
        if record_id is None:
            return None
        try:
            return await asyncio.to_thread(handover.write_certificate, self._state_dir, record_id)
        except OSError as error:
            log.warning("record #%d: certificate not handed to the hook: %s", record_id, error)
            return None

    def _report(self, command: Command, port: Port, record_id: int | None, session: int,
                finished: process.Finished) -> None:
        """One log line; and the phone's session gets the result, while it is open."""
        if record_id is None:
            kept = f"; not recorded: no record of it within {RECORD_WAIT_S:g} s"
        elif self._sessions[port.slot] != session:  # the phone left: its record is sealed
            kept = f"; not recorded: record #{record_id} was sealed when the phone left"
        else:
            kept = ""
            detail = f"{command.name}: {finished.status}" + (f"\n{finished.output}" if finished.output else "")
            self._records.on_hook(HookResult(port.slot, record_id, time.time(), detail))
        label = port.device.label if port.device is not None else "?"
        said = f"; output: {json.dumps(finished.output.strip(), ensure_ascii=False)}" if finished.output.strip() else ""
        log.log(logging.INFO if finished.ok else logging.WARNING, "slot %d [%s] hook %s: %s%s%s",
                port.slot, label, command.name, finished.status, kept, said)
