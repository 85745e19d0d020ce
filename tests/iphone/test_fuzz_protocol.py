"""Fuzzed iBoot USB serial strings and usbmuxd device records (issue 13, item 6).

- iBoot: whatever string a recovery or DFU phone reports, ``parse_iboot_serial`` returns
  an IBootSerial or raises its one error, ``BadSerialString``, with a short one-line message
  naming the tag that is wrong; never another exception.
- usbmuxd: device records go through pymobiledevice3's own parsing (``PlistMuxConnection``,
  as ``list_devices`` and Listen use it) into the phone layer's picture of the hub, beside
  a USB scan with odd serial strings: only a phone on the bus is present, a Network entry
  never is, and each phone the station is told about is well formed.
"""
from __future__ import annotations

import plistlib
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pymobiledevice3.usbmux import PlistMuxConnection

from hw.iphone.iboot import BadSerialString, IBootSerial, parse_iboot_serial
from hw.iphone.layer import UsbPhoneLayer
from hw.iphone.restore import WorkerSetup
from hw.iphone.slots import SlotMap
from hw.iphone.usb_scan import Scan, UsbPhone
from hw.iphone.usb_sysfs import UsbSysfs
from hw.phones import Mode, PhoneArrived

pytestmark = pytest.mark.fuzz

FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NEEDED = ("CPID", "BDID", "ECID")
VALID = ("CPID:8101 CPRV:11 CPFM:03 SCEP:01 BDID:0C ECID:001A2B3C4D5E6F72 IBFL:3C "
         "SRTG:[iBoot-6338.0.0.200.19]")
MESSAGE_LIMIT = 300

# -- iBoot serial strings ----------------------------------------------------------------------

HEX = st.text("0123456789abcdefABCDEF", min_size=1, max_size=16)
ODD_VALUES = st.one_of(
    HEX, st.text("0123456789ABCDEF", min_size=17, max_size=40),  # more than 64 bits
    st.sampled_from(["", "REDACTED", "0x8101", "-1", "+1", "1_0", " 01", "８１０１", "١٢",
                     "[8101]", "[]", "[", "]", "8101]", "\u2028", "0" * 5000]),
    st.text(max_size=20))
TAGS = st.sampled_from(NEEDED + ("CPRV", "CPFM", "SCEP", "IBFL", "SRNM", "SRTG", "SDOM", "NONC"))
SEPARATORS = st.sampled_from([" ", "  ", "\t", "\n", "", ",", " \u00a0", "\u3000"])


@st.composite
def iboot_strings(draw: st.DrawFn) -> str:
    """A real string taken apart and put back wrong: fields dropped, doubled, reordered, changed."""
    fields = [tuple(token.split(":", 1)) for token in VALID.split(" ")]
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["drop", "double", "change", "add", "swap"]))
        at = draw(st.integers(0, max(0, len(fields) - 1)))
        if action == "drop" and fields:
            fields.pop(at)
        elif action == "double" and fields:
            fields.insert(at, (fields[at][0], draw(ODD_VALUES | st.just(fields[at][1]))))
        elif action == "change" and fields:
            fields[at] = (fields[at][0], draw(ODD_VALUES))
        elif action == "add":
            fields.insert(at, (draw(TAGS | st.text("ABCDEFXYZ", min_size=3, max_size=5)), draw(ODD_VALUES)))
        elif action == "swap" and len(fields) > 1:
            fields[0], fields[at] = fields[at], fields[0]
    glue = draw(SEPARATORS)
    return glue.join(f"{name}:{value}" for name, value in fields) + draw(st.sampled_from(["", " ", "\x00"]))


def parsed_or_error(text: Any) -> IBootSerial | BadSerialString:
    try:
        return parse_iboot_serial(text)
    except BadSerialString as error:
        return error


def one_clear_error(error: BadSerialString) -> None:
    message = str(error)
    assert type(error) is BadSerialString
    assert message.startswith("USB serial ") and "\n" not in message and "\u2028" not in message
    assert len(message) <= MESSAGE_LIMIT, len(message)
    assert any(name in message.split(": ", 1)[-1] for name in NEEDED), message


def plausible(parsed: IBootSerial) -> None:
    for value in (parsed.chip_id, parsed.board_id, parsed.ecid):
        assert type(value) is int and 0 <= value < 2**64
    assert isinstance(parsed.serial_number, str) and isinstance(parsed.secure_rom, str)


@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
                      iboot_strings()))
@example(text="")
@example(text="ECID:" + "Z" * 100_000 + " CPID:8101 BDID:0C")
@example(text="CPID:8101 BDID:0C ECID:[00\n1A]")
@example(text="CPID:8101 BDID:0C ECID:0000000000000001 ECID:0000000000000002")
@example(text="CPID:8101 BDID:0C ECID:" + "F" * 17)
@example(text="CPID:８１０１ BDID:0C ECID:01")
@FUZZ
def test_any_iboot_string_is_a_phone_or_one_clear_error(text):
    """A hub shows whatever a phone (or a broken cable) reports: the station names the tag that
    is wrong in one short line, never a traceback."""
    result = parsed_or_error(text)
    if isinstance(result, BadSerialString):
        one_clear_error(result)
    else:
        plausible(result)


@given(cpid=HEX, bdid=HEX, ecid=HEX, extra=st.lists(st.tuples(
    st.sampled_from(["CPRV", "CPFM", "SCEP", "IBFL", "SDOM"]), HEX), max_size=4),
    glue=st.sampled_from([" ", "  ", "\t"]), order=st.randoms(use_true_random=False))
@FUZZ
def test_every_well_formed_string_is_read_whatever_the_order(cpid, bdid, ecid, extra, glue, order):
    """Tags in any order and spacing, values of 1 to 16 hex digits: the phone is identified."""
    fields = [("CPID", cpid), ("BDID", bdid), ("ECID", ecid), *extra]
    order.shuffle(fields)
    parsed = parse_iboot_serial(glue.join(f"{name}:{value}" for name, value in fields))
    assert (parsed.chip_id, parsed.board_id, parsed.ecid) == (int(cpid, 16), int(bdid, 16), int(ecid, 16))


@given(name=st.sampled_from(NEEDED), first=HEX, second=HEX)
@FUZZ
def test_a_tag_given_twice_with_two_values_is_refused(name, first, second):
    """Two ECIDs (or chips, or boards) in one string: which phone it is cannot be told, so it is
    not guessed (the last one would have been taken)."""
    values = {"CPID": "8101", "BDID": "0C", "ECID": "001A2B3C4D5E6F72"}
    text = " ".join(f"{tag}:{value}" for tag, value in values.items()) + f" {name}:{first} {name}:{second}"
    result = parsed_or_error(text)
    if first == second == values[name]:
        assert isinstance(result, IBootSerial)
    else:
        assert isinstance(result, BadSerialString), result
        one_clear_error(result)
        assert f"{name} given twice" in str(result)


# -- usbmuxd device records and the USB scan ---------------------------------------------------

SLOTS = 4
UDIDS = ("00008101-001A2B3C4D5E6F72", "00008110-0000001122334455",
         "f0e1d2c3b4a5968778695a4b3c2d1e0f12345678")  # the last: a legacy 40-hex-digit UDID
PLIST_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\ufffe\uffff"),
                     max_size=40)
PLIST_INTS = st.integers(-2**63, 2**64 - 1)
PLIST_VALUES = st.one_of(PLIST_TEXT, st.booleans(), PLIST_INTS, st.binary(max_size=8),
                         st.lists(PLIST_INTS, max_size=2), st.dictionaries(PLIST_TEXT, PLIST_INTS, max_size=2))
SERIALS = st.one_of(
    st.sampled_from(UDIDS), st.sampled_from([u.replace("-", "") for u in UDIDS]),
    st.sampled_from([u.lower() for u in UDIDS]),
    st.sampled_from(["", "-", "00008101+01A2B3C4D5E6F72", "00008101 01A2B3C4D5E6F72 ",
                     "00008101_1_2_3_4_5_6_7_8", "0000810١00000000000000000", "../../etc/passwd",
                     "00008101-" + "F" * 40, VALID]),
    PLIST_TEXT)
CONNECTION_TYPES = st.one_of(st.just("USB"), st.just("USB"), st.sampled_from(["Network", "usb", "USB ", ""]),
                            PLIST_VALUES)  # mostly what usbmuxd sends, so that phones do arrive
ABSENT = object()


@st.composite
def mux_records(draw: st.DrawFn) -> dict[str, Any]:
    """An Attached entry as usbmuxd sends it, with its properties changed or left out."""
    device_id = draw(PLIST_INTS | st.integers(1, 6))
    properties = {"ConnectionSpeed": 480_000_000, "ConnectionType": draw(CONNECTION_TYPES),
                  "DeviceID": device_id, "LocationID": draw(PLIST_VALUES),
                  "ProductID": 0x12A8, "SerialNumber": draw(SERIALS),
                  "USBSerialNumber": draw(SERIALS)}
    for key in draw(st.sets(st.sampled_from(["ConnectionSpeed", "DeviceID", "LocationID", "ProductID",
                                             "USBSerialNumber"]))):
        del properties[key]
    record = {"MessageType": "Attached", "DeviceID": device_id, "Properties": properties}
    return plistlib.loads(plistlib.dumps(record))  # what crosses the socket


@st.composite
def usb_phones(draw: st.DrawFn, mux_serials: list[str]) -> list[UsbPhone]:
    """What a scan of the bus reads: serial strings usbmuxd also lists, and odd ones."""
    phones = []
    for slot in draw(st.sets(st.integers(1, SLOTS + 1), max_size=SLOTS + 1)):  # slot 5: a port not in the table
        mode = draw(st.sampled_from(list(Mode)))
        if mode is Mode.NORMAL:
            choices = [s.replace("-", "") for s in mux_serials if isinstance(s, str)] or [""]
            serial = draw(st.one_of(st.sampled_from(choices), st.sampled_from(choices), SERIALS))
        else:
            serial = draw(iboot_strings() | st.text(max_size=60))
        phones.append(UsbPhone(f"1-1.{slot}", mode, serial, 1, slot + 10))
    return phones


def mux_devices(records: list[dict[str, Any]]) -> list[Any]:
    """The records through pymobiledevice3's own parsing, as the layer receives them."""
    left, right = socket.socketpair()
    try:
        connection = PlistMuxConnection(left)
        for record in records:
            connection._process_device_state(record)
        return list(connection.devices)
    finally:
        left.close()
        right.close()


def layer(tmp_path: Path, events: list[object]) -> UsbPhoneLayer:
    setup = WorkerSetup(home=tmp_path / "home", log_dir=tmp_path / "logs", timeout_s=1, environment={})
    phones = UsbPhoneLayer(SlotMap({f"1-1.{s}": s for s in range(1, SLOTS + 1)}, SLOTS), setup,
                           sysfs=UsbSysfs(tmp_path / "sysfs"))  # no device there: the scan alone places phones
    phones._emit = events.append
    phones._mux_up, phones._mux_since = True, 0.0
    return phones


@given(data=st.data())
@settings(FUZZ, max_examples=600)
def test_odd_usbmuxd_records_and_serials_never_make_a_phone_out_of_nothing(tmp_path, data):
    """Only a phone usbmuxd lists over USB *and* the bus shows is present in normal mode; a
    recovery or DFU phone is present only when its serial string identifies it; each one the
    station is told about has the types it relies on."""
    records = data.draw(st.lists(mux_records(), max_size=4))
    devices = mux_devices(records)
    scan = Scan(data.draw(usb_phones([d.serial for d in devices])), [])
    events: list[object] = []
    phones = layer(tmp_path, events)
    phones._take_mux_list(devices)
    phones._take_scan(scan, phones._begin_scan())
    phones._reconcile()
    arrived = [e for e in events if isinstance(e, PhoneArrived)]
    on_slot = {phones.slot_map.slot_for(p.port_path): p for p in scan.phones}  # as the layer placed them
    for arrival in arrived:
        device = arrival.device
        event(f"a {device.mode.value} phone arrived")
        assert 1 <= arrival.slot <= SLOTS
        assert isinstance(device.key, str) and isinstance(device.udid, str) and isinstance(device.serial, str)
        assert device.ecid is None or (type(device.ecid) is int and 0 <= device.ecid < 2**64)
        usb = on_slot.get(arrival.slot)
        if device.mode is Mode.NORMAL:
            # A phone on USB and Wi-Fi is listed twice (one DeviceID each): the USB entry is the one.
            assert any(d.serial == device.udid and d.connection_type == "USB" for d in devices), (device, devices)
            assert any(p.mode is Mode.NORMAL and p.serial == device.udid.replace("-", "")
                       for p in scan.phones), (device, scan)
        else:
            assert usb is not None and usb.mode is device.mode
            assert parse_iboot_serial(usb.serial).ecid == device.ecid
    assert len({e.slot for e in arrived}) == len(arrived)


@pytest.mark.parametrize("serial", [12345, b"\x01", [1]], ids=["int", "bytes", "list"])
def test_an_entry_without_a_text_serial_is_dropped(tmp_path, serial):
    """usbmuxd always sends SerialNumber as text; an entry with anything else names no phone and
    is dropped with a log line. (One with no SerialNumber at all never reaches the layer:
    pymobiledevice3's parser raises KeyError on it; tests/iphone/test_quirks.py covers that.)"""
    record = {"MessageType": "Attached", "DeviceID": 7,
              "Properties": {"ConnectionType": "USB", "DeviceID": 7, "SerialNumber": serial}}
    phones = layer(tmp_path, [])
    phones._take_mux_list(mux_devices([plistlib.loads(plistlib.dumps(record))]))
    phones._take_scan(Scan([UsbPhone("1-1.1", Mode.NORMAL, "0", 1, 11)], []), phones._begin_scan())
    phones._reconcile()
    assert phones._told == {}


def test_the_valid_string_is_the_documented_phone():
    """The example in the docstring of hw.iphone.iboot is read as written."""
    parsed = parse_iboot_serial(VALID)
    assert (parsed.chip_id, parsed.board_id, parsed.ecid, parsed.secure_rom) == (
        0x8101, 0x0C, 0x001A2B3C4D5E6F72, "iBoot-6338.0.0.200.19")
    assert re.fullmatch(r"iBoot-[\d.]+", parsed.secure_rom)


def test_a_phone_usbmuxd_lists_on_usb_and_the_bus_shows_arrives_once(tmp_path):
    """The property above is not empty: the ordinary case makes one normal-mode phone, and its
    Wi-Fi entry (same serial, another DeviceID) adds nothing."""
    records = [{"MessageType": "Attached", "DeviceID": devid,
                "Properties": {"ConnectionType": kind, "DeviceID": devid, "SerialNumber": UDIDS[0]}}
               for devid, kind in ((3, "USB"), (4, "Network"))]
    events: list[object] = []
    phones = layer(tmp_path, events)
    phones._take_mux_list(mux_devices(records))
    phones._take_scan(Scan([UsbPhone("1-1.2", Mode.NORMAL, UDIDS[0].replace("-", ""), 1, 12)], []), phones._begin_scan())
    phones._reconcile()
    [arrival] = [e for e in events if isinstance(e, PhoneArrived)]
    assert (arrival.slot, arrival.device.udid, arrival.device.ecid) == (2, UDIDS[0], 0x001A2B3C4D5E6F72)
