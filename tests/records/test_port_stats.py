"""Per-port statistics from the records: a port that fails or retries far more than the others is flagged."""
from __future__ import annotations

from station.records import port_stats
from station.snapshot import PortFlag

from . import helpers
from .helpers import Phone


def test_a_port_that_keeps_needing_retries_is_flagged(recorder, station, clock):
    n = 0
    for _ in range(3):
        for slot in (1, 2, 3):
            n += 1
            helpers.clean_restore(Phone(recorder, slot, clock), n)
        n += 1
        helpers.failed_then_retried(Phone(recorder, 4, clock), n)  # 3 attempts, 2 went wrong
        clock.advance(600)
    assert recorder.flush(10)
    stats = port_stats.load(station.state_dir, clock())
    by_slot = {s.slot: s for s in stats.slots}
    assert (by_slot[4].restores, by_slot[4].attempts, by_slot[4].retries, by_slot[4].failed) == (3, 9, 6, 0)
    assert by_slot[1].troubles == 0 and by_slot[1].attempts == 3
    assert stats.flags == (PortFlag(slot=4, troubles=6, attempts=9),)
    assert stats.retried_today == 3
    # A week later the window has moved on: nothing to flag, nothing retried today.
    later = port_stats.load(station.state_dir, clock() + 8 * 86400)
    assert later.flags == () and later.retried_today == 0


def test_a_station_wide_problem_flags_no_port(recorder, station, clock):
    for n, slot in enumerate((1, 2, 3, 1, 2, 3), 1):
        helpers.failed(Phone(recorder, slot, clock), n)  # every port fails alike (no IPSW, say)
    assert recorder.flush(10)
    stats = port_stats.load(station.state_dir, clock())
    assert all(s.failed == 2 for s in stats.slots) and stats.flags == ()


def test_one_bad_restore_is_no_pattern():
    slots = (port_stats.SlotStats(1, restores=1, attempts=2, retries=1),
             port_stats.SlotStats(2, restores=5, attempts=5))
    assert port_stats.flagged(slots) == ()  # two attempts, one went wrong: too few to say


def test_no_records_yet_is_nothing_to_show(tmp_path):
    assert port_stats.load(tmp_path / "nowhere", 0.0) is None


async def test_the_counters_screen_gets_them_after_a_write(station):
    from dataclasses import replace

    from station.config import Config
    from station.core import Station
    from station.records.recorder import Recorder

    with Recorder(station) as recorder:  # on the wall clock, as the station reads its statistics
        for n in range(1, 4):
            helpers.failed_then_retried(Phone(recorder, 4), n)
            helpers.clean_restore(Phone(recorder, 1), 10 + n)
        assert recorder.flush(10)
        ours = Station(replace(Config(), station=station), phones=None, records=recorder)
        ours.records_changed()  # as the records' writer tells the loop after each write
        await ours._stats_task
        snapshot = ours.snapshot()
    assert snapshot.port_flags == (PortFlag(slot=4, troubles=6, attempts=9),)
    assert snapshot.counters.retried == 3  # today's, from the records
