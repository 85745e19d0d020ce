"""BuildManifest.plist: what an IPSW holds and which build identity a phone gets.

Parsed with plistlib rather than ipsw_parser's ``BuildManifest``: that class needs an
IPSW object, does not expose ApChipID/ApBoardID, and its ``get_build_identity``
matches Variant by substring, which picks a "Research Customer Erase Install"
identity for "Customer Erase Install". pymobiledevice3's restore still parses the
manifest itself (through ``reader.open_for_restore``); this module only decides.
"""
from __future__ import annotations

import plistlib
import re
import struct
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

from hw.ipsw_archive import IpswArchive
from station.ipsw.errors import IpswError, printable, shown
from station.ipsw.models import Board

MANIFEST_MEMBER = "BuildManifest.plist"
ERASE_VARIANT = "Customer Erase Install (IPSW)"
# The largest real iPhone manifest we hold is ~1 MB (iOS 26.2.1 for iPhone13,2 + 13,3, ../shared).
# The bound keeps memory small and parse time short: expat 2.5 scans one large token (a comment, a
# tag) again from its start for every 2 KiB plistlib feeds it, ~4 s for a 4 MiB comment here.
MAX_MANIFEST_SIZE = 4 << 20

# Shapes of the fields the station sorts, matches and shows: a 5000-digit version would make
# int() raise for every phone of the model, a newline would break a one-line message.
_VERSION = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){0,3}")  # 18.0.1
_BUILD = re.compile(r"[0-9]{1,3}[A-Z][0-9]{1,5}[a-z]?")  # 22A3370, 21A5248v (a beta)
_PRODUCT_TYPE = re.compile(r"[A-Za-z]{1,16}[0-9]{1,3},[0-9]{1,3}")  # iPhone14,7
_WORD = re.compile(r"[A-Za-z0-9,._-]{1,64}")  # DeviceClass d27ap, RestoreBehavior Erase
_LINE = re.compile(r"[ -~]{0,200}")  # Variant: printable ASCII
_HEX = re.compile(r"(0[xX])?[0-9a-fA-F]{1,8}")  # ApChipID 0x8110
_PATH = re.compile(r"[^\x00-\x1f\x7f]{1,1024}")  # a member name: no control characters
_KINDS = {dict: "a dictionary", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
          float: "a real", bytes: "data", datetime: "a date", plistlib.UID: "a UID"}


@dataclass(frozen=True)
class Identity:
    index: int
    device_class: str
    variant: str
    restore_behavior: str | None  # absent in Research identities
    chip_id: int | None
    board_id: int | None
    paths: tuple[tuple[str, str], ...] = ()  # (component, Info.Path) of its Manifest, e.g. ("OS", "096-....dmg")

    def fits(self, board: Board) -> bool:
        if self.chip_id is not None and self.board_id is not None:
            return (self.chip_id, self.board_id) == (board.chip_id, board.board_id)
        return self.device_class.lower() == board.board_config

    @property
    def is_customer_erase(self) -> bool:
        # Research variants contain the customer string ("Research Customer Erase Install (IPSW)")
        # and one published edit even gives them RestoreBehavior=Erase: exclude them by name.
        return self.restore_behavior == "Erase" and "research" not in self.variant.lower()


@dataclass(frozen=True)
class Manifest:
    build: str
    version: str
    product_types: tuple[str, ...]
    identities: tuple[Identity, ...]

    def erase_identity(self, board: Board) -> Identity | None:
        """The Erase identity for ``board``: exact customer variant first, never Research."""
        fitting = [i for i in self.identities if i.fits(board) and i.is_customer_erase]
        exact = [i for i in fitting if i.variant == ERASE_VARIANT]
        return (exact or fitting or [None])[0]

    def missing_files(self, members: Collection[str]) -> list[str]:
        """Files the customer Erase identities name that are not in ``members``: "x.dmg (OS of build identity #2)"."""
        missing: dict[str, str] = {}
        for identity in self.identities:
            if identity.is_customer_erase:
                for component, path in identity.paths:
                    if path not in members:
                        missing.setdefault(path, f"{printable(path)} ({printable(component)} of build identity "
                                                 f"#{identity.index})")
        return list(missing.values())


_MISSING = object()


class _Invalid(ValueError):
    """What is wrong with a field, for the one line."""


def parse_manifest(data: bytes, where: str) -> Manifest:
    """``where`` names the file in error messages."""
    try:
        try:
            plist = plistlib.loads(data)
        except RecursionError:  # plistlib reads a binary plist recursively: 5000 nested arrays
            raise _Invalid("nested too deep") from None
        except (ValueError, ExpatError, TypeError, OverflowError, IndexError, KeyError, struct.error) as error:
            raise _Invalid(f"not a plist: {printable(str(error)) or type(error).__name__}") from None
        if not isinstance(plist, dict):
            raise _Invalid(f"the plist is {_kind(plist)}, not a dictionary")
        version = _text(plist, "ProductVersion", _VERSION, "an iOS version")
        build = _text(plist, "ProductBuildVersion", _BUILD, "a build number")
        product_types = tuple(_shaped(value, f"SupportedProductTypes[{n}]", _PRODUCT_TYPE, "a ProductType")
                              for n, value in enumerate(_field(plist, "SupportedProductTypes", list)))
        identities = tuple(_identity(n, raw) for n, raw in enumerate(_field(plist, "BuildIdentities", list)))
        return Manifest(build=build, version=version, product_types=product_types, identities=identities)
    except _Invalid as error:
        raise IpswError(f"{where}: {MANIFEST_MEMBER} is not a valid build manifest ({error})") from None


def read_manifest(ipsw_path: Path, where: str | None = None) -> Manifest:
    """The BuildManifest of an IPSW; ``where`` names it in error messages (default: its file name)."""
    archive = IpswArchive(ipsw_path, where)
    where = archive.label
    info = archive.getinfo(MANIFEST_MEMBER)
    if info is None:
        raise IpswError(f"{where}: no {MANIFEST_MEMBER} in the zip (not an IPSW)")
    size = max(info.compress_size, info.file_size)
    if size > MAX_MANIFEST_SIZE:  # refused unread
        raise IpswError(f"{where}: {MANIFEST_MEMBER} is {size} bytes, more than a build manifest's "
                        f"{MAX_MANIFEST_SIZE}")
    data = archive.read_small(MANIFEST_MEMBER, MAX_MANIFEST_SIZE)  # bounded whatever the header says
    if len(data) > MAX_MANIFEST_SIZE:
        raise IpswError(f"{where}: {MANIFEST_MEMBER} is more than a build manifest's {MAX_MANIFEST_SIZE} bytes")
    return parse_manifest(data, where)


def _identity(index: int, raw: Any) -> Identity:
    where = f"BuildIdentities[{index}]"
    if not isinstance(raw, dict):
        raise _Invalid(f"{where} is {_kind(raw)}, not a dictionary")
    info = _field(raw, "Info", dict, where)
    paths = []
    for component, entry in _field(raw, "Manifest", dict, where, {}).items():
        component_info = entry.get("Info") if isinstance(entry, dict) else None
        path = component_info.get("Path") if isinstance(component_info, dict) else None
        if path is not None:  # FTAB components (ftap, rfta...) have no Path
            name = f"{where}.Manifest.{printable(str(component))}.Info.Path"
            paths.append((str(component), _shaped(path, name, _PATH, "a file name")))
    return Identity(index=index, device_class=_text(info, "DeviceClass", _WORD, "a board", f"{where}.Info"),
                    variant=_text(info, "Variant", _LINE, "a variant", f"{where}.Info", ""),
                    restore_behavior=_text(info, "RestoreBehavior", _WORD, "a restore behavior", f"{where}.Info",
                                           None),
                    chip_id=_hex(raw, "ApChipID", where), board_id=_hex(raw, "ApBoardID", where), paths=tuple(paths))


def _field(plist: dict[Any, Any], key: str, kind: type, where: str = "", default: Any = _MISSING) -> Any:
    if key not in plist:
        if default is _MISSING:
            raise _Invalid(f"missing {_name(where, key)}")
        return default
    value = plist[key]
    if not isinstance(value, kind):
        raise _Invalid(f"{_name(where, key)} is {_kind(value)}, not {_KINDS[kind]}")
    return value


def _text(plist: dict[Any, Any], key: str, shape: re.Pattern[str], what: str, where: str = "",
          default: Any = _MISSING) -> Any:
    if key not in plist and default is not _MISSING:
        return default
    return _shaped(_field(plist, key, str, where), _name(where, key), shape, what)


def _shaped(value: Any, name: str, shape: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{name} is {_kind(value)}, not a string")
    if not shape.fullmatch(value):
        raise _Invalid(f"{name} {shown(value)} is not {what}")
    return value


def _hex(raw: dict[Any, Any], key: str, where: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 0xFFFFFFFF:
            return value
        raise _Invalid(f"{_name(where, key)} is out of range")
    return int(_shaped(value, _name(where, key), _HEX, "a hex number"), 16)


def _name(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind(value: Any) -> str:
    return next((text for kind, text in _KINDS.items() if isinstance(value, kind)), type(value).__name__)
