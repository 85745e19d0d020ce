"""`station fleet watch`: every station's ports, as their retained topics say them.

A ``Board`` keeps the newest port payload of each (station, slot) and each
station's status; paho's thread fills it, the command's thread reads copies.
"""
from __future__ import annotations

import json
import logging
import threading
from typing import Any

from rich.table import Table

from station.fleet import topics

log = logging.getLogger(__name__)


class Board:
    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._lock = threading.Lock()
        self._ports: dict[tuple[str, int], dict[str, Any]] = {}
        self._status: dict[str, str] = {}
        self.changed = threading.Event()

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(topics.every_station(self._prefix, topics.PORTS, "+"), 0),
                (topics.every_station(self._prefix, topics.STATUS), 0)]

    def receive(self, topic: str, payload: bytes) -> dict[str, Any] | None:
        """Take one message; the port it updated (None for a status, or what is not a port)."""
        about = topics.parse(self._prefix, topic)
        if about is None:
            return None
        if about.kind == topics.STATUS:
            with self._lock:
                self._status[about.station_id] = payload.decode("utf-8", "replace")
            self.changed.set()
            return None
        if about.kind != topics.PORTS or about.slot is None:
            return None
        try:
            port = json.loads(payload) if payload else None
        except ValueError:
            log.error("%s: not JSON: ignored", topic)
            return None
        if port is not None and not isinstance(port, dict):
            log.error("%s: not a port: ignored", topic)
            return None
        with self._lock:
            if port is None:  # an empty retained message clears the topic
                self._ports.pop((about.station_id, about.slot), None)
            else:
                self._ports[(about.station_id, about.slot)] = port
        self.changed.set()
        return port

    def ports(self) -> list[dict[str, Any]]:
        """Every port known, by station and slot, with its station's status (null: not heard)."""
        with self._lock:
            return [{**port, "station_id": station_id, "slot": slot,
                     "station_status": self._status.get(station_id)}
                    for (station_id, slot), port in sorted(self._ports.items())]

    def table(self) -> Table:
        table = Table(title="stations", expand=False)
        for column in ("station", "slot", "state", "phone", "serial", "detail"):
            table.add_column(column)
        for port in self.ports():
            device = port.get("device") or {}
            station = port["station_id"] + ("" if port["station_status"] == topics.ONLINE
                                             else f" ({port['station_status'] or '?'})")
            detail = " · ".join(str(line) for line in (port.get("lines") or [])[2:])
            table.add_row(station, str(port["slot"]), str(port.get("short", port.get("state"))),
                          str(device.get("name") or device.get("product_type") or ""),
                          str(device.get("serial") or ""), detail)
        return table
