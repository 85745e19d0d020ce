"""A person's timeouts run on real time: a simulation played at 30x keeps a detail screen up
as long as on a Pi, so its keys can be used."""
from __future__ import annotations

from station.config import Config
from station.core import Station
from station.navigation import IDLE_S
from station.snapshot import Screen


def test_the_idle_return_to_the_overview_runs_on_the_persons_clock() -> None:
    station_time, real_time = [0.0], [0.0]
    station = Station(Config(), phones=None, clock=lambda: station_time[0],
                      person_clock=lambda: real_time[0])
    station.press("select", False)
    assert station.snapshot().screen is Screen.DETAIL
    station_time[0] += 30 * IDLE_S  # a scenario at 30x: the station's clock runs on...
    real_time[0] += IDLE_S / 2  # ...the operator has been looking for ten seconds
    assert station.snapshot().screen is Screen.DETAIL
    real_time[0] += IDLE_S / 2
    assert station.snapshot().screen is Screen.OVERVIEW


def test_without_a_persons_clock_the_station_clock_times_out() -> None:
    now = [0.0]
    station = Station(Config(), phones=None, clock=lambda: now[0])
    station.press("select", False)
    now[0] += IDLE_S
    assert station.snapshot().screen is Screen.OVERVIEW
