"""BuildManifest.plist: what an IPSW holds and which build identity a phone gets.

Parsed with plistlib rather than ipsw_parser's ``BuildManifest``: that class needs an
IPSW object, does not expose ApChipID/ApBoardID, and its ``get_build_identity``
matches Variant by substring, which picks a "Research Customer Erase Install"
identity for "Customer Erase Install". pymobiledevice3's restore still parses the
manifest itself (through ``reader.open_for_restore``); this module only decides.
"""
from __future__ import annotations

import plistlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from station.ipsw.errors import IpswError
from station.ipsw.models import Board
from station.ipsw.reader import IpswArchive

MANIFEST_MEMBER = "BuildManifest.plist"
ERASE_VARIANT = "Customer Erase Install (IPSW)"


@dataclass(frozen=True)
class Identity:
    index: int
    device_class: str
    variant: str
    restore_behavior: str | None  # absent in Research identities
    chip_id: int | None
    board_id: int | None

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


def parse_manifest(data: bytes, where: str) -> Manifest:
    """``where`` names the file in error messages."""
    try:
        plist = plistlib.loads(data)
        identities = tuple(_identity(n, raw) for n, raw in enumerate(plist["BuildIdentities"]))
        return Manifest(build=str(plist["ProductBuildVersion"]), version=str(plist["ProductVersion"]),
                        product_types=tuple(map(str, plist["SupportedProductTypes"])),
                        identities=identities)
    except (plistlib.InvalidFileException, ValueError, KeyError, TypeError) as error:
        raise IpswError(f"{where}: {MANIFEST_MEMBER} is not a valid build manifest ({_reason(error)})") from None


def read_manifest(ipsw_path: Path) -> Manifest:
    archive = IpswArchive(ipsw_path)
    if MANIFEST_MEMBER not in archive.namelist():
        raise IpswError(f"{ipsw_path.name}: no {MANIFEST_MEMBER} in the zip (not an IPSW)")
    return parse_manifest(archive.read(MANIFEST_MEMBER), ipsw_path.name)


def _identity(index: int, raw: dict[str, Any]) -> Identity:
    info = raw["Info"]
    return Identity(index=index, device_class=str(info["DeviceClass"]), variant=str(info.get("Variant", "")),
                    restore_behavior=info.get("RestoreBehavior"),
                    chip_id=_hex(raw.get("ApChipID")), board_id=_hex(raw.get("ApBoardID")))


def _hex(value: Any) -> int | None:
    if value is None:
        return None
    return value if isinstance(value, int) else int(str(value), 16)


def _reason(error: Exception) -> str:
    return f"missing {error.args[0]}" if isinstance(error, KeyError) else str(error) or type(error).__name__
