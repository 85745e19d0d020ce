"""What the three buttons mean: pure, like the port state machine.

SELECT walks the slots (showing each one's detail), then the counters, then
the faults' details when a fault has some (a bad config file), then back to the
overview; held on a slot's screen, SELECT switches that phone between restore
and erase (before its work starts). OK and BACK act on the selected slot: OK
starts or confirms (a long press confirms a held phone), BACK cancels a queued
restore or, held, aborts a running one; with nothing to cancel BACK returns to
the overview.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from station.machine import Abort, Cancel, Confirm, Event, Port, State, SwitchJob
from station.snapshot import Screen

Button = Literal["select", "ok", "back"]

# After this long without a press, the panel returns to the overview and may
# move the cursor to a phone that waits for OK.
IDLE_S = 20.0


@dataclass(frozen=True)
class View:
    screen: Screen = Screen.OVERVIEW
    selected: int = 1
    last_press: float = float("-inf")


@dataclass(frozen=True)
class Press:
    view: View
    slot: int | None = None  # the port the event is for
    event: Event | None = None


def press(view: View, button: Button, long: bool, slots: int, now: float,
          faults_screen: bool = False) -> Press:
    view = replace(view, last_press=now)
    if button == "select" and long and view.screen is Screen.DETAIL:
        return Press(view, view.selected, SwitchJob())
    if button == "select":
        return Press(_next_screen(view, slots, faults_screen))
    if button == "ok":
        return Press(view, view.selected, Confirm(long=long))
    if long:
        return Press(view, view.selected, Abort())
    if view.screen is not Screen.OVERVIEW:
        # BACK leaves a detail screen; the port still hears it, to cancel a queued restore.
        return Press(replace(view, screen=Screen.OVERVIEW), view.selected, Cancel())
    return Press(view, view.selected, Cancel())


def _next_screen(view: View, slots: int, faults_screen: bool) -> View:
    if view.screen is Screen.OVERVIEW:
        return replace(view, screen=Screen.DETAIL)
    if view.screen is Screen.DETAIL and view.selected < slots:
        return replace(view, selected=view.selected + 1)
    if view.screen is Screen.DETAIL:
        return replace(view, screen=Screen.COUNTERS)
    if view.screen is Screen.COUNTERS and faults_screen:
        return replace(view, screen=Screen.FAULTS)
    return replace(view, screen=Screen.OVERVIEW, selected=1)


def show_faults(view: View, now: float) -> View:
    """A new fault with a detail: its screen, as if just chosen (it settles back when idle)."""
    return replace(view, screen=Screen.FAULTS, last_press=now)


def settle(view: View, ports: tuple[Port, ...], now: float) -> View:
    """When idle: back to the overview, with the cursor on a phone waiting for OK."""
    if now - view.last_press < IDLE_S:
        return view
    waiting = [p.slot for p in ports if p.state is State.NEEDS_CONFIRM]
    selected = view.selected if view.selected in waiting or not waiting else waiting[0]
    if view.screen is Screen.OVERVIEW and selected == view.selected:
        return view
    return replace(view, screen=Screen.OVERVIEW, selected=selected)
