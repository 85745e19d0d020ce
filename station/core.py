"""The station: one asyncio loop owns every port, the queue and the panel state.

Everything that changes a port goes through ``dispatch``, which runs the pure
state machine, logs ``old -> new``, carries out the effects and tells the
listeners. Work for a port (identify, lock check, restore, verify) runs as one
task per port; an exception there fails that port and nothing else. Other
threads (gpiozero callbacks) get in only through ``call_soon_threadsafe``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace

from hw.memory import available_bytes
import hw.phones
from hw.phones import (Device, LayerFault, LockCheck, PhoneArrived, PhoneError, PhoneEvent, PhoneLayer,
                       PhoneLeft, RestoreError, RestoreProgress, RestoreReport, TrustRequest)
from hw.worker.phases import MEMORY_HEAVY
from station import machine, navigation
from station.bus import Link, TransferWatch
from station.config import Config
from station.listeners import CounterSource, Listener, RecordKeeper
from station.machine import (Attached, ChooseJob, Detached, Effect, Event, Identified, LockCheckStarted,
                             LockResult, Policy, Port, PortFault, Progress, RestoreFailed,
                             RestoreFinished, RestoreStarted, State, TrustNeeded, Waiting)
from station.records import port_stats
from station.snapshot import Counters, Snapshot

log = logging.getLogger("station.core")

# Station-level faults, most urgent first: the display shows the first present.
FAULT_ORDER = ("stopping", "usbmuxd", "libusb", "usb-access", "network", "records", "panel", "config")

OPERATOR_EVENTS = (machine.Confirm, machine.Cancel, machine.Abort, machine.SwitchJob)
RECHECK_S = 5.0  # while a restore waits for memory or record space, look again this often
STATS_MIN_S = 2.0  # the per-port statistics are read again at most this often
GB = 1e9


class FirmwareSource:
    """Chooses the IPSW for a phone; ``select`` raises ``NoFirmware`` when none fits."""

    def select(self, device: Device) -> object:
        raise NotImplementedError


class NoFirmware(Exception):
    """No cached IPSW fits the phone; ``str`` is the port's display text."""


class Station:
    def __init__(self, config: Config, phones: PhoneLayer, *,
                 firmware: FirmwareSource | None = None,
                 listeners: tuple[Listener, ...] = (),
                 counter_source: CounterSource | None = None,
                 records: RecordKeeper | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 person_clock: Callable[[], float] | None = None,
                 on_change: Callable[[], None] = lambda: None,
                 free_memory: Callable[[], int | None] = available_bytes) -> None:
        self.policy = Policy(mode=config.restore.mode, unknown_lock=config.restore.unknown_lock,
                             retries=config.restore.retries, job=config.restore.job)
        self.max_parallel = config.restore.max_parallel_restores
        self.by_bus = config.restore.schedule == "bus"
        self.links = {name: Link(name, rate, config.hub.phone_mb_s * 1e6)
                      for name, rate in config.hub.link_rates().items()}
        self.link_of = {slot: config.hub.link_of(slot) for slot in range(1, config.hub.slots + 1)}
        self.slots_on = {name: [s for s, on in self.link_of.items() if on == name] for name in self.links}
        self.transfers = TransferWatch()
        self.restore_timeout = config.restore.timeout_s
        self.memory_per_restore = config.restore.memory_per_restore_mb * 1024 * 1024
        self.free_memory = free_memory
        self._recheck: asyncio.TimerHandle | None = None
        # No record, no erase: the station's app always gives one; None only in loop tests.
        self.records = records
        self._records_problem: str | None = None
        self.phones = phones
        self.firmware = firmware
        self.listeners = listeners
        self.counter_source = counter_source
        self.clock = clock
        # A person's timeouts (the idle return to the overview) run on this one: real time in a
        # simulation played faster than real time, so a person can use the keys.
        self.person_clock = person_clock or clock
        self.state_dir = config.station.state_dir
        self._stats: port_stats.PortStats | None = None  # per-port statistics from the records
        self._stats_task: asyncio.Task[None] | None = None
        self._stats_again = False
        self.on_change = on_change
        # A phone's own job, once it is identified (None: the station's [restore] job). The
        # simulation sets it from a scenario phone's ``job``; a counter button could too.
        self.job_for: Callable[[Device], str | None] = lambda device: None
        self.ports = {slot: Port(slot) for slot in range(1, config.hub.slots + 1)}
        self.view = navigation.View()
        self.faults: dict[str, str] = {}
        self.status = ""  # the overview's bottom line when there is something to say (set_status)
        self.fault_details: dict[str, str] = {}  # the whole line behind a fault, when it has one
        self._counts = Counters()
        self._queue: deque[int] = deque()
        self._restoring: dict[int, asyncio.Task[None]] = {}
        self._stopping = False
        self._draining = False  # stopping gracefully: running restores finish, none starts
        self._work: dict[int, asyncio.Task[None]] = {}
        # Bumped when a phone leaves: work started for the old phone can't touch the new one.
        self._generation = dict.fromkeys(self.ports, 0)

    # -- entry points -------------------------------------------------------

    async def run(self) -> None:
        """Watch the phones until cancelled; then stop all port work."""
        if self.records is not None:
            loop = asyncio.get_running_loop()

            def written() -> None:  # on the records' writer thread
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to tell
                    loop.call_soon_threadsafe(self.records_changed)
            self.records.set_notify(written)
            self.records_changed()
        try:
            await self.phones.watch(self.on_phone_event)
        finally:
            await self.stop_work()

    async def stop_work(self) -> None:
        self._stopping = True  # a restore cancelled now must not make room for the next one
        if self._recheck is not None:
            self._recheck.cancel()
        tasks = list(self._work.values())
        if self._stats_task is not None:
            tasks.append(self._stats_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def on_phone_event(self, event: PhoneEvent) -> None:
        if isinstance(event, LayerFault):
            self.set_fault(event.source, event.fault)
        elif event.slot not in self.ports:
            log.warning("phone on slot %d, but this station has %d slots ([hub] slots)",
                        event.slot, len(self.ports))
        elif isinstance(event, PhoneArrived):
            self.dispatch(event.slot, Attached(event.device))
        elif isinstance(event, PhoneLeft):
            self.dispatch(event.slot, Detached())

    def press(self, button: navigation.Button, long: bool) -> None:
        result = navigation.press(self.view, button, long, len(self.ports), self.person_clock(),
                                  faults_screen=bool(self.fault_details))
        log.info("button %s%s", button.upper(), " (long)" if long else "")
        self.view = result.view
        if result.event is not None and result.slot is not None:
            self.dispatch(result.slot, result.event)
        self.on_change()

    def set_fault(self, source: str, fault: str | None, detail: str = "") -> None:
        """A station-level fault (None: cleared). A ``detail`` (a config file's error) is shown
        in full on the FAULTS screen, which comes up by itself when such a fault is new."""
        if detail and fault is not None and self.fault_details.get(source) != detail:
            self.fault_details[source] = detail
            self.view = navigation.show_faults(self.view, self.person_clock())
        elif fault is None:
            self.fault_details.pop(source, None)
        if self._note_fault(source, fault):
            self._schedule()

    def set_status(self, text: str) -> None:
        """A station-level line that is no fault (IPSW prefetch progress, NOT SIGNED); "" clears it."""
        if text != self.status:
            self.status = text
            self.on_change()

    def begin_stopping(self) -> None:
        """No new restore starts; the running ones go on (``restores_running`` counts them)."""
        self._draining = True
        self.set_fault("stopping", "STOPPING")

    @property
    def restores_running(self) -> int:
        """Restores under way, their check at the Hello screen included (its record ends there)."""
        return len(self._restoring) + sum(port.state is State.VERIFYING for port in self.ports.values())

    def records_changed(self) -> None:
        """The records were written (or failed to be): restores waiting on them may go."""
        self._check_records()
        self._schedule()
        self._refresh_stats()

    def _refresh_stats(self) -> None:
        """Read the per-port statistics again, in a thread, one read at a time."""
        if self.records is None or self._stopping:
            return
        if self._stats_task is not None and not self._stats_task.done():
            self._stats_again = True
            return
        self._stats_task = asyncio.get_running_loop().create_task(self._read_stats(), name="port-stats")

    async def _read_stats(self) -> None:
        while True:
            self._stats_again = False
            stats = await asyncio.to_thread(port_stats.load, self.state_dir, time.time())
            if stats is not None and stats != self._stats:
                self._stats = stats
                self.on_change()
            if not self._stats_again:
                return
            await asyncio.sleep(STATS_MIN_S)

    def _note_fault(self, source: str, fault: str | None) -> bool:
        if self.faults.get(source) == fault:
            return False
        if fault is None:
            log.info("%s is back", source)
            self.faults.pop(source, None)
        else:
            log.error("%s: %s", source, fault)
            self.faults[source] = fault
        self.on_change()
        return True

    def snapshot(self) -> Snapshot:
        now = self.clock()
        ports = tuple(self.ports.values())
        self.view = navigation.settle(self.view, ports, self.person_clock())
        order = {name: i for i, name in enumerate(FAULT_ORDER)}
        sources = sorted(self.faults, key=lambda k: order.get(k, 99))
        faults = tuple(self.faults[k] for k in sources)
        details = tuple(f"{self.faults[k]}: {self.fault_details[k]}" for k in sources
                        if k in self.fault_details)
        counters = self.counter_source.counters() if self.counter_source else self._counts
        flags: tuple = ()
        if self._stats is not None:
            counters = replace(counters, retried=self._stats.retried_today)
            flags = self._stats.flags
        return Snapshot(ports=ports, screen=self.view.screen, selected=self.view.selected,
                        counters=counters, faults=faults, fault_details=details, status=self.status, now=now,
                        port_flags=flags)

    # -- the one way a port changes ----------------------------------------

    def dispatch(self, slot: int, event: Event) -> None:
        old = self.ports[slot]
        result = machine.step(old, event, self.policy, self.clock())
        new = self.ports[slot] = result.port
        if result.note:
            log.log(logging.INFO if isinstance(event, OPERATOR_EVENTS) else logging.DEBUG,
                    "slot %d: %s", slot, result.note)
        if new.state is not old.state:
            log.info(machine.describe(old, new))
            self._count(new)
        elif new.job != old.job:
            log.info("slot %d: job %s -> %s", slot, old.job, new.job)
        if isinstance(event, Detached):
            self._generation[slot] += 1
        if isinstance(event, Progress) and new.state is State.RESTORING:
            # A restore reaching or leaving its transfer, or a transfer nearing its end, may
            # make room on its link for one that waits.
            if self.transfers.progress(slot, event.phase, event.percent, self.clock()) or self._queue:
                self._schedule()
        if new.state is not old.state or isinstance(event, OPERATOR_EVENTS):
            self._tell_listeners(old, new, event)
        for effect in result.effects:
            self._apply(slot, effect, new)
        if new != old:
            self.on_change()

    def _apply(self, slot: int, effect: Effect, port: Port) -> None:
        if effect is Effect.IDENTIFY:
            self._start(slot, self._identify(slot, port.device))
        elif effect is Effect.CHECK_LOCK:
            self._start(slot, self._check_lock(slot, port.device))
        elif effect is Effect.VERIFY:
            self._start(slot, self._verify(slot, port.device))
        elif effect is Effect.ENQUEUE:
            if slot not in self._queue:
                self._queue.append(slot)
            self._schedule()
        elif effect is Effect.DEQUEUE:
            with contextlib.suppress(ValueError):
                self._queue.remove(slot)
        elif effect is Effect.STOP_WORK:
            task = self._work.pop(slot, None)
            if task is not None:
                task.cancel()
            self._restoring.pop(slot, None)
            self.transfers.ended(slot)
            self._schedule()

    # -- scheduling restores ------------------------------------------------

    def _schedule(self) -> None:
        """Start queued restores while there is room on their USB link and in the station, memory
        for one more, the network, and records: each restore only once its session is on disk
        (no record, no erase)."""
        if "network" in self.faults or self._stopping or self._draining or not self._queue:
            return
        while self._queue and len(self._restoring) < self.max_parallel:
            problem = self._check_records()
            if problem:
                self._wait(self._queue[0], f"WAIT REC: {problem}")
                return
            slot = self._next_on_the_bus()
            if slot is None:
                return
            if self.records is not None and not self.records.durable(slot):
                return  # being written now: the writer's notify schedules again
            erase = self.ports[slot].job == "erase"  # a few lockdown messages: no memory, no transfer
            short = "" if erase else self._memory_short()
            if short:
                self._wait(slot, short)
                return
            self._queue.remove(slot)
            self.dispatch(slot, RestoreStarted())
            port = self.ports[slot]
            if port.state is not State.RESTORING:
                continue
            if port.job == "restore":
                self.transfers.started(slot, _present(port.device).mode, self.clock())
            self._start(slot, self._restore(slot, port.device, port.job))
            self._restoring[slot] = self._work[slot]

    def _next_on_the_bus(self) -> int | None:
        """The first queued phone whose USB link has room; the ones before it are told why not."""
        if not self.by_bus:
            return self._queue[0]
        for slot in self._queue:
            if self.ports[slot].job == "erase":
                return slot  # nothing to transfer
            link = self.links[self.link_of[slot]]
            reason = self.transfers.wait_reason(link, self.slots_on[link.name],
                                                _present(self.ports[slot].device).mode, self.clock())
            if not reason:
                return slot
            if self.ports[slot].reason != reason:
                if not self.ports[slot].reason.startswith("WAIT USB"):
                    log.info("slot %d: %s", slot, reason)
                self.dispatch(slot, Waiting(reason))
        return None

    def _memory_short(self) -> str:
        """Why one more restore would not fit in memory now; "" when it would.

        Restores still before restored runs may yet reach their peak: their budget is counted
        as taken, whatever MemAvailable says now.
        """
        free = self.free_memory()
        if free is None:
            return ""
        climbing = sum(self.ports[slot].phase in MEMORY_HEAVY or self.ports[slot].phase == "starting"
                       for slot in self._restoring)
        if free - climbing * self.memory_per_restore >= self.memory_per_restore:
            return ""
        return (f"WAIT MEM: {free / GB:.1f} GB free, a restore needs "
                f"{self.memory_per_restore / GB:.1f} GB")

    def _check_records(self) -> str | None:
        """The records' problem now (its fault on the display, its detail in the log once)."""
        if self.records is None:
            return None
        problem = self.records.problem()
        if problem != self._records_problem:
            if problem:
                log.error("no restore starts: %s", problem)
            self._records_problem = problem
        self._note_fault("records", "NO RECORDS" if problem else None)
        return problem

    def _wait(self, slot: int, reason: str) -> None:
        """The next restore waits (memory, records): say why on its port, and look again soon."""
        if self.ports[slot].reason.split(":")[0] != reason.split(":")[0]:
            log.info("slot %d: %s", slot, reason)
        self.dispatch(slot, Waiting(reason))
        if self._recheck is None:
            def recheck() -> None:
                self._recheck = None
                self._schedule()
            self._recheck = asyncio.get_running_loop().call_later(RECHECK_S, recheck)

    # -- port work ----------------------------------------------------------

    def _start(self, slot: int, work: Awaitable[None]) -> None:
        previous = self._work.pop(slot, None)
        if previous is not None and previous is not asyncio.current_task():
            previous.cancel()
        generation = self._generation[slot]
        task = asyncio.ensure_future(self._guard(slot, generation, work))
        task.set_name(f"slot-{slot}")
        # Cancelled before it ran (the phone left at once): the work never started; closing it
        # says so, instead of a "never awaited" warning. A started one is finished by now.
        task.add_done_callback(lambda _: getattr(work, "close", lambda: None)())
        self._work[slot] = task

    async def _guard(self, slot: int, generation: int, work: Awaitable[None]) -> None:
        """Run one piece of port work; whatever it raises fails this port only."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except PhoneError as error:
            log.error("slot %d: %s", slot, error)
            if self._generation[slot] == generation:
                self.dispatch(slot, PortFault(str(error)))
        except Exception as error:  # noqa: BLE001 - isolation is the point
            log.exception("slot %d: %s", slot, error)
            if self._generation[slot] == generation:
                self.dispatch(slot, PortFault(f"internal error: {error}"))
        finally:
            if self._work.get(slot) is asyncio.current_task():
                del self._work[slot]

    def _for(self, slot: int) -> Callable[[Event], None]:
        """A dispatcher that drops events once the phone they are about has left."""
        generation = self._generation[slot]

        def send(event: Event) -> None:
            if self._generation[slot] == generation:
                self.dispatch(slot, event)
        return send

    async def _identify(self, slot: int, device: Device | None) -> None:
        send = self._for(slot)
        identified = await self.phones.identify(_present(device))
        send(Identified(identified))
        job = self.job_for(identified)
        if job is not None:  # before the lock check answers: the machine decides if it may run
            send(ChooseJob(job))

    async def _check_lock(self, slot: int, device: Device | None) -> None:
        """One lock check; a phone that does not trust the station is asked again until it does
        (it waits in NEEDS_TRUST meanwhile, under every policy). Leaving the slot ends it."""
        send = self._for(slot)
        generation = self._generation[slot]
        send(LockCheckStarted())
        while True:
            result = await self.phones.check_lock(_present(device))
            self._tell_facts(slot, generation, result)
            send(LockResult(result.lock, result.reason, result.method, needs_trust=result.needs_trust))
            if not result.needs_trust:
                return
            await asyncio.sleep(hw.phones.TRUST_RECHECK_S)  # read at each wait: tests shorten it

    async def _verify(self, slot: int, device: Device | None) -> None:
        send = self._for(slot)
        generation = self._generation[slot]
        result = await self.phones.check_lock(_present(device), after_restore=True)
        self._tell_facts(slot, generation, result)
        send(LockResult(result.lock, result.reason, result.method, needs_trust=result.needs_trust))

    async def _restore(self, slot: int, device: Device | None, job: str = "restore") -> None:
        """The port's job, restore or erase, bounded by ``[restore] timeout_s`` either way."""
        device = _present(device)
        send = self._for(slot)
        firmware: object = None
        try:
            if job == "erase":  # no IPSW: the phone keeps its iOS; the records hear what erased it
                self._tell_firmware(slot, None, getattr(self.phones, "erase_tool", ""))
            else:
                firmware = await self._firmware_for(slot, device)
            async with asyncio.timeout(self.restore_timeout):
                if job == "erase":
                    await self.phones.erase(device, lambda report: send(_progress(report)))
                else:
                    await self.phones.restore(device, firmware, lambda report: send(_progress(report)))
        except NoFirmware as missing:
            send(RestoreFailed(str(missing), retryable=False))
        except RestoreError as error:
            send(RestoreFailed(error.reason, error.retryable))
        except TimeoutError:
            send(RestoreFailed(f"timed out after {self.restore_timeout:.0f} s", retryable=True))
        else:
            send(RestoreFinished())
        finally:
            # The chosen IPSW stays in the cache (no prune, no remove) until its restore has ended.
            getattr(firmware, "release", lambda: None)()
            # A retry may already have started a new restore here: leave that one counted.
            if self._restoring.get(slot) is asyncio.current_task():
                del self._restoring[slot]
                self.transfers.ended(slot)
            self._schedule()

    async def _firmware_for(self, slot: int, device: Device) -> object:
        """The IPSW for this restore; the records hear it, and which tool restores (certificates name it)."""
        choice = None
        if self.firmware is not None:
            choice = await asyncio.to_thread(self.firmware.select, device)
        self._tell_firmware(slot, choice, getattr(self.phones, "restore_tool", ""))
        return choice

    def _tell_firmware(self, slot: int, choice: object, tool: str) -> None:
        for listener in self.listeners:
            with _isolated(listener):
                listener.on_firmware(slot, getattr(choice, "build", ""), getattr(choice, "version", ""),
                                     getattr(choice, "sha256", ""), tool)

    # -- memory -------------------------------------------------------------

    def _tell_listeners(self, old: Port, new: Port, event: Event) -> None:
        at = time.time()
        for listener in self.listeners:
            with _isolated(listener):
                listener.on_transition(old, new, event, at)

    def _tell_facts(self, slot: int, generation: int, result: LockCheck) -> None:
        """What the phone told in the check's paired session (IMEI, storage, battery), for the
        records, before its lock result: a restore starts only once both are on disk. Dropped,
        as ``send`` drops events, once the phone has left. A listener without ``on_facts`` keeps
        none."""
        if result.facts is None or self._generation[slot] != generation:
            return
        for listener in self.listeners:
            on_facts = getattr(listener, "on_facts", None)
            if on_facts is not None:
                with _isolated(listener):
                    on_facts(slot, result.facts)

    def _count(self, port: Port) -> None:
        field = {State.DONE: "restored", State.FAILED: "failed", State.LOCKED: "locked",
                 State.REFUSED: "locked"}.get(port.state)
        if field:
            self._counts = replace(self._counts, **{field: getattr(self._counts, field) + 1})


def _progress(report: RestoreReport) -> Event:
    if isinstance(report, TrustRequest):
        return TrustNeeded(report.reason)
    assert isinstance(report, RestoreProgress)
    return Progress(report.phase, report.percent)


def _present(device: Device | None) -> Device:
    if device is None:  # the machine never asks for work on an empty port
        raise RuntimeError("no device on this port")
    return device


@contextlib.contextmanager
def _isolated(listener: object):  # type: ignore[no-untyped-def]
    """A listener that raises is logged, never allowed to stop the station (as Mopidy does)."""
    try:
        yield
    except Exception:  # noqa: BLE001
        log.exception("listener %s failed", type(listener).__name__)

