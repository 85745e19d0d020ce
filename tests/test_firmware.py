"""Which IPSW a phone gets, as the station sees it: a simulation without one says so once per model."""
from __future__ import annotations

import logging

from hw.phones import Device, Mode
from station.config import IpswSection
from station.firmware import IpswFirmware
from station.ipsw.cache import IpswCache


def phone(product_type: str) -> Device:
    return Device(key=product_type, mode=Mode.NORMAL, product_type=product_type, serial="F2LXQ0J1N7KC")


def test_a_simulated_restore_without_an_ipsw_is_said_once_per_model(tmp_path, caplog):
    (tmp_path / "ipsw").mkdir()
    firmware = IpswFirmware(IpswCache(IpswSection(cache_dir=tmp_path / "ipsw")), required=False)
    with caplog.at_level(logging.DEBUG, logger="station.firmware"):
        for model in ("iPhone14,7", "iPhone14,7", "iPhone15,4", "iPhone14,7"):
            assert firmware.select(phone(model)) is None  # streams synthetic bytes
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "station.firmware"]
    assert said == [
        (logging.INFO, "NO IPSW iPhone14,7: simulated restores of this model stream synthetic bytes"),
        (logging.INFO, "NO IPSW iPhone15,4: simulated restores of this model stream synthetic bytes")]
