"""The fleet's topics, under ``<prefix>/<station id>/``:

    status          retained, QoS 1  "online", or "offline" (said on a clean stop, else by the will)
    key             retained, QoS 1  the station's Ed25519 public key (PEM): collectors pin it
    ports/<slot>    retained, QoS 0  one port's state (payloads.port), published on change
    events          QoS 0            each state change and operator action (payloads.event)
    records         QoS 1            each closed, sealed record with its certificate (payloads.record)

A station id may not hold the MQTT wildcards or a slash: it is one topic level.
"""
from __future__ import annotations

from dataclasses import dataclass

STATUS, KEY, PORTS, EVENTS, RECORDS = "status", "key", "ports", "events", "records"
ONLINE, OFFLINE = "online", "offline"


@dataclass(frozen=True)
class Topics:
    prefix: str
    station_id: str

    def _topic(self, *levels: str) -> str:
        return "/".join((self.prefix, self.station_id, *levels))

    @property
    def status(self) -> str:
        return self._topic(STATUS)

    @property
    def key(self) -> str:
        return self._topic(KEY)

    @property
    def events(self) -> str:
        return self._topic(EVENTS)

    @property
    def records(self) -> str:
        return self._topic(RECORDS)

    def port(self, slot: int) -> str:
        return self._topic(PORTS, str(slot))


def id_problem(station_id: str) -> str:
    """Why a station id cannot name its topics; "" when it can."""
    if not station_id or any(char in station_id for char in "/+#"):
        return f"[station] id {station_id!r} is not one MQTT topic level (no '/', '+' or '#')"
    return ""


def every_station(prefix: str, *levels: str) -> str:
    """A subscription to ``levels`` of every station: ``<prefix>/+/ports/+``."""
    return "/".join((prefix, "+", *levels))


@dataclass(frozen=True)
class Parsed:
    station_id: str
    kind: str  # STATUS, KEY, PORTS, EVENTS or RECORDS
    slot: int | None = None


def parse(prefix: str, topic: str) -> Parsed | None:
    """What a received topic is about; None when it is none of the fleet's."""
    if not topic.startswith(prefix + "/"):
        return None
    levels = topic[len(prefix) + 1:].split("/")
    if len(levels) == 2 and levels[1] in (STATUS, KEY, EVENTS, RECORDS):
        return Parsed(levels[0], levels[1])
    if len(levels) == 3 and levels[1] == PORTS and levels[2].isdigit():
        return Parsed(levels[0], PORTS, int(levels[2]))
    return None
