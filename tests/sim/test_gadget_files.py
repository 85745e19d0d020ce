"""What the gadget phones write to FunctionFS, and how they take a bad phones file (``make hil``'s input)."""
from __future__ import annotations

import errno
import plistlib
import struct
from types import SimpleNamespace

import pytest

from hw.gadget import functionfs
from hw.gadget import __main__ as gadget
from hw.gadget import bus
from hw.gadget.__main__ import BadPhones, load_bench, main, serve_build
from hw.sim.firmware import os_image_of, read_build_manifest
from hw.sim import Mode, phone_named
from hw.sim.tss_server import TssServer
from hw.sim.world import SimWorld


def test_descriptors_carry_both_speeds_with_their_bulk_packet_sizes():
    blob = functionfs.descriptors([functionfs.Interface(0xFF, 0xFE, 0x02, (0x81, 0x02))], functionfs.ALL_CTRL_RECIP)
    magic, length, flags, full, high = struct.unpack_from("<IIIII", blob)
    assert (magic, length, full, high) == (3, len(blob), 3, 3)  # interface + 2 endpoints per speed
    assert flags == functionfs.HAS_FS_DESC | functionfs.HAS_HS_DESC | functionfs.ALL_CTRL_RECIP
    interface = blob[20:29]
    assert interface[5:8] == bytes([0xFF, 0xFE, 0x02])  # usbmuxd finds the phone by this triple
    endpoints = [struct.unpack_from("<BBBBHB", blob, at) for at in (29, 36, 52, 59)]
    assert [(e[2], e[4]) for e in endpoints] == [(0x81, 64), (0x02, 64), (0x81, 512), (0x02, 512)]


def test_recovery_has_as_many_bulk_out_endpoints_as_dummy_hcd_needs_to_number_one_4():
    """The 8th bulk OUT endpoint is the host's 0x04 on dummy_hcd (bus.py); FunctionFS maps the
    endpoints by the descriptors' own addresses, so those must differ."""
    endpoints = bus.RECOVERY_INTERFACE.endpoints
    assert len(endpoints) == 8 and len(set(endpoints)) == 8
    assert not any(address & functionfs.DIR_IN for address in endpoints)
    assert functionfs.endpoint_files(bus.RECOVERY_INTERFACE)[-1] == "ep8"


def test_a_setup_event_is_read_as_the_host_sent_it():
    raw = struct.pack("<BBHHHB3x", 0xC0, 0, 0, 0, 255, functionfs.SETUP)
    (event,) = functionfs.events(raw)
    assert (event.name, event.is_in, event.length) == ("SETUP", True, 255)


@pytest.mark.parametrize("text, says", [
    ('[[phone]]\nname = "a"\nslot = 1\nlocked = true\n', "unknown key 'locked'"),
    ('[[phone]]\nname = "a"\n', "needs name, slot"),
    ('[[ipsw]]\npath = "a.ipsw"\nmodels = ["iPhone14,5"]\n', "[[ipsw]] #1: needs build, ios, models, path"),
    ('[[phone]\n', "phones.toml"),
])
def test_a_bad_phones_file_is_one_line_naming_what_is_wrong(tmp_path, capsys, text, says):
    path = tmp_path / "phones.toml"
    path.write_text(text)
    with pytest.raises(BadPhones, match="phones.toml"):
        load_bench(path)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


def test_a_command_with_no_gadget_phones_running_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gadget, "CONTROL", tmp_path / "control")
    assert main(["send", "plug", "a"]) == 2
    err = capsys.readouterr().err
    assert "no gadget phones running" in err and len(err.strip().splitlines()) == 1


def test_a_build_in_the_phones_file_is_written_signed_and_expected_by_its_models_phones(tmp_path):
    path = tmp_path / "phones.toml"
    ipsw = tmp_path / "cache" / "restore.ipsw"
    path.write_text(f"""
[[phone]]
name = "restorer"
slot = 1
model = "iPhone14,3"

[[phone]]
name = "other"
slot = 2
model = "iPhone14,5"

[[ipsw]]
path = "{ipsw}"
models = ["iPhone14,3"]
ios = "18.2"
build = "22C152"
""")
    bench = load_bench(path)
    signing = TssServer()
    serve_build(bench.builds[0], signing, [phone for _, phone in bench.phones.values()])
    restorer, other = bench.phones["restorer"][1], bench.phones["other"][1]
    assert restorer.os_image == os_image_of(ipsw, restorer.hardware_model)
    assert other.os_image is None  # its ASR takes whatever a restore sends it
    assert signing.answer(_ticket_request(ipsw)).startswith(b"STATUS=0&")  # Apple signs it
    mtime = ipsw.stat().st_mtime_ns
    serve_build(bench.builds[0], signing, [restorer])
    assert ipsw.stat().st_mtime_ns == mtime  # a build already there is used, not written again


def _ticket_request(ipsw):
    identity = plistlib.loads(read_build_manifest(ipsw))["BuildIdentities"][0]
    return plistlib.dumps({"ApChipID": int(identity["ApChipID"], 16), "ApBoardID": int(identity["ApBoardID"], 16),
                           "ApECID": 1, "UniqueBuildID": identity["UniqueBuildID"], "ApNonce": bytes(32),
                           "ApProductionMode": True, "ApSecurityDomain": 1, "@ApImg4Ticket": True})


def test_a_request_the_host_gave_up_on_leaves_the_port_answering_the_next(monkeypatch):
    """A phone that reboots while the host's control request is in flight (iBoot's "go") makes
    FunctionFS cancel it: reading its data stage fails with EIDRM. `make hil` saw that kill the
    port's ep0 thread, and the phone's next recovery enumeration was never answered."""
    world = SimWorld([phone_named("p", mode=Mode.RECOVERY)], reboot_seconds=1.0)
    port = object.__new__(bus._Port)
    port.name, port.world, port.mux = "iphone1", world, None
    port.device = world.attach(world.phones[0])
    face = SimpleNamespace(face="recovery", ep0=-1)
    reads = iter([OSError(errno.EIDRM, "Identifier removed"), b"setenv auto-boot false\0"])

    def read(fd, size):
        result = next(reads)
        if isinstance(result, OSError):
            raise result
        return result

    monkeypatch.setattr(bus.os, "read", read)
    command = functionfs.Event(functionfs.SETUP, 0x40, 0, 0, 0, 23)  # a command with its data stage
    port.event(face, command)  # cancelled: nothing to answer, nothing raised
    port.event(face, command)
    assert world.phones[0].iboot_commands[-1] == "setenv auto-boot false"
    world.close()
