"""`station ports learn`: build the [hub] ports table by plugging a phone into each port in turn.

A USB 3 hub port has two paths, one per bus (``hw.iphone.usb_topology``); both are
written for its slot, so a USB-C phone keeps its slot whichever bus it is on.

``--write`` edits the config with tomlkit, which keeps every comment and the layout: the
operator's file is theirs, and a hand-rolled edit once missed ``[hub]  # a comment`` and
wrote a second ``[hub]`` table that the next start refused.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import tomlkit

from hw.iphone.usb_scan import UsbUnavailable, scan
from hw.iphone.usb_topology import PortPeers
from station.cli import CommandError, OperationFailed, positive_integer, positive_number
from station.commands.output import print_json
from station.config import PACKAGED_CONFIG, Config

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
    learn.add_argument("--json", action="store_true",
                       help='print {"ports": {PATH: SLOT}, "written": FILE or null}')
    learn.set_defaults(handler=learn_ports)


def learn_ports(args: argparse.Namespace, config: Config, usb_backend: object = None,
                peers: PortPeers | None = None) -> int:
    wanted = args.slots or config.hub.slots
    if wanted > config.hub.slots:  # the table would name slots the config then refuses
        raise CommandError(f"--slots {wanted}: the hub has {config.hub.slots} slots "
                           f"([hub] slots in {config.source})")
    if args.write and config.source in (None, PACKAGED_CONFIG):
        raise CommandError("--write needs the config file to edit: give it with --config FILE")
    learned = _learn(wanted, args.timeout, usb_backend, (peers or PortPeers()).peer)
    if args.write:
        _write_ports(config.source, learned)  # type: ignore[arg-type]  # checked above
    if args.json:
        print_json({"ports": learned, "written": str(config.source) if args.write else None})
    else:
        print(tomlkit.dumps({"hub": {"ports": _inline(learned)}}), end="")
    return 0


def _learn(wanted: int, timeout: float, usb_backend: object,
           peer: Callable[[str], str | None]) -> dict[str, int]:
    """Port path -> slot, for the phones plugged in one after another (progress on stderr)."""
    learned: dict[str, int] = {}
    try:
        already = {phone.port_path for phone in scan(usb_backend).phones}
    except UsbUnavailable as error:
        raise OperationFailed(str(error)) from None
    if already:
        print(f"unplug every phone first (still plugged: {', '.join(sorted(already))})",
              file=sys.stderr)
    for slot in range(1, wanted + 1):
        print(f"slot {slot}: plug a phone into the port for slot {slot}", file=sys.stderr)
        path = _wait_for_new_port(set(learned) | already, timeout, usb_backend)
        if path is None:
            print(f"no new phone within {timeout:.0f} s: stopping at slot {slot - 1}",
                  file=sys.stderr)
            break
        learned[path] = slot
        companion = peer(path)
        if companion is not None:
            learned[companion] = slot
        also = f" (and {companion}, its other half on the USB 3 hub)" if companion else ""
        print(f"slot {slot}: USB port {path}{also}", file=sys.stderr)
    if not learned:
        raise OperationFailed("no port learned")
    return learned


def _wait_for_new_port(known: set[str], timeout: float, usb_backend: object) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = sorted({p.port_path for p in scan(usb_backend).phones} - known)
        if new:
            return new[0]
        time.sleep(POLL_S)
    return None


def with_ports(text: str, learned: dict[str, int]) -> str:
    """``text`` (a config file) with [hub] ports set to ``learned``; every other line, and the
    comments around the ports line, as they were."""
    document = tomlkit.parse(text)
    if "hub" not in document:
        document.add("hub", tomlkit.table())
    document["hub"]["ports"] = _inline(learned)  # type: ignore[index]
    return tomlkit.dumps(document)


def _inline(learned: dict[str, int]) -> tomlkit.items.InlineTable:
    table = tomlkit.inline_table()
    table.update(learned)
    return table


def _write_ports(path: Path, learned: dict[str, int]) -> None:
    try:
        text = with_ports(path.read_text(encoding="utf-8"), learned)
        # Written beside and renamed over: a power cut leaves the old file or the new one.
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except OSError as error:
        raise OperationFailed(f"{path}: cannot write: {error.strerror}") from None
    print(f"wrote [hub] ports to {path}", file=sys.stderr)
