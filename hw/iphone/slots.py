"""Hub port paths to station slots, from the ``[hub] ports`` table.

A port missing from the table still gets a slot (the first free one, kept for
as long as the station runs) so an unlearned hub works; the log says so once,
and `station ports learn` writes the table that makes it stable. The two halves
of a USB 3 port (``usb_topology``) are one slot, whichever half the table names.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def no_peers(port_path: str) -> str | None:
    return None


class SlotMap:
    def __init__(self, ports: dict[str, int], slots: int,
                 peer: Callable[[str], str | None] = no_peers) -> None:
        self.slots = slots
        self.peer = peer
        self._table = dict(ports)
        self._guessed: dict[str, int] = {}

    def slot_for(self, port_path: str) -> int | None:
        known = self._known(port_path)
        if known is not None:
            return known
        companion = self.peer(port_path)
        if companion is not None and (known := self._known(companion)) is not None:
            return known
        used = set(self._table.values()) | set(self._guessed.values())
        free = next((s for s in range(1, self.slots + 1) if s not in used), None)
        if free is None:
            log.warning("USB port %s: no free slot left ([hub] slots = %d)", port_path, self.slots)
            return None
        log.warning("USB port %s is not in [hub] ports: shown as slot %d until restart "
                    "(`station ports learn` records the hub)", port_path, free)
        self._guessed[port_path] = free
        return free

    def _known(self, port_path: str) -> int | None:
        return self._table.get(port_path, self._guessed.get(port_path))
