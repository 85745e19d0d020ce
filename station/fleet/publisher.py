"""The station's side of the fleet: one MQTT connection for its status, key, ports, events and records.

Everything here returns at once on the event loop: paho's own thread does the
network, the outbox's thread reads the records, and paho's callbacks reach the
loop only through ``call_soon_threadsafe``. A broker that is down, refuses the
credentials or fails TLS is one log line and the station fault ``fleet`` (shown
last: restores never wait for the broker, the records are kept locally first),
and it reconnects by itself.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from station.config import Config
from station.core import Station
from station.fleet import link, payloads
from station.fleet.outbox import Outbox
from station.fleet.topics import OFFLINE, ONLINE, Topics, id_problem
from station.machine import Event, Port
from station.records import keys
from station.records.statedir import RecordsUnavailable

log = logging.getLogger(__name__)

COALESCE_S = 0.5  # ports are published at most this often: a restore's progress is many changes
STOP_GRACE_S = 2.0  # at a stop, how long the outbox may go on sending what is queued
FAULT = "fleet"
_CHANGING = ("eta", "lines")  # what moves with the clock alone: no reason to publish again


class FleetPublisher:
    """A ``Listener`` (events) and an ``on_change`` observer (ports) of the station."""

    def __init__(self, config: Config, station: Station, loop: asyncio.AbstractEventLoop) -> None:
        self._station = station
        self._loop = loop
        self._topics = Topics(config.mqtt.topic_prefix, config.station.id)
        self._state_dir = config.station.state_dir
        self._config = config.mqtt
        self._client = link.client(config.mqtt, client_id=f"station-{config.station.id}")
        self._health = link.Health(f"{config.mqtt.host}:{config.mqtt.port}",
                                   on_change=self._fault, on_connected=self._connected,
                                   tls=config.mqtt.tls)
        self._health.watch(self._client)
        self._outbox = Outbox(self._state_dir, self._client, self._topics.records,
                              self._health.connected)
        self._client.on_publish = self._outbox.on_publish
        self._sent_ports: dict[int, dict[str, Any]] = {}  # slot -> last published, on the loop
        self._flush: asyncio.TimerHandle | None = None
        self._running = False

    def start(self) -> None:
        problem = id_problem(self._topics.station_id)
        if problem:  # nothing to retry until the config is fixed
            log.error("fleet: %s: not connecting", problem)
            self._station.set_fault(FAULT, "BAD CONFIG", problem)
            return
        self._client.will_set(self._topics.status, OFFLINE, qos=1, retain=True)
        self._running = True  # before paho's thread may call back
        try:
            link.connect(self._client, self._config)
        except link.LinkError as error:
            self._running = False
            log.error("fleet: %s: not connecting", error)
            self._station.set_fault(FAULT, "BROKER TLS", str(error))
            return
        self._outbox.start()

    def stop(self) -> None:
        """Say offline and leave; what is queued gets ``STOP_GRACE_S`` to be sent."""
        if not self._running:
            return
        if self._flush is not None:
            self._flush.cancel()
        self._publish_ports()  # the last states stay on the retained topics
        self._running = False
        self._outbox.stop(STOP_GRACE_S)
        log.info("fleet: %d record(s) acknowledged by the broker since start", self._outbox.sent)
        if self._health.connected.is_set():
            try:
                self._client.publish(self._topics.status, OFFLINE, qos=1,
                                     retain=True).wait_for_publish(STOP_GRACE_S)
            except (RuntimeError, ValueError):  # the connection went meanwhile: the will says it
                pass
        self._client.disconnect()
        self._client.loop_stop()

    # The station's loop ---------------------------------------------------------

    def on_transition(self, old: Port, new: Port, event: Event, at: float) -> None:
        if self._health.connected.is_set():  # events are live only: missed ones are in the records
            self._client.publish(self._topics.events,
                                 payloads.encode(payloads.event(self._topics.station_id, old, new,
                                                                event, at)), qos=0)

    def on_firmware(self, slot: int, build: str, version: str, sha256: str, tool: str) -> None:
        pass  # the record carries it

    def changed(self) -> None:
        """The station changed: publish the ports that did, at most every ``COALESCE_S``."""
        if self._flush is None and self._running:
            self._flush = self._loop.call_later(COALESCE_S, self._publish_ports)

    def _publish_ports(self, every: bool = False) -> None:
        self._flush = None
        if not self._health.connected.is_set():
            return
        snapshot = self._station.snapshot()
        for port in snapshot.ports:
            payload = payloads.port(self._topics.station_id, port, snapshot.now)
            steady = {name: value for name, value in payload.items() if name not in _CHANGING}
            if every or self._sent_ports.get(port.slot) != steady:
                self._sent_ports[port.slot] = steady
                self._client.publish(self._topics.port(port.slot), payloads.encode(payload),
                                     qos=0, retain=True)

    # paho's thread ---------------------------------------------------------------

    def _connected(self) -> None:
        self._client.publish(self._topics.status, ONLINE, qos=1, retain=True)
        try:
            public = keys.load_public(self._state_dir)
        except RecordsUnavailable as error:  # the records' own fault says more; collectors wait
            log.error("fleet: cannot publish the station key: %s", error)
        else:
            self._client.publish(self._topics.key, keys.public_pem(public), qos=1, retain=True)
        self._outbox.wake()
        self._to_loop(self._publish_ports, True)

    def _fault(self, fault: str | None) -> None:
        self._to_loop(self._station.set_fault, FAULT, fault)

    def _to_loop(self, call: Any, *args: Any) -> None:
        if self._running:
            try:
                self._loop.call_soon_threadsafe(call, *args)
            except RuntimeError:  # the loop closed while paho still ran: nobody to tell
                pass
