"""`station devices`: the phones plugged in now, from usbmuxd and libusb (or the simulator).

The backend is the one `station run` would use (``[hardware] backend``, or
``STATION_BACKEND``); ``--sim SCENARIO`` is the simulated bench with that scenario's phones
plugged in. The lock column is what the station last recorded for the phone, not a check
made now: `devices` asks the phone nothing that could change its state.
"""
from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from hw.backends import BACKENDS, UnknownBackend, backend_name
from hw.clock import Clock
from hw.iphone.layer import UsbPhoneLayer
from hw.iphone.usb_scan import UsbUnavailable
from hw.phones import Device
from station.cli import CommandError, OperationFailed
from station.commands.output import ecid_text, phone_json, print_json
from station.commands.run import own_state
from station.config import Config
from station.records import db
from station.scenario import configure, load_scenario

COLUMNS = (("slot", "SLOT"), ("mode", "MODE"), ("model", "MODEL"), ("ios", "IOS"), ("ecid", "ECID"),
           ("serial", "SERIAL"), ("last_lock_check", "LAST LOCK CHECK"))
Survey = tuple[dict[int, Device], list[str]]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "devices", help="list the phones plugged in now",
        description="List the phones plugged in now. LAST LOCK CHECK is the lock result the "
                    "station last recorded for the phone, not a check made now. Exit 1 when "
                    "the USB bus cannot be read, or it holds phones and none could be listed.")
    parser.add_argument("--json", action="store_true", help="a JSON array, one object per phone")
    parser.add_argument("--sim", metavar="SCENARIO",
                        help="list the phones of a simulated bench with this scenario's phones")
    parser.set_defaults(handler=list_devices)


def list_devices(args: argparse.Namespace, config: Config) -> int:
    scenario = load_scenario(args.sim) if args.sim else None
    try:
        backend = "sim" if scenario is not None else backend_name(config.hardware.backend)
    except UnknownBackend as error:
        raise CommandError(str(error)) from None
    if backend == "sim":
        config = own_state(config)
    if scenario is not None:
        config = configure(config, scenario)
    elif backend == "sim":
        print("note: the simulated bench has no phones without --sim SCENARIO", file=sys.stderr)
    layer = BACKENDS[backend].open_phones(config, scenario, Clock())
    present, problems = asyncio.run(SURVEYS[backend](layer))
    rows = [_row(slot, device, _last_lock(config, device)) for slot, device in sorted(present.items())]
    if args.json:
        print_json(rows)
    else:
        _print_table(rows)
    for problem in problems:
        print(f"note: {problem}", file=sys.stderr)
    return 0


async def _survey(layer: UsbPhoneLayer) -> Survey:
    """The phones listed, and what could not be seen; OperationFailed when nothing was listed
    but the bus holds phones (usbmuxd down, a phone's strings unreadable): an empty list
    would read as "no phones". usbmuxd down with an empty bus is no phones (udev starts
    usbmuxd on demand: it is not running while no iPhone is plugged in)."""
    try:
        present, problems = await layer.survey()
        if not present and problems:
            bus = await asyncio.to_thread(layer.scanner.scan)
            if bus.phones or bus.problems:
                raise OperationFailed("phones on the bus could not be listed: " + "; ".join(problems))
    except UsbUnavailable as error:
        raise OperationFailed(str(error)) from None
    return present, problems


async def _survey_bench(phones: Any) -> Survey:
    """Plug every scenario phone into the simulated bench at once, then look."""
    with phones.simulation():
        for spec in phones.scenario.phones:
            phones.plug(spec)
        phones.bench.settle()
        return await _survey(phones)


SURVEYS: dict[str, Callable[[Any], Awaitable[Survey]]] = {"pi": _survey, "sim": _survey_bench}


def _row(slot: int, device: Device, lock: dict[str, str] | None) -> dict[str, Any]:
    return {"slot": slot, **phone_json(device), "last_lock_check": lock}


def _print_table(rows: list[dict[str, Any]]) -> None:
    cells = [[_cell(key, row) for key, _ in COLUMNS] for row in rows]
    widths = [max([len(title)] + [len(line[n]) for line in cells]) for n, (_, title) in enumerate(COLUMNS)]
    for line in [[title for _, title in COLUMNS], *cells]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _cell(key: str, row: dict[str, Any]) -> str:
    if key == "model":
        return f"{row['name']} ({row['product_type']})" if row["name"] else row["product_type"] or "-"
    if key == "last_lock_check":
        lock = row[key]
        if lock is None:
            return "-"
        when = datetime.fromisoformat(lock["at"]).astimezone().strftime("%Y-%m-%d %H:%M") if lock["at"] else ""
        return f"{lock['result']} {when}".rstrip()
    value = row[key]
    return "-" if value is None else str(value)


def _last_lock(config: Config, device: Device) -> dict[str, str] | None:
    """The lock result the station last recorded for this phone, and when, if it has seen it."""
    ecid = ecid_text(device)
    if ecid is None:
        return None
    try:
        conn = db.open_existing(config.station.state_dir)
    except Exception:  # noqa: BLE001 - no records yet (or none readable): nothing known
        return None
    try:
        row = conn.execute("SELECT lock_result, lock_checked_at FROM sessions WHERE ecid = ? "
                           "AND lock_result != '' ORDER BY id DESC LIMIT 1", (ecid,)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return {"result": row[0], "at": row[1]} if row else None
