"""iBoot serial strings: real ones from ../shared, and the strange ones a hub can show."""
from __future__ import annotations

import json

import pytest

from hw import models
from hw.iphone.iboot import BadSerialString, parse_iboot_serial

RECOVERY = ("SDOM:01 CPID:8015 CPRV:11 CPFM:03 SCEP:01 BDID:0E ECID:000C2C680044E02E "
            "IBFL:3D SRNM:[FK1WT6BPJCLH]")


def test_recovery_string_carries_the_serial_number_and_no_secure_rom():
    parsed = parse_iboot_serial(RECOVERY)
    assert (parsed.chip_id, parsed.board_id, parsed.ecid) == (0x8015, 0x0E, 0x000C2C680044E02E)
    assert parsed.serial_number == "FK1WT6BPJCLH" and not parsed.is_dfu


def test_real_dfu_strings_identify_their_model(shared_data):
    examples = json.loads((shared_data / "device_table.json").read_text())["serial_string_examples"]
    checked = 0
    for example in examples:
        try:
            parsed = parse_iboot_serial(example["serial"])
        except BadSerialString as error:
            assert "ECID" in str(error)  # the masked / REDACTED ECIDs of public posts
            continue
        assert parsed.is_dfu
        model = models.by_chip_board(parsed.chip_id, parsed.board_id)
        expected = example.get("expected_product_type")
        assert (model.product_type if model else None) == expected, example["serial"]
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("text, message", [
    ("", "USB serial '': no CPID"),
    ("CPID:8110 BDID:18", "USB serial 'CPID:8110 BDID:18': no ECID"),
    ("CPID:8110 BDID:18 ECID:REDACTED", "ECID:REDACTED is not hexadecimal"),
    ("CPID:zz BDID:18 ECID:01", "CPID:zz is not hexadecimal"),
])
def test_strange_strings_are_one_clear_error(text, message):
    with pytest.raises(BadSerialString, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_iboot_serial(text)


def test_order_and_spacing_do_not_matter():
    parsed = parse_iboot_serial("IBFL:3C  ECID:0A   BDID:18 CPID:8110 SRTG:[iBoot-6338.0.0.200.19] ")
    assert (parsed.chip_id, parsed.board_id, parsed.ecid, parsed.secure_rom) == (
        0x8110, 0x18, 0x0A, "iBoot-6338.0.0.200.19")
