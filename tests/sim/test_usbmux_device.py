"""The gadget phone's side of usbmuxd's USB protocol, fed packets shaped as usbmuxd's device.c sends them.

The real test is ``make hil`` (the real usbmuxd over a real kernel's USB bus); this one pins the
packet formats down on any machine: the version exchange with the short header, SETUP, the
TCP emulation's handshake, acknowledgements and window, and RST for a closed port.
"""
from __future__ import annotations

import socket
import struct
import threading
import time

from hw.gadget.usbmux_device import (HEADER, MAGIC, PROTO_SETUP, PROTO_TCP, PROTO_VERSION, SHORT_HEADER, TCP,
                                     TH_ACK, TH_RST, TH_SYN, MuxDevice)

LOCKDOWN = 62078


class Usbmuxd:
    """usbmuxd's half, as src/device.c builds its packets (send_packet, send_tcp)."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.arrived = threading.Condition()
        self.tx_seq = 0

    def take(self, packet: bytes) -> None:
        with self.arrived:
            self.packets.append(packet)
            self.arrived.notify_all()

    def wait(self, count: int) -> list[bytes]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.packets) >= count, 5), self.packets
            return list(self.packets)

    def version(self) -> bytes:
        return SHORT_HEADER.pack(PROTO_VERSION, 20) + struct.pack(">III", 2, 0, 0)

    def packet(self, protocol: int, body: bytes) -> bytes:
        packet = HEADER.pack(protocol, HEADER.size + len(body), MAGIC, self.tx_seq, 0) + body
        self.tx_seq += 1
        return packet

    def tcp(self, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
        return self.packet(PROTO_TCP, TCP.pack(sport, dport, seq, ack, 5 << 4, flags, 131072 >> 8, 0, 0) + payload)


def tcp_of(packet: bytes) -> tuple[tuple[int, ...], bytes]:
    body = packet[HEADER.size:]
    return TCP.unpack_from(body), body[TCP.size:]


def test_version_setup_connect_exchange_and_refuse():
    host = Usbmuxd()
    daemon_end: list[socket.socket] = []

    def open_port(port: int) -> socket.socket | None:
        if port != LOCKDOWN:
            return None
        ours, theirs = socket.socketpair()
        daemon_end.append(theirs)
        return ours

    phone = MuxDevice("test", host.take, open_port)
    # device_add: version 2.0 with the 8-byte header; the answer must use that header too.
    phone.receive(host.version())
    answer = host.wait(1)[0]
    assert SHORT_HEADER.unpack_from(answer) == (PROTO_VERSION, 20)
    assert struct.unpack_from(">II", answer, 8) == (2, 0)
    phone.receive(host.packet(PROTO_SETUP, b"\x07"))

    # A SYN to lockdownd, split across two bulk reads as a stream: SYN|ACK, ack = seq + 1.
    syn = host.tcp(1, LOCKDOWN, 0, 0, TH_SYN)
    phone.receive(syn[:10])
    phone.receive(syn[10:])
    synack, _ = tcp_of(host.wait(2)[1])
    assert (synack[0], synack[1], synack[3], synack[5]) == (LOCKDOWN, 1, 1, TH_SYN | TH_ACK)
    assert HEADER.unpack_from(host.packets[1])[2] == MAGIC

    # usbmuxd's data reaches the daemon and is acknowledged, so usbmuxd's window moves on.
    phone.receive(host.tcp(1, LOCKDOWN, 1, synack[2] + 1, TH_ACK, b"hello"))
    assert daemon_end[0].recv(5) == b"hello"
    ack, _ = tcp_of(host.wait(3)[2])
    assert ack[3] == 6 and ack[5] == TH_ACK

    # The daemon's answer comes back with exactly ACK set (device_tcp_input resets on anything else).
    daemon_end[0].sendall(b"world")
    data, payload = tcp_of(host.wait(4)[3])
    assert (data[5], payload, data[2]) == (TH_ACK, b"world", synack[2] + 1)

    # A port nobody listens on: RST, which usbmuxd reports as CONNREFUSED.
    phone.receive(host.tcp(2, 49152, 0, 0, TH_SYN))
    refused, _ = tcp_of(host.wait(5)[4])
    assert refused[5] == TH_RST and refused[1] == 2

    # The daemon hanging up resets usbmuxd's connection.
    daemon_end[0].close()
    reset, _ = tcp_of(host.wait(6)[5])
    assert reset[5] == TH_RST and reset[1] == 1


def test_the_phone_waits_for_usbmuxds_window_and_splits_transfers_that_would_not_end():
    host = Usbmuxd()
    ours, theirs = socket.socketpair()
    phone = MuxDevice("test", host.take, lambda port: ours)
    phone.receive(host.version())
    phone.receive(host.packet(PROTO_SETUP, b"\x07"))
    phone.receive(host.packet(PROTO_TCP, TCP.pack(1, LOCKDOWN, 0, 0, 5 << 4, TH_SYN, 1, 0, 0)))  # window 256
    synack, _ = tcp_of(host.wait(2)[1])
    theirs.sendall(b"x" * 1000)
    time.sleep(0.3)
    sent = [tcp_of(p)[1] for p in host.packets[2:]]
    assert sum(map(len, sent)) == 256  # no more than usbmuxd's window before it acknowledges
    phone.receive(host.packet(PROTO_TCP, TCP.pack(1, LOCKDOWN, 1, synack[2] + 1 + 256, 5 << 4, TH_ACK,
                                                  131072 >> 8, 0, 0)))
    deadline = time.monotonic() + 5
    while sum(len(tcp_of(p)[1]) for p in host.packets[2:]) < 1000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(len(tcp_of(p)[1]) for p in host.packets[2:]) == 1000
    # 476 payload bytes would make a 512-byte packet: usbmuxd would read on into the next one.
    count = len(host.packets)
    theirs.sendall(b"y" * 476)
    packets = host.wait(count + 2)[count:]
    assert [len(tcp_of(p)[1]) for p in packets] == [475, 1]
