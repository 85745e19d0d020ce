"""No record is lost or doubled: the broker stopped mid-stream, the station killed mid-publish.

The station's backlog is written first, as its recorder writes records (hundreds of them, in a
second): sending it one record at a time is what the broker stop and the SIGKILL interrupt.
"""
from __future__ import annotations

import signal
import subprocess
import time

from fleet.conftest import (STATION_ID, Bench, Collecting, Listening, assert_one_chain, long_scenario,
                            make_records, outbox_rows, sealed)

BACKLOG = 300


def _start(bench: Bench, scenario, speed: float = 10) -> subprocess.Popen:
    return subprocess.Popen(bench.command("run", "--sim", str(scenario), "--speed", str(speed)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=bench.dir)


def test_a_broker_stopped_mid_stream_gets_every_record_once_it_is_back(bench: Bench, collector: Collecting):
    make_records(bench.state_dir, BACKLOG)
    # Two phones leave soon (their records are sealed while the broker is down), one stays.
    station = _start(bench, long_scenario(bench.dir / "stays.toml", detach_at=(20, 30, 900)), speed=10)
    try:
        collector.wait_for(50)
        bench.broker.stop()  # SIGTERM: mosquitto saves its sessions (the collector's queue)
        _wait_until(lambda: sealed(bench.state_dir) == BACKLOG + 2)
        bench.broker.start()
        assert_one_chain(collector.wait_for(BACKLOG + 2, timeout=60), BACKLOG + 2)
        station.send_signal(signal.SIGTERM)  # the phone that stayed: its record closes now
        assert station.wait(timeout=30) == 130  # a simulated run stopped early: interrupted
    finally:
        if station.poll() is None:
            station.kill()
    assert_one_chain(collector.wait_for(BACKLOG + 3), BACKLOG + 3)
    err = station.stderr.read()
    assert "Traceback" not in err
    assert err.count("connection lost") == 1  # one line, not one per attempt
    assert "fleet: NO BROKER" in err and "fleet is back" in err  # the station's fault, set and cleared
    assert outbox_rows(bench.state_dir) == 0  # every record acknowledged, none kept
    assert " 0 refused" in collector.stop()


def _wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_station_killed_mid_publish_resends_and_the_collector_keeps_one_copy(bench: Bench,
                                                                                collector: Collecting):
    make_records(bench.state_dir, 2 * BACKLOG)  # more to send than can go before the kill lands
    station = _start(bench, long_scenario(bench.dir / "stays.toml"))
    started = time.monotonic()
    collector.wait_for(1, timeout=30)
    first = time.monotonic()
    collector.wait_for(BACKLOG // 3)
    station.send_signal(signal.SIGKILL)  # mid-stream: records are going out one after another
    station.wait(timeout=10)
    rate = (len(collector.stored()) - 1) / (time.monotonic() - first)
    assert 0 < outbox_rows(bench.state_dir) < 2 * BACKLOG  # some sent, some left for the next start
    status = Listening(bench.broker.port, f"station/{STATION_ID}/status")  # retained: the will's
    _wait_until(lambda: [payload for _, payload, _ in status.messages] == [b"offline"], timeout=15)
    status.close()
    again = bench.run()  # the next start: the rest, and its own four
    assert again.returncode == 0, again.stderr
    total = sealed(bench.state_dir)  # the backlog, the run's four, and one the kill left open, if it was
    assert total >= 2 * BACKLOG + 4
    assert_one_chain(collector.wait_for(total), total)
    assert outbox_rows(bench.state_dir) == 0
    summary = collector.stop()
    assert " 0 refused" in summary
    print(f"one record in flight: {rate:.0f} records/s over loopback "
          f"(first after {first - started:.1f} s)")
