"""`station devices`: the phones plugged in now, from usbmuxd and libusb (or the simulator)."""
from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from typing import Any

from hw.iphone.layer import UsbPhoneLayer, open_usb_phones
from hw.iphone.usb_scan import UsbUnavailable
from hw.phones import Device
from station.clock import Clock
from station.cli import CommandError
from station.config import Config
from station.records import db
from station.scenario import configure, load_scenario

COLUMNS = ("slot", "mode", "model", "ios", "ecid", "serial", "lock")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("devices", help="list the phones plugged in now")
    parser.add_argument("--json", action="store_true", help="one JSON object per phone")
    parser.add_argument("--sim", metavar="SCENARIO",
                        help="list the phones of a simulated bench with this scenario's phones")
    parser.set_defaults(handler=list_devices)


def list_devices(args: argparse.Namespace, config: Config) -> int:
    if args.sim:
        scenario = load_scenario(args.sim)
        config = configure(config, scenario)
        from hw.simulated import SimulatedPhones  # the simulator only when asked for

        layer: UsbPhoneLayer = SimulatedPhones(config, scenario, Clock())
        present, notes = asyncio.run(_survey_bench(layer))  # type: ignore[arg-type]
    else:
        present, notes = asyncio.run(_survey(open_usb_phones(config, None, None)))
    rows = [_row(slot, device, _last_lock(config, device)) for slot, device in sorted(present.items())]
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in COLUMNS}
        print("  ".join(c.upper().ljust(widths[c]) for c in COLUMNS).rstrip())
        for row in rows:
            print("  ".join(str(row[c]).ljust(widths[c]) for c in COLUMNS).rstrip())
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


async def _survey(layer: UsbPhoneLayer) -> tuple[dict[int, Device], list[str]]:
    try:
        return await layer.survey()
    except UsbUnavailable as error:
        raise CommandError(str(error)) from None


async def _survey_bench(phones: Any) -> tuple[dict[int, Device], list[str]]:
    """Plug every scenario phone into the simulated bench at once, then look."""
    with phones.simulation():
        for spec in phones.scenario.phones:
            phones.plug(spec)
        phones.bench.settle()
        return await _survey(phones)


def _row(slot: int, device: Device, lock: str) -> dict[str, Any]:
    return {"slot": slot, "mode": device.mode.value,
            "model": f"{device.name} ({device.product_type})" if device.name else device.product_type,
            "product_type": device.product_type, "ios": device.ios_version or "-",
            "build": device.build, "ecid": f"{device.ecid:X}" if device.ecid is not None else "-",
            "udid": device.udid, "serial": device.serial or "-", "lock": lock}


def _last_lock(config: Config, device: Device) -> str:
    """The lock status the station last recorded for this phone, if it has seen it."""
    if device.ecid is None:
        return "-"
    try:
        conn = db.open_existing(config.station.state_dir)
    except Exception:  # noqa: BLE001 - no records yet (or none readable): nothing known
        return "-"
    try:
        row = conn.execute("SELECT lock_result FROM sessions WHERE ecid = ? AND lock_result != '' "
                           "ORDER BY id DESC LIMIT 1", (f"{device.ecid:X}",)).fetchone()
    except sqlite3.Error:
        return "-"
    finally:
        conn.close()
    return row[0] if row else "-"

