"""What the gadget phones write to FunctionFS, and how they take a bad phones file (``make hil``'s input)."""
from __future__ import annotations

import struct

import pytest

from hw.gadget import functionfs
from hw.gadget import __main__ as gadget
from hw.gadget.__main__ import BadPhones, load_phones, main


def test_descriptors_carry_both_speeds_with_their_bulk_packet_sizes():
    blob = functionfs.descriptors([functionfs.Interface(0xFF, 0xFE, 0x02, (0x81, 0x02))], functionfs.ALL_CTRL_RECIP)
    magic, length, flags, full, high = struct.unpack_from("<IIIII", blob)
    assert (magic, length, full, high) == (3, len(blob), 3, 3)  # interface + 2 endpoints per speed
    assert flags == functionfs.HAS_FS_DESC | functionfs.HAS_HS_DESC | functionfs.ALL_CTRL_RECIP
    interface = blob[20:29]
    assert interface[5:8] == bytes([0xFF, 0xFE, 0x02])  # usbmuxd finds the phone by this triple
    endpoints = [struct.unpack_from("<BBBBHB", blob, at) for at in (29, 36, 52, 59)]
    assert [(e[2], e[4]) for e in endpoints] == [(0x81, 64), (0x02, 64), (0x81, 512), (0x02, 512)]


def test_a_setup_event_is_read_as_the_host_sent_it():
    raw = struct.pack("<BBHHHB3x", 0xC0, 0, 0, 0, 255, functionfs.SETUP)
    (event,) = functionfs.events(raw)
    assert (event.name, event.is_in, event.length) == ("SETUP", True, 255)


@pytest.mark.parametrize("text, says", [
    ('[[phone]]\nname = "a"\nslot = 1\nlocked = true\n', "unknown key 'locked'"),
    ('[[phone]]\nname = "a"\n', "needs name and slot"),
    ('[[phone]\n', "phones.toml"),
])
def test_a_bad_phones_file_is_one_line_naming_what_is_wrong(tmp_path, capsys, text, says):
    path = tmp_path / "phones.toml"
    path.write_text(text)
    with pytest.raises(BadPhones, match="phones.toml"):
        load_phones(path)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


def test_a_command_with_no_gadget_phones_running_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gadget, "CONTROL", tmp_path / "control")
    assert main(["send", "plug", "a"]) == 2
    err = capsys.readouterr().err
    assert "no gadget phones running" in err and len(err.strip().splitlines()) == 1
