"""When a restore may start, as far as its USB link is concerned: pure, no I/O, times passed in.

Most of a restore moves little over USB (entering recovery, the boot stages, signing, the
on-device verification, baseband, sealing, the reboot); its filesystem transfer moves the
whole OS image (about 8.7 GB for iOS 18) and takes what the link gives. A link is kept busy
by as many transfers as it takes to fill it (``ceil(link rate / phone rate)``: two on a Pi 4,
where one phone's ASR takes about 35 of the link's 40 MB/s) and by no more: more only share
the same rate, and an oversubscribed link is where real restores fail (idevicerestore #604).

So a restore starts on a link while the restores still before or in their transfer are fewer
than that; the one that fills it only once the last reached its transfer (so that transfers
end one by one); and more start early, one for each transfer that will end within the time a
restore takes to reach its own: each arrives as another leaves. Both times are measured on
this station (a worker's first report to its transfer; each transfer's pace), not assumed, so
they hold for any image size, phone or time scale. The time a worker takes to start is left out
of the lead: it varies (the first waits for the fork server's preload) and only ever makes a
restore arrive later than counted, never sooner. The low-traffic phases after a transfer overlap
freely.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from hw.phones import Mode
from hw.worker import phases

LEADS = 5  # the lead time is the shortest of the last few: one that came early would oversubscribe
EARLY = 0.8  # start early only within this share of the lead: estimates that run late stay in hand
STAGGER = 2.0  # one on its way at a time, but a restore this many leads on its way holds no one up


@dataclass(frozen=True)
class Link:
    name: str
    rate: float  # bytes/s
    phone_rate: float  # bytes/s one transfer takes on an idle link

    @property
    def fills_with(self) -> int:
        return max(1, math.ceil(self.rate / self.phone_rate - 1e-9))


@dataclass
class _Restore:
    mode: Mode
    started: float
    running: float | None = None  # when its worker first reported: the lead is counted from here
    phase: str = ""
    percent: float = 0.0
    began: tuple[float, float] | None = None  # (time, percent) when its transfer was first seen
    pace: float | None = None  # percent per second of its transfer, since it began

    @property
    def counted_from(self) -> float:
        """Where its lead to the transfer starts: its worker's first report, if one came."""
        return self.started if self.running is None else self.running


class TransferWatch:
    """The restores running on the station: where each is, and the times learned from them."""

    def __init__(self) -> None:
        self._running: dict[int, _Restore] = {}
        self._leads: dict[Mode, deque[float]] = {}  # seconds from a restore's start to its transfer

    def started(self, slot: int, mode: Mode, now: float) -> None:
        self._running[slot] = _Restore(mode, now)

    def ended(self, slot: int) -> None:
        self._running.pop(slot, None)

    def progress(self, slot: int, phase: str, overall: float, now: float) -> bool:
        """Note a restore's progress (the whole restore's percentage, as the station shows it);
        True when it entered another phase."""
        restore = self._running.get(slot)
        if restore is None:
            return False
        changed = phase != restore.phase
        if restore.running is None and phase != phases.RESTORE_IMAGE:
            restore.running = now
        restore.phase, restore.percent = phase, _within_phase(restore.mode, phase, overall)
        percent = restore.percent
        if phase == phases.RESTORE_IMAGE:
            if restore.began is None:
                restore.began = (now, percent)
                self._leads.setdefault(restore.mode, deque(maxlen=LEADS)).append(now - restore.counted_from)
            else:  # over the whole transfer: reports that arrive in bursts (a busy CPU) even out
                then, before = restore.began
                if now > then and percent > before:
                    restore.pace = (percent - before) / (now - then)
        return changed

    def lead_s(self, mode: Mode) -> float | None:
        leads = self._leads.get(mode)
        return min(leads) if leads else None

    def wait_reason(self, link: Link, slots: Iterable[int], mode: Mode, now: float) -> str:
        """Why a restore of a phone in ``mode`` cannot start on ``link`` now; "" when it can.
        ``slots``: the slots behind the link."""
        lead = self.lead_s(mode)
        before = sending = ending = arriving = 0
        for slot in slots:
            restore = self._running.get(slot)
            if restore is None:
                continue
            if restore.phase == phases.RESTORE_IMAGE and restore.percent < 100.0:
                sending += 1
                left = (100.0 - restore.percent) / restore.pace if restore.pace else None
                ending += lead is not None and left is not None and left <= EARLY * lead
            elif _before_transfer(restore):
                before += 1
                arriving += lead is not None and now - restore.started < STAGGER * lead
        # Room by the time this restore reaches its transfer: the ones ending before then have
        # left, the ones on the way have arrived. And the restore that fills the link goes only
        # when none is on the way: restores that fill a link together end together, and the
        # link carries nothing from their end to the next ones' arrival; staggered, a transfer
        # still runs through each handover. Below that, another can start whenever it comes.
        # One slow to get there (a phone slow to enter recovery) holds the others up for a
        # while only.
        room = link.fills_with - (sending - ending + before)
        if room > 1 or (room == 1 and arriving == 0):
            return ""
        return f"WAIT USB: link {link.name} busy ({sending} sending, {before} on the way)"


def _within_phase(mode: Mode, phase: str, overall: float) -> float:
    """The percentage within ``phase`` of a restore ``overall`` percent done (phases.overall_percent's inverse)."""
    start, end = phases.overall_percent(mode, phase, 0.0), phases.overall_percent(mode, phase, 100.0)
    return 0.0 if end <= start else min(100.0, max(0.0, 100.0 * (overall - start) / (end - start)))


def _before_transfer(restore: _Restore) -> bool:
    steps = phases.sequence(restore.mode)
    if restore.phase not in steps:
        return True  # not started a phase yet (or waiting for Trust): on its way to the link
    return steps.index(restore.phase) < steps.index(phases.RESTORE_IMAGE)
