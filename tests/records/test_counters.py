"""Today's counts: per outcome, across a restart, across local midnight."""
from __future__ import annotations

from datetime import datetime

from station.records.recorder import Recorder
from station.snapshot import Counters

from . import helpers
from .helpers import Phone


def test_counts_by_result(recorder, clock):
    helpers.clean_restore(Phone(recorder, 1, clock), 1)
    helpers.clean_restore(Phone(recorder, 2, clock), 2, verified=False)  # DONE, not verified: restored
    helpers.locked(Phone(recorder, 3, clock), 3)
    helpers.refused(Phone(recorder, 4, clock), 4)  # REFUSED counts as locked
    helpers.failed(Phone(recorder, 5, clock), 5)
    helpers.detached_mid_restore(Phone(recorder, 6, clock), 6)  # no result: not counted
    assert recorder.counters() == Counters(restored=2, failed=1, locked=2)


def test_counts_show_before_the_phone_leaves(recorder, clock):
    phone = Phone(recorder, 1, clock)
    helpers.clean_restore(phone, 1, detach=False)
    assert recorder.counters() == Counters(restored=1)


def test_a_manual_retry_moves_the_count(recorder, clock):
    phone = Phone(recorder, 1, clock)
    helpers.failed(phone, 1, detach=False)
    assert recorder.counters() == Counters(failed=1)
    phone.send(*helpers.confirm_and_restore())
    assert recorder.counters() == Counters(restored=1)


def test_counts_survive_a_restart(station, clock):
    with Recorder(station, now=clock) as recorder:
        helpers.clean_restore(Phone(recorder, 1, clock), 1)
        helpers.locked(Phone(recorder, 2, clock), 2)
        helpers.failed(Phone(recorder, 3, clock), 3, detach=False)  # still plugged in at shutdown
        helpers.arrive(Phone(recorder, 4, clock), 4)  # interrupted: not counted
        before = recorder.counters()
    clock.advance(60)
    with Recorder(station, now=clock) as recorder:
        assert recorder.counters() == before == Counters(restored=1, failed=1, locked=1)
        helpers.clean_restore(Phone(recorder, 1, clock), 5)
        assert recorder.counters() == Counters(restored=2, failed=1, locked=1)


def test_counts_reset_at_local_midnight(station, clock):
    clock.set(datetime(2024, 6, 10, 23, 59, 0))
    with Recorder(station, now=clock) as recorder:
        helpers.clean_restore(Phone(recorder, 1, clock), 1)
        late = Phone(recorder, 2, clock)
        helpers.failed(late, 2, detach=False)
        assert recorder.counters() == Counters(restored=1, failed=1)
        clock.set(datetime(2024, 6, 11, 0, 0, 1))
        assert recorder.counters() == Counters()
        # Yesterday's failure retried today: today counts the restore, yesterday keeps its failure.
        late.send(*helpers.confirm_and_restore())
        assert recorder.counters() == Counters(restored=1)
    with Recorder(station, now=clock) as recorder:
        assert recorder.counters() == Counters(restored=1)
    clock.set(datetime(2024, 6, 10, 23, 59, 30))  # a restart with yesterday's clock sees yesterday
    with Recorder(station, now=clock) as recorder:
        assert recorder.counters() == Counters(restored=1)
