"""Immutable pictures of the station, the only thing views (OLED, CLI, logs) ever read."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from station.machine import Port


class Screen(enum.Enum):
    OVERVIEW = "overview"  # every slot: number, short state, percent
    DETAIL = "detail"  # the selected slot: model, iOS, lock, phase, ETA
    COUNTERS = "counters"  # today's restored / failed / locked / retried, and ports to look at
    FAULTS = "faults"  # the whole line behind a fault that has one (a bad config file)


@dataclass(frozen=True)
class Counters:
    restored: int = 0
    failed: int = 0
    locked: int = 0
    retried: int = 0  # restores that needed more than one attempt (from the records)


@dataclass(frozen=True)
class PortFlag:
    """A hub port whose restores fail or need another attempt far more often than the others'
    (a bad cable, a worn port): ``troubles`` of its last ``attempts`` went wrong."""

    slot: int
    troubles: int
    attempts: int


@dataclass(frozen=True)
class Snapshot:
    ports: tuple[Port, ...]
    screen: Screen = Screen.OVERVIEW
    selected: int = 1  # slot number shown by DETAIL and marked on OVERVIEW
    counters: Counters = Counters()
    faults: tuple[str, ...] = ()  # station-level faults, most urgent first ("NO NETWORK")
    fault_details: tuple[str, ...] = ()  # "BAD CONFIG: <file>: <what is wrong>", same order
    status: str = ""  # a station-level line that is no fault: IPSW prefetch progress, NOT SIGNED
    now: float = 0.0  # station clock, for ETAs and blinking
    port_flags: tuple[PortFlag, ...] = ()  # ports to look at (station.records.port_stats), worst first

    def port(self, slot: int) -> Port:
        return next(p for p in self.ports if p.slot == slot)
