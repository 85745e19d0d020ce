"""What the commands print for scripts with --json: one JSON document on stdout.

A command that prints a list prints an array, a command about one thing an object; a value
the station does not know is ``null``. A phone has one shape wherever it appears
(``station devices``, ``station run --sim``). The README's "Exit codes and JSON output"
lists every command's shape.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from hw.phones import Device


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def print_json_array(items: Iterable[Any], stream: TextIO | None = None) -> None:
    """An array written one item (one line) at a time: any number of records fits in memory."""
    stream = stream or sys.stdout
    stream.write("[")
    for n, item in enumerate(items):
        stream.write(("\n" if n == 0 else ",\n") + json.dumps(item, ensure_ascii=False))
    stream.write("\n]\n")


def phone_json(device: Device) -> dict[str, Any]:
    return {"mode": device.mode.value, "product_type": device.product_type or None,
            "name": device.name or None, "ios": device.ios_version or None,
            "build": device.build or None, "ecid": ecid_text(device),
            "udid": device.udid or None, "serial": device.serial or None}


def ecid_text(device: Device) -> str | None:
    """As the records keep it: upper-case hex, no 0x."""
    return f"{device.ecid:X}" if device.ecid is not None else None
