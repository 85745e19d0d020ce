"""How /metrics counts what the demo does not play: a restore unplugged half-way, one aborted,
and the image bytes of a transfer cut short and sent again. The ports are the state machine's
own, walked event by event as the station walks them (``machine.step``), and told to the
metrics as the station tells its listeners (state changes and operator actions)."""
from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hw.phones import Device, Lock, Mode
from hw.worker import phases
from station.ipsw.cache import Entry
from station.ipsw.record import Record
from station.machine import (Abort, Attached, Detached, Event, Identified, LockCheckStarted, LockResult,
                             Policy, Port, Progress, RestoreFailed, RestoreStarted, step)
from station.snapshot import Snapshot
from station.web.metrics import StationMetrics

POLICY = Policy(mode="line", retries=1)
PHONE = Device(key="udid-1", mode=Mode.NORMAL, product_type="iPhone14,7", serial="F2LXQ0J1N7KC")
IMAGE = 8_700_000_000
SHA = "ab" * 32


class Bench:
    def __init__(self) -> None:
        self.metrics = StationMetrics()
        self.metrics.note_cache([Entry(Path("iPhone14,7.ipsw"), IMAGE,
                                       Record(state="verified", size=IMAGE, mtime_ns=0, checked_at="", sha256=SHA),
                                       current=True)])
        self.port = Port(1)
        self.now = 0.0

    def send(self, *events: Event) -> None:
        for event in events:
            self.now += 1.0
            old, self.port = self.port, step(self.port, event, POLICY, self.now).port
            if old.state is not self.port.state or isinstance(event, Abort):
                self.metrics.on_transition(old, self.port, event, self.now)
            self.metrics.observe_ports([self.port])

    def restoring(self) -> None:
        self.send(Attached(PHONE), Identified(PHONE), LockCheckStarted(),
                  LockResult(Lock.CLEAR, "Apple: no Activation Lock", "activation-server"), RestoreStarted())
        self.metrics.on_firmware(1, "22C152", "18.2", SHA)

    def transfer(self, percent: float) -> Progress:
        return Progress(phases.RESTORE_IMAGE, phases.overall_percent(Mode.NORMAL, phases.RESTORE_IMAGE, percent))

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.metrics.exposition(Snapshot(ports=(self.port,)), backlog=0, clients=0, fault_sources={}).decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_restore_unplugged_half_way_is_detached_with_half_its_image_sent():
    bench = Bench()
    bench.restoring()
    bench.send(bench.transfer(25), bench.transfer(50), Detached())
    found = bench.samples()
    assert found[("station_restores_total", (("job", "restore"), ("outcome", "detached")))] == 1
    assert found[("station_transfer_bytes_total", ())] == pytest.approx(IMAGE / 2)
    assert found[("station_lock_checks_total", (("check", "plug_in"), ("method", "activation-server"),
                                                ("result", "clear")))] == 1
    assert found[("station_port_state", (("slot", "1"), ("station_port_state", "empty")))] == 1


def test_a_retried_transfer_counts_again_and_an_abort_is_a_failure():
    bench = Bench()
    bench.restoring()
    bench.send(bench.transfer(80), RestoreFailed("USB connection lost", retryable=True), RestoreStarted(),
               bench.transfer(10), Progress(phases.VERIFY_RESTORE, 1.0), Abort())
    found = bench.samples()
    assert found[("station_restore_retries_total", (("job", "restore"),))] == 1
    assert found[("station_transfer_bytes_total", ())] == pytest.approx(IMAGE * 1.8)  # 80 %, then all of it
    assert found[("station_restores_total", (("job", "restore"), ("outcome", "failed")))] == 1
    assert not any(name == "station_restore_duration_seconds_count" and value for (name, _), value in found.items())
