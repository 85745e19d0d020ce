"""/metrics in Prometheus' text format, from a registry of the station's own.

Where each value comes from (what the station really knows, nothing assumed):

- ``station_restores_total{job,outcome}``: restores (and erases) that ended since the station
  started, as the state machine ended them: ``done``, ``done_unverified`` (the check at Hello
  could not tell), ``failed`` (retries used up, aborted, a port fault), ``locked`` (still locked
  at Hello), ``detached`` (unplugged mid-way). ``station_restore_retries_total{job}``: failed
  attempts the station retried by itself.
- ``station_restore_duration_seconds{job}``: a successful restore's last attempt, from its start
  to DONE (the check at Hello included), on the station's clock (scenario seconds in a
  simulation).
- ``station_transfer_bytes_total``: an estimate of the OS image bytes sent over USB: each
  restore's IPSW size (from the cache, by the SHA-256 of the file chosen) times the share of its
  filesystem transfer (the ``restore_image`` phase) done, as restored reports it; a retried
  transfer counts again. An erase sends no image; a restore with no cached IPSW (a simulation's
  synthetic stream) counts nothing. The IPSW is a few percent larger than the image it holds.
- ``station_port_state{slot}``: each port's state now (a state set: one state is 1).
- ``station_lock_checks_total{check,result,method}``: lock answers that moved a port, at
  plug-in (``check="plug_in"``) or at Hello after a restore (``after_restore``), by the phone
  layer's method (``activation-server``, ``dfu``, ...).
- ``station_faults{source,fault}``: the station-level faults on the display now.
- ``station_ipsw_cache_bytes`` and ``station_ipsw_cache_files{state}``: the IPSW cache as last
  read (``CacheView``: at start, every minute, and after a restore picked an IPSW).
- ``station_records_backlog``: records reported but not yet on disk (the writer's queue, and
  what it holds while writing fails: no record, no erase).
- ``station_event_loop_lag_seconds``: how late the loop ran each 50 ms timer (``LagMonitor``).
- ``station_web_live_clients``: pages following the live feed now.
"""
from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest

from hw.worker import phases
from station.ipsw.cache import Entry
from station.machine import Detached, Event, LockResult, Port, State
from station.snapshot import Snapshot

DURATION_BUCKETS = (60, 120, 300, 600, 900, 1200, 1500, 1800, 2400, 3600, 5400, 7200)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A restore under way that leaves without an outcome of its own: the phone was unplugged.
UNDER_WAY = frozenset({State.QUEUED, State.RESTORING, State.VERIFYING, State.NEEDS_TRUST})


class StationMetrics:
    """A listener of the station (``on_transition``, ``on_firmware``) and its /metrics page."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.restores = Counter("station_restores", "Restores and erases ended, by outcome",
                                ("job", "outcome"), registry=r)
        self.retries = Counter("station_restore_retries", "Failed attempts retried by the station",
                               ("job",), registry=r)
        self.duration = Histogram("station_restore_duration_seconds",
                                  "A successful restore's last attempt, start to DONE", ("job",),
                                  buckets=DURATION_BUCKETS, registry=r)
        self.sent = Counter("station_transfer_bytes", "OS image bytes sent over USB (estimate: IPSW "
                            "size times the share of the filesystem transfer done)", registry=r)
        self.port_state = Enum("station_port_state", "Each port's state", ("slot",),
                               states=[state.value for state in State], registry=r)
        self.lock_checks = Counter("station_lock_checks", "Lock answers that moved a port",
                                   ("check", "result", "method"), registry=r)
        self.faults = Gauge("station_faults", "Station-level faults now (1 each)", ("source", "fault"),
                            registry=r)
        self.cache_bytes = Gauge("station_ipsw_cache_bytes", "Bytes of IPSW files in the cache",
                                 registry=r)
        self.cache_files = Gauge("station_ipsw_cache_files", "IPSW files in the cache, by state",
                                 ("state",), registry=r)
        self.backlog = Gauge("station_records_backlog", "Records reported but not yet on disk",
                             registry=r)
        self.lag = Histogram("station_event_loop_lag_seconds", "How late the event loop ran a timer",
                             buckets=LAG_BUCKETS, registry=r)
        self.clients = Gauge("station_web_live_clients", "Pages following the live feed", registry=r)
        self._image_of: dict[int, str] = {}  # slot -> SHA-256 of the IPSW its restore reads
        self._sizes: dict[str, int] = {}  # SHA-256 -> bytes, from the cache
        self._shares: dict[int, tuple[float | None, float]] = {}  # slot -> (restore start, share sent)

    # The station's listener: on the loop, returns at once. -------------------------------

    def on_transition(self, old: Port, new: Port, event: Event, at: float) -> None:
        if isinstance(event, LockResult) and new.state is not old.state:
            check = "after_restore" if old.state is State.VERIFYING else "plug_in"
            self.lock_checks.labels(check, event.lock.value, event.method or "unspecified").inc()
        outcome = _outcome(old, new, event)
        if outcome:
            self.restores.labels(old.job, outcome).inc()
        if outcome == "done" or outcome == "done_unverified":
            self.duration.labels(old.job).observe(max(0.0, new.since - (new.restore_started or new.since)))
        if old.state is State.RESTORING and new.state is State.QUEUED:
            self.retries.labels(old.job).inc()

    def on_firmware(self, slot: int, build: str, version: str, sha256: str, tool: str = "") -> None:
        self._image_of[slot] = sha256

    # Called after every change of the station, and at each scrape. ------------------------

    def observe_ports(self, ports: list[Port]) -> None:
        """Count the image bytes the restores' progress says were sent since last time."""
        for port in ports:
            share = _transfer_share(port)
            if share is None:
                continue
            started, before = self._shares.get(port.slot, (None, 0.0))
            if started != port.restore_started:
                before = 0.0  # another attempt: its image is sent again
            if share > before:
                size = self._sizes.get(self._image_of.get(port.slot, ""), 0)
                if size:
                    self.sent.inc(size * (share - before))
            self._shares[port.slot] = (port.restore_started, max(share, before))

    def note_cache(self, entries: list[Entry]) -> None:
        self._sizes = {entry.record.sha256: entry.size for entry in entries
                       if entry.record is not None and entry.record.sha256}
        self.cache_bytes.set(sum(entry.size for entry in entries))
        self.cache_files.clear()
        for state, count in Tally(entry.state.split(":")[0] for entry in entries).items():
            self.cache_files.labels(state).set(count)

    def exposition(self, snapshot: Snapshot, backlog: int, clients: int, fault_sources: dict[str, str]) -> bytes:
        for port in snapshot.ports:
            self.port_state.labels(str(port.slot)).state(port.state.value)
        self.faults.clear()
        for source, fault in fault_sources.items():
            self.faults.labels(source, fault).set(1)
        self.backlog.set(backlog)
        self.clients.set(clients)
        return generate_latest(self.registry)


def _outcome(old: Port, new: Port, event: Event) -> str:
    """How a restore ended with this transition; "" when none did."""
    if new.state is old.state or old.restore_started is None:
        return ""
    if new.state is State.DONE:
        return "done" if new.verified else "done_unverified"
    if new.state is State.FAILED:
        return "failed"
    if new.state is State.LOCKED:
        return "locked"
    if isinstance(event, Detached) and old.state in UNDER_WAY:
        return "detached"
    return ""


def _transfer_share(port: Port) -> float | None:
    """How much of this restore's OS image is sent (0..1); None for a port not restoring."""
    if port.job != "restore" or port.restore_started is None or port.device is None:
        return None
    if port.state is State.VERIFYING or port.state is State.DONE:
        return 1.0
    if port.state is not State.RESTORING:
        return None
    mode = port.device.mode
    steps = phases.sequence(mode)
    if port.phase not in steps:
        return 0.0  # starting, or waiting for Trust: nothing sent yet
    transfer = steps.index(phases.RESTORE_IMAGE)
    if steps.index(port.phase) != transfer:
        return 1.0 if steps.index(port.phase) > transfer else 0.0
    start = phases.overall_percent(mode, phases.RESTORE_IMAGE, 0.0)
    end = phases.overall_percent(mode, phases.RESTORE_IMAGE, 100.0)
    return min(1.0, max(0.0, (port.percent - start) / (end - start)))
