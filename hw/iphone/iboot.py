"""The iBoot USB serial string of a phone in recovery or DFU mode.

``CPID:8110 CPRV:11 CPFM:03 SCEP:01 BDID:18 ECID:001A2B3C4D5E6F70 IBFL:3C SRTG:[iBoot-...]``

Parsed by tag, whatever the order and spacing (as libirecovery does), so that a
string pymobiledevice3's strict ``split(":")`` would reject still identifies the
phone; a string that lacks what the station needs raises one clear error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"([A-Z]{4}):(\[[^\]]*\]|\S*)")


class BadSerialString(ValueError):
    """The USB serial string does not identify a phone; the message says why."""


@dataclass(frozen=True)
class IBootSerial:
    chip_id: int
    board_id: int
    ecid: int
    serial_number: str = ""  # SRNM: recovery only
    secure_rom: str = ""  # SRTG: DFU only
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def is_dfu(self) -> bool:
        return bool(self.secure_rom)


def parse_iboot_serial(text: str) -> IBootSerial:
    tokens = _TOKEN.findall(text or "")
    tags = dict(tokens)
    for name in ("CPID", "BDID", "ECID"):
        if name not in tags:
            raise BadSerialString(f"USB serial {_show(text)}: no {name}")
        values = list(dict.fromkeys(value for tag, value in tokens if tag == name))
        if len(values) > 1:  # which phone it is cannot be told: not guessed
            raise BadSerialString(f"USB serial {_show(text)}: {name} given twice "
                                  f"({_value(values[0])}, {_value(values[1])})")
    return IBootSerial(
        chip_id=_hex(text, "CPID", tags["CPID"]),
        board_id=_hex(text, "BDID", tags["BDID"]),
        ecid=_hex(text, "ECID", tags["ECID"]),
        serial_number=tags.get("SRNM", "").strip("[]"),
        secure_rom=tags.get("SRTG", "").strip("[]"),
        fields=tuple(tags.items()))


def _hex(text: str, name: str, value: str) -> int:
    if not re.fullmatch(r"[0-9A-Fa-f]{1,16}", value):
        raise BadSerialString(f"USB serial {_show(text)}: {name}:{_value(value)} is not hexadecimal")
    return int(value, 16)


def _show(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 120 else shown[:117] + "..."


def _value(value: str) -> str:
    """A tag's value for a one-line message: short, and quoted when it holds what a line cannot."""
    value = value if len(value) <= 40 else value[:37] + "..."
    return value if value.isprintable() else repr(value)
