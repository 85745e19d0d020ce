"""A paho-mqtt client set up from [mqtt], and what its connection problems are called.

paho runs its own network thread (``loop_start``): it connects in the background
(``connect_async``: a broker that is down never delays whoever starts it), and
reconnects with a doubling delay up to ``RECONNECT_MAX_S``. Every change of the
connection is one log line (``Health``), never a traceback, and repeats are not logged.
"""
from __future__ import annotations

import logging
import ssl
import sys
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from station.config import MqttSection

log = logging.getLogger(__name__)

RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 30


class LinkError(Exception):
    """The config's TLS files cannot be used; ``str`` is the one line to show."""


def client(config: MqttSection, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    """A client with the config's credentials; MQTT v5, so that a PUBACK can say no.
    ``manual_ack``: a received QoS 1 message is acknowledged only by ``client.ack``."""
    made = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                       manual_ack=manual_ack)
    if config.username:
        made.username_pw_set(config.username, config.password or None)
    made.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    # A callback that raises is one log line; else it would end paho's thread, and with it
    # every reconnection, without a word.
    made.suppress_exceptions = True
    made.on_log = _callback_errors
    return made


def _callback_errors(_client: mqtt.Client, _userdata: object, level: int, line: str) -> None:
    """Of paho's own log, only a callback that raised: the rest (each try while the broker is
    away, at ERROR) is what ``Health`` says once."""
    if line.startswith("Caught exception in"):
        log.error("mqtt: %s", line)


def connect(made: mqtt.Client, config: MqttSection, *, session_expiry_s: int = 0) -> None:
    """Connect in the background and keep connecting. ``session_expiry_s`` > 0 with a fixed
    client id keeps the session (and the QoS 1 messages for it) at the broker while away.

    Raises ``LinkError`` when [mqtt] tls is on and its CA file cannot be used."""
    if config.tls:
        try:
            made.tls_set(ca_certs=str(config.ca_file) if config.ca_file else None)
        except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
            raise LinkError(f"[mqtt] ca_file {config.ca_file}: {error}") from None
    properties = None
    if session_expiry_s:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry_s
    made.connect_async(config.host, config.port, keepalive=round(config.keepalive_s),
                       clean_start=session_expiry_s == 0, properties=properties)
    made.loop_start()


class Health:
    """The connection's state as one short fault text (None: connected) and one log line per change.

    ``on_change(fault)`` is called on paho's thread. Install it with ``watch(client)``: it takes
    ``on_connect``, ``on_disconnect`` and ``on_connect_fail``, and calls ``on_connected`` after
    each successful connection.
    """

    def __init__(self, where: str, on_change: Callable[[str | None], None] = lambda _: None,
                 on_connected: Callable[[], None] = lambda: None, *, tls: bool = False) -> None:
        self._where = where
        self._tls = tls
        self._on_change = on_change
        self._on_connected = on_connected
        self._said: str | None = ""  # the last line logged ("" before the first)
        self._answered = False  # the broker answered this connection's CONNECT (yes or no)
        self.connected = threading.Event()

    def watch(self, made: mqtt.Client) -> None:
        made.on_connect = self._connect
        made.on_disconnect = self._disconnect
        made.on_connect_fail = self._connect_fail

    def _connect(self, _client: mqtt.Client, _userdata: object, _flags: object,
                 reason: mqtt.ReasonCode, _properties: object) -> None:
        self._answered = True
        if reason.is_failure:
            self._report("BROKER REFUSED", f"refused the connection: {reason}")
            return
        self.connected.set()
        self._report(None, "connected")
        self._on_connected()

    def _disconnect(self, _client: mqtt.Client, _userdata: object, _flags: object,
                    reason: mqtt.ReasonCode, _properties: object) -> None:
        was, answered = self.connected.is_set(), self._answered
        self.connected.clear()
        self._answered = False
        if was and reason != 0:  # 0: we said goodbye ourselves
            self._report("NO BROKER", f"connection lost ({reason}); reconnecting")
        elif not answered:  # something listens there, but it does not speak MQTT (or TLS)
            self._report("NO BROKER", f"no MQTT answer ({reason}): is this the broker's "
                                      "address and port, with TLS as [mqtt] tls says?")

    def _connect_fail(self, _client: mqtt.Client, _userdata: object) -> None:
        # paho calls this inside its ``except OSError``: the exception is the reason.
        error = sys.exc_info()[1]
        if isinstance(error, ssl.SSLError | ssl.CertificateError):
            self._report("BROKER TLS", f"TLS failed: {error}")
        elif self._tls and isinstance(error, ConnectionResetError):
            # A plain MQTT port hangs up on a TLS hello: the likeliest cause by far.
            self._report("BROKER TLS", "TLS failed: the broker hung up on the TLS handshake "
                                       "(is its port a TLS port?)")
        else:
            self._report("NO BROKER", f"cannot connect: {error or 'unknown error'}; retrying")

    def _report(self, fault: str | None, line: str) -> None:
        if line == self._said:
            return
        self._said = line
        (log.info if fault is None else log.error)("mqtt %s: %s", self._where, line)
        self._on_change(fault)
