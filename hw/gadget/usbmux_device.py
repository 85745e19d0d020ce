"""The phone's side of usbmuxd's USB protocol, as usbmuxd's ``src/device.c`` (@2efa75a) expects it.

usbmuxd speaks to a phone over one bulk endpoint pair with packets of its own:

- a header of big-endian fields ``protocol, length`` (8 bytes) until the version exchange is done,
  then ``protocol, length, magic 0xfeedface, tx_seq, rx_seq`` (16 bytes; ``send_packet``);
- protocol 0 VERSION: usbmuxd sends 2.0 first (``device_add``); the phone answers with its own
  version (still with the 8-byte header: ``device_version_input`` runs while ``dev->version`` is 0);
  from 2 on usbmuxd sends one SETUP packet (protocol 2, payload ``07``) and resets its sequence;
- protocol 6 TCP: a 20-byte TCP header (``struct tcphdr``, network order) and the payload. usbmuxd
  opens with SYN (its seq 0, window ``131072 >> 8``), wants exactly SYN|ACK back, else it reports
  CONNREFUSED to its client (``device_tcp_input``); a connected packet must carry exactly ACK, any
  other flags reset the connection. Its window is ``th_win << 8`` and it stops sending when
  ``tx_seq - rx_ack`` reaches it (``update_connection``), so the phone must acknowledge what it took;
- a packet from the phone is one USB transfer: usbmuxd reads 16384 bytes at a time (``USB_MRU``) and
  joins a packet only when a read came back full, so a packet whose length is a multiple of the
  512-byte bulk packet would run into the next one: such a packet is split instead (a real phone
  would end it with a zero-length packet).

Each connection is bridged to a socket whose other end is a simulated daemon (``hw.sim.device``).
"""
from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

PROTO_VERSION, PROTO_CONTROL, PROTO_SETUP, PROTO_TCP = 0, 1, 2, 6
MAGIC = 0xFEEDFACE
SHORT_HEADER = struct.Struct(">II")  # protocol, length (before the version exchange)
HEADER = struct.Struct(">IIIHH")  # protocol, length, magic, tx_seq, rx_seq
VERSION = struct.Struct(">III")  # major, minor, padding
TCP = struct.Struct(">HHIIBBHHH")  # sport, dport, seq, ack, offset << 4, flags, window, checksum, urgent
TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10
USB_MRU = 16384  # usbmuxd usb.h: what one bulk read takes
BULK_PACKET = 512  # high-speed bulk wMaxPacketSize
WINDOW = 131072  # what the phone takes before it acknowledges (usbmuxd's own tx_win)
MAX_PAYLOAD = USB_MRU - HEADER.size - TCP.size

Send = Callable[[bytes], None]
OpenPort = Callable[[int], "socket.socket | None"]


@dataclass
class _Connection:
    sport: int  # usbmuxd's end
    dport: int  # the phone's service port
    sock: socket.socket
    host_next: int  # the next byte of usbmuxd's we expect (what we acknowledge)
    seq: int = 0  # our next byte
    host_acked: int = 0  # how far usbmuxd has acknowledged us
    host_window: int = WINDOW
    open: bool = True
    room: threading.Condition = field(default_factory=threading.Condition)


class MuxDevice:
    """One enumeration's mux: feed it what usbmuxd sends, it answers through ``send``."""

    def __init__(self, name: str, send: Send, open_port: OpenPort) -> None:
        self.name = name
        self._send = send
        self._open_port = open_port
        self._buffer = b""
        self._version = 0
        self._tx_seq = 0
        self._rx_seq = 0xFFFF
        self._lock = threading.Lock()  # one packet on the wire at a time, sequence numbers with it
        self._connections: dict[tuple[int, int], _Connection] = {}

    # -- from usbmuxd ---------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Bytes read from the bulk OUT endpoint: whole packets are handled as they complete."""
        self._buffer += data
        while len(self._buffer) >= SHORT_HEADER.size:
            length = SHORT_HEADER.unpack_from(self._buffer)[1]
            if length < SHORT_HEADER.size:
                logger.error("%s: usbmuxd sent a packet of length %d; dropping what was buffered",
                             self.name, length)
                self._buffer = b""
                return
            if len(self._buffer) < length:
                return
            packet, self._buffer = self._buffer[:length], self._buffer[length:]
            self._packet(packet)

    def _packet(self, packet: bytes) -> None:
        protocol = SHORT_HEADER.unpack_from(packet)[0]
        if protocol == PROTO_VERSION:  # always the short header: a (re)started usbmuxd's first word
            self._version_exchange(packet[SHORT_HEADER.size:])
            return
        if self._version >= 2:
            _, _, _, tx_seq, _ = HEADER.unpack_from(packet)
            self._rx_seq = tx_seq
            body = packet[HEADER.size:]
        else:
            body = packet[SHORT_HEADER.size:]
        if protocol == PROTO_SETUP:
            pass  # 07: usbmuxd's sequence starts again, as does ours (send_packet)
        elif protocol == PROTO_TCP:
            self._tcp(body)
        else:
            logger.warning("%s: usbmuxd sent protocol %d", self.name, protocol)

    def _version_exchange(self, body: bytes) -> None:
        major, minor, _ = VERSION.unpack_from(body)
        logger.info("%s: usbmuxd speaks %d.%d; answering 2.0", self.name, major, minor)
        self.close()  # a usbmuxd that started again: the last one's connections are gone with it
        self._version = 0
        self._write(PROTO_VERSION, VERSION.pack(2, 0, 0))
        self._version = 2  # usbmuxd's SETUP comes next with the long header
        self._tx_seq, self._rx_seq = 0, 0xFFFF

    def _tcp(self, body: bytes) -> None:
        sport, dport, seq, ack, _, flags, window, _, _ = TCP.unpack_from(body)
        payload = body[TCP.size:]
        key = (sport, dport)
        connection = self._connections.get(key)
        if flags & TH_RST:
            if connection is not None:
                self._close(connection, tell_host=False)
            return
        if flags == TH_SYN:
            self._syn(sport, dport, seq, window)
            return
        if connection is None:
            self._segment(sport, dport, 0, seq + len(payload), TH_RST)
            return
        with connection.room:
            connection.host_acked = max(connection.host_acked, ack)
            connection.host_window = window << 8
            connection.room.notify_all()
        if payload:
            connection.host_next = seq + len(payload)
            try:
                connection.sock.sendall(payload)
            except OSError:
                self._close(connection)
                return
            self._ack(connection)

    def _syn(self, sport: int, dport: int, seq: int, window: int) -> None:
        sock = self._open_port(dport)
        if sock is None:
            logger.info("%s: nothing listens on port %d: RST", self.name, dport)
            self._segment(sport, dport, 0, seq + 1, TH_RST)
            return
        logger.debug("%s: connection %d to port %d", self.name, sport, dport)
        connection = _Connection(sport, dport, sock, host_next=seq + 1, host_window=window << 8)
        self._connections[(sport, dport)] = connection
        self._segment(sport, dport, connection.seq, connection.host_next, TH_SYN | TH_ACK)
        connection.seq += 1
        connection.host_acked = connection.seq
        threading.Thread(target=self._pump, args=(connection,), name=f"{self.name}-{dport}",
                         daemon=True).start()

    # -- to usbmuxd -----------------------------------------------------------

    def _pump(self, connection: _Connection) -> None:
        """The daemon's bytes to usbmuxd, within the window usbmuxd gave."""
        while connection.open:
            try:
                data = connection.sock.recv(MAX_PAYLOAD)
            except OSError:
                data = b""
            if not data:
                self._close(connection)
                return
            while data and connection.open:
                with connection.room:
                    connection.room.wait_for(lambda: not connection.open or connection.seq
                                             - connection.host_acked < connection.host_window)
                    room = connection.host_window - (connection.seq - connection.host_acked)
                if not connection.open:
                    return
                piece = _whole_transfer(data[:max(1, min(room, MAX_PAYLOAD))])
                data = data[len(piece):]
                self._segment(connection.sport, connection.dport, connection.seq, connection.host_next,
                              TH_ACK, piece)
                connection.seq += len(piece)

    def _ack(self, connection: _Connection) -> None:
        self._segment(connection.sport, connection.dport, connection.seq, connection.host_next, TH_ACK)

    def _close(self, connection: _Connection, tell_host: bool = True) -> None:
        with connection.room:
            if not connection.open:
                return
            connection.open = False
            connection.room.notify_all()
        self._connections.pop((connection.sport, connection.dport), None)
        if tell_host:
            self._segment(connection.sport, connection.dport, connection.seq, connection.host_next, TH_RST)
        connection.sock.close()

    def close(self) -> None:
        """The phone left the bus: every bridged connection ends."""
        for connection in list(self._connections.values()):
            self._close(connection, tell_host=False)

    def _segment(self, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"") -> None:
        # Our ports are usbmuxd's the other way round; window in units of 256 bytes (th_win << 8).
        header = TCP.pack(dport, sport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (TCP.size // 4) << 4, flags,
                          WINDOW >> 8, 0, 0)
        self._write(PROTO_TCP, header + payload)

    def _write(self, protocol: int, body: bytes) -> None:
        with self._lock:
            if self._version >= 2 and protocol != PROTO_VERSION:
                packet = HEADER.pack(protocol, HEADER.size + len(body), MAGIC, self._tx_seq, self._rx_seq) + body
                self._tx_seq = (self._tx_seq + 1) & 0xFFFF
            else:
                packet = SHORT_HEADER.pack(protocol, SHORT_HEADER.size + len(body)) + body
            try:
                self._send(packet)
            except OSError as error:  # the host is gone: the enumeration ends, nothing to tell
                logger.debug("%s: bulk IN write failed: %s", self.name, error)


def _whole_transfer(piece: bytes) -> bytes:
    """A piece whose packet is not a multiple of the bulk packet size (see the module docstring)."""
    if (HEADER.size + TCP.size + len(piece)) % BULK_PACKET == 0:
        return piece[:-1]
    return piece
