"""The simulated usbmuxd through pymobiledevice3's usbmux client."""
from __future__ import annotations

import asyncio
import plistlib
import socket

import pytest
import usb.core
from pymobiledevice3 import usbmux
from pymobiledevice3.exceptions import (
    BadCommandError,
    BadDevError,
    ConnectionFailedToUsbmuxdError,
    NotPairedError,
)

from hw.sim import Mode

from .conftest import run


async def raw_request(address: str, message: dict, tag: int = 7) -> tuple[int, int, dict | None]:
    """One plist request on a fresh socket, built and parsed with pymobiledevice3's own packet helpers."""
    reader, writer = await asyncio.open_unix_connection(address)
    try:
        writer.write(usbmux.build_usbmuxd_request(1, 8, tag, plistlib.dumps(message)))
        header = await reader.readexactly(4)
        packet = header + await reader.readexactly(int.from_bytes(header, "little") - 4)
        response = usbmux.parse_usbmuxd_response(packet)
        return response.header.version, response.header.tag, plistlib.loads(response.data)
    finally:
        writer.close()


def test_list_devices_shows_normal_mode_phones_only(bench_for, make_phone):
    normal, recovering = make_phone(), make_phone(mode=Mode.RECOVERY, port_path=(1, 9))
    bench_for(normal, recovering)

    devices = run(usbmux.list_devices())

    assert [(d.devid, d.serial, d.connection_type) for d in devices] == [(1, normal.udid, "USB")]
    assert devices[0].ecid == normal.ecid


def test_attached_properties_are_those_of_linux_usbmuxd(bench_for, make_phone):
    phone = make_phone(bus=3, port_path=(1, 4))
    bench = bench_for(phone)

    version, tag, reply = run(raw_request(bench.usbmuxd_address, {"MessageType": "ListDevices"}))

    (usb_device,) = usb.core.find(find_all=True, backend=bench.usb_backend)
    assert (version, tag) == (1, 7)
    assert reply == {"DeviceList": [{
        "MessageType": "Attached",
        "DeviceID": 1,
        "Properties": {
            "ConnectionSpeed": 480000000,
            "ConnectionType": "USB",
            "DeviceID": 1,
            "LocationID": 3 << 16 | usb_device.address,
            "ProductID": 0x12A8,
            "SerialNumber": phone.udid,
        },
    }]}


def test_replug_gives_new_device_id_and_location(bench_for, make_phone):
    phone = make_phone()
    bench = bench_for(phone)
    before = bench.world.device_of(phone)

    bench.world.detach(phone)
    bench.world.attach(phone)
    (device,) = run(usbmux.list_devices())

    assert device.devid == 2
    assert bench.world.device_of(phone).location_id != before.location_id


def test_listen_sees_attach_and_detach(bench_for, make_phone):
    first, second = make_phone(), make_phone(port_path=(1, 8))
    bench = bench_for(first)

    async def scenario() -> list[list[str]]:
        mux = await usbmux.create_mux()
        seen = []
        try:
            await mux.listen()
            await mux.receive_device_state_update()  # the phone already plugged
            seen.append([d.serial for d in mux.devices])
            bench.world.attach(second)
            await mux.receive_device_state_update()
            seen.append([d.serial for d in mux.devices])
            bench.world.detach(first)
            await mux.receive_device_state_update()
            seen.append([d.serial for d in mux.devices])
        finally:
            await mux.close()
        return seen

    assert run(scenario()) == [[first.udid], [first.udid, second.udid], [second.udid]]


def test_a_listen_socket_takes_no_more_commands(bench_for, make_phone):
    bench_for(make_phone())

    async def scenario() -> None:
        mux = await usbmux.create_mux()
        try:
            await mux.listen()
            await mux.receive_device_state_update()
            await mux.get_device_list()
        finally:
            await mux.close()

    with pytest.raises(Exception, match="Result"):
        run(scenario())


def test_unknown_command_and_unknown_device_are_refused(bench_for, make_phone):
    bench_for(make_phone())

    async def scenario(message: dict) -> None:
        mux = await usbmux.create_mux()
        try:
            await mux._send_receive(message)
        finally:
            await mux.close()

    with pytest.raises(BadCommandError):
        run(scenario({"MessageType": "Frobnicate"}))
    with pytest.raises(BadDevError):
        run(scenario({"MessageType": "Connect", "DeviceID": 99, "PortNumber": socket.htons(62078)}))


def test_garbage_gets_no_reply_and_the_daemon_keeps_serving(bench_for, make_phone):
    phone = make_phone()
    bench = bench_for(phone)

    async def garbage() -> bytes:
        reader, writer = await asyncio.open_unix_connection(bench.usbmuxd_address)
        writer.write(usbmux.build_usbmuxd_request(1, 8, 1, b"<plist>not really"))
        writer.write(usbmux.build_usbmuxd_request(1, 8, 2, plistlib.dumps({"NoMessageType": 1})))
        try:
            return await asyncio.wait_for(reader.read(1), 0.3)
        except TimeoutError:
            return b""
        finally:
            writer.close()

    assert run(garbage()) == b""
    assert [d.serial for d in run(usbmux.list_devices())] == [phone.udid]


def test_pair_records_are_kept_and_deleted(bench_for, make_phone):
    phone = make_phone()
    bench = bench_for(phone)

    async def scenario() -> dict:
        mux = await usbmux.create_mux()
        try:
            with pytest.raises(NotPairedError):
                await mux.get_pair_record(phone.udid)
            await mux.save_pair_record(phone.udid, 1, plistlib.dumps({"HostID": "H"}))
            record = await mux.get_pair_record(phone.udid)
            await mux._send_receive({"MessageType": "DeletePairRecord", "PairRecordID": phone.udid})
            with pytest.raises(NotPairedError):
                await mux.get_pair_record(phone.udid)
            return record
        finally:
            await mux.close()

    assert run(scenario()) == {"HostID": "H"}
    assert run(raw_request(bench.usbmuxd_address, {"MessageType": "ReadPairRecord"}))[2] == {
        "MessageType": "Result", "Number": 22}


def test_pair_records_live_on_disk_not_in_the_daemons_memory(bench_for, make_phone):
    # usbmuxd conf.c (config_set_device_record, config_get_device_record) writes and reads each
    # record as a file in /var/lib/lockdown: a station pairing thousands of phones must not grow.
    phone = make_phone()
    bench = bench_for(phone)
    udids = [f"00008110-{n:016X}" for n in range(20)]

    async def scenario() -> list[dict]:
        mux = await usbmux.create_mux()
        try:
            for udid in udids:
                await mux.save_pair_record(udid, 1, plistlib.dumps({"HostID": udid}))
            return [await mux.get_pair_record(udid) for udid in udids]
        finally:
            await mux.close()

    assert run(scenario()) == [{"HostID": udid} for udid in udids]
    assert sorted(p.stem for p in bench.usbmuxd.pair_record_dir.iterdir()) == udids
    assert bench.usbmuxd._records == {}


def test_usbmuxd_can_be_absent_and_come_back(bench_for, make_phone):
    phone = make_phone()
    bench = bench_for(phone)

    bench.usbmuxd.stop()
    with pytest.raises(ConnectionFailedToUsbmuxdError):
        run(usbmux.list_devices())

    bench.usbmuxd.start()
    assert [(d.devid, d.serial) for d in run(usbmux.list_devices())] == [(1, phone.udid)]
