"""`station ports learn`: build the [hub] ports table by plugging a phone into each port in turn.

A USB 3 hub port has two paths, one per bus (``hw.iphone.usb_topology``); both are
written for its slot, so a USB-C phone keeps its slot whichever bus it is on.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from hw.iphone.usb_scan import UsbUnavailable, scan
from hw.iphone.usb_topology import PortPeers
from station.cli import CommandError, positive_integer, positive_number
from station.config import Config

POLL_S = 0.5


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ports", help="map the hub's USB ports to station slots")
    commands = parser.add_subparsers(dest="ports_command", required=True, metavar="COMMAND")
    learn = commands.add_parser("learn", help="plug a phone into each port in turn, slot 1 first")
    learn.add_argument("--slots", type=positive_integer, metavar="N",
                       help="how many ports to learn (default: [hub] slots)")
    learn.add_argument("--timeout", type=positive_number, default=120.0, metavar="S",
                       help="give up when no new port shows a phone for S seconds")
    learn.add_argument("--write", action="store_true",
                       help="write the table into the config file's [hub] section")
    learn.set_defaults(handler=learn_ports)


def learn_ports(args: argparse.Namespace, config: Config, usb_backend: object = None,
                peers: PortPeers | None = None) -> int:
    peer = (peers or PortPeers()).peer
    wanted = args.slots or config.hub.slots
    if wanted > config.hub.slots:  # the table would name slots the config then refuses
        raise CommandError(f"--slots {wanted}: the hub has {config.hub.slots} slots "
                           f"([hub] slots in {config.source})")
    learned: dict[str, int] = {}
    try:
        already = {phone.port_path for phone in scan(usb_backend).phones}
    except UsbUnavailable as error:
        raise CommandError(str(error)) from None
    if already:
        print(f"unplug every phone first (still plugged: {', '.join(sorted(already))})",
              file=sys.stderr)
    for slot in range(1, wanted + 1):
        print(f"slot {slot}: plug a phone into the port for slot {slot}", file=sys.stderr)
        path = _wait_for_new_port(set(learned) | already, args.timeout, usb_backend)
        if path is None:
            print(f"no new phone within {args.timeout:.0f} s: stopping at slot {slot - 1}",
                  file=sys.stderr)
            break
        learned[path] = slot
        companion = peer(path)
        if companion is not None:
            learned[companion] = slot
        also = f" (and {companion}, its other half on the USB 3 hub)" if companion else ""
        print(f"slot {slot}: USB port {path}{also}", file=sys.stderr)
    if not learned:
        raise CommandError("no port learned")
    table = "ports = { " + ", ".join(f'"{p}" = {s}' for p, s in learned.items()) + " }"
    print("[hub]\n" + table)
    if args.write:
        _write_table(config.source, table)
    return 0


def _wait_for_new_port(known: set[str], timeout: float, usb_backend: object) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = sorted({p.port_path for p in scan(usb_backend).phones} - known)
        if new:
            return new[0]
        time.sleep(POLL_S)
    return None


def _write_table(path: Path | None, table: str) -> None:
    """Replace `ports = ...` in [hub] (or add it), keeping every other line and comment."""
    if path is None:
        raise CommandError("--write needs a config file")
    text = path.read_text()
    hub = re.search(r"(?m)^\[hub\]\s*$", text)
    if hub is None:
        text = text.rstrip("\n") + "\n\n[hub]\n" + table + "\n"
    else:
        section_end = re.search(r"(?m)^\[", text[hub.end():])
        end = hub.end() + section_end.start() if section_end else len(text)
        section = text[hub.end():end]
        line = re.compile(r"(?m)^ports\s*=.*$")
        section = line.sub(table, section) if line.search(section) else "\n" + table + section
        text = text[:hub.end()] + section + text[end:]
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)
    print(f"wrote [hub] ports to {path}", file=sys.stderr)
