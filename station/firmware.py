"""Which IPSW a phone gets: the station's view of the IPSW cache.

Choosing may verify a changed file (hashing gigabytes), so the station calls
``select`` from a thread. On a real station a phone with no matching IPSW
fails with ``NO IPSW <model>``; a simulated restore can stream synthetic bytes
instead, so the simulation runs on a fresh checkout with an empty cache. A
phone whose only IPSW Apple no longer signs fails with ``NOT SIGNED <build>``
(and what to add) before its restore starts, on a simulated station too: a
restore to it would fail at the signing step, minutes in. The chosen file is
held (``Selection.lease``) until the station releases it when the restore ends.
"""
from __future__ import annotations

import logging

from hw.phones import Device
from station.core import FirmwareSource, NoFirmware
from station.ipsw import IpswError, NoIpswError
from station.ipsw.errors import NotSignedError
from station.ipsw.cache import IpswCache, Selection

log = logging.getLogger(__name__)


class IpswFirmware(FirmwareSource):
    def __init__(self, cache: IpswCache, required: bool) -> None:
        self.cache = cache
        self.required = required
        self._told: set[str] = set()  # what a simulated run has said about streaming synthetic bytes

    def select(self, device: Device) -> Selection | None:
        try:
            return self.cache.select(product_type=device.product_type or None,
                                     chip_id=device.chip_id, board_id=device.board_id, hold=True)
        except NoIpswError as missing:
            if self.required or isinstance(missing, NotSignedError):
                log.error("%s", missing.log_message)
                raise NoFirmware(str(missing)) from None
            self._once(str(missing), f"{missing}: simulated restores of this model stream synthetic bytes")
        except IpswError as error:
            if self.required:
                raise NoFirmware(f"IPSW: {error}") from None
            self._once(str(error), f"IPSW cache: {error}: simulated restores stream synthetic bytes")
        return None

    def _once(self, key: str, text: str) -> None:
        """A simulation without an IPSW is no fault: said once per model (or cache problem) a run."""
        if key not in self._told:
            self._told.add(key)
            log.info("%s", text)
