"""Hub port paths to station slots, from the ``[hub] ports`` table.

A port missing from the table still gets a slot (the first free one, kept for
as long as the station runs) so an unlearned hub works; the log says so once,
and `station ports learn` writes the table that makes it stable.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class SlotMap:
    def __init__(self, ports: dict[str, int], slots: int) -> None:
        self.slots = slots
        self._table = dict(ports)
        self._guessed: dict[str, int] = {}

    def slot_for(self, port_path: str) -> int | None:
        if port_path in self._table:
            return self._table[port_path]
        if port_path not in self._guessed:
            used = set(self._table.values()) | set(self._guessed.values())
            free = next((s for s in range(1, self.slots + 1) if s not in used), None)
            if free is None:
                log.warning("USB port %s: no free slot left ([hub] slots = %d)", port_path, self.slots)
                return None
            log.warning("USB port %s is not in [hub] ports: shown as slot %d until restart "
                        "(`station ports learn` records the hub)", port_path, free)
            self._guessed[port_path] = free
        return self._guessed[port_path]
