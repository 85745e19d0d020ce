"""What the station tells the parts that keep its memory (records, counters).

Listeners are called on the event loop and must return at once: anything slow
(disk, network) goes to a thread of the listener's own.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from station.machine import Event, Port
from station.snapshot import Counters


class Listener(Protocol):
    def on_transition(self, old: Port, new: Port, event: Event, at: float) -> None:
        """Every state change of a port (and operator actions on it), in order."""

    def on_firmware(self, slot: int, build: str, version: str, sha256: str, tool: str) -> None:
        """The IPSW chosen for the restore about to start on ``slot`` ("" when none), and the
        tool that restores it (``PhoneLayer.restore_tool``)."""

    # Optional (the station looks for it): ``on_facts(slot, facts: hw.phones.Facts)``, what the
    # phone on ``slot`` told in a lock check's paired session (IMEI, storage, battery), told
    # before that check's result. The records keep them (station.records.recorder).


class CounterSource(Protocol):
    def counters(self) -> Counters:
        """Today's restored / failed / locked counts (local day)."""



class RecordKeeper(Protocol):
    """No record, no erase: asked by the loop before every restore starts."""

    def durable(self, slot: int) -> bool:
        """Everything told about ``slot`` so far (its session, lock result, decision) is on disk."""

    def problem(self) -> str | None:
        """Why records cannot be kept now (a failing write, a full disk); None when they can."""

    def set_notify(self, notify: Callable[[], None]) -> None:
        """``notify`` is called, on any thread, after each write: ask again then."""
