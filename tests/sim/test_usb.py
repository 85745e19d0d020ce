"""The simulated USB view through pyusb and pymobiledevice3's IRecv."""
from __future__ import annotations

import pytest
import usb.core
from pymobiledevice3.exceptions import IRecvNoDeviceConnectedError
from pymobiledevice3.irecv import IRecv
from pymobiledevice3.irecv import Mode as IRecvMode
from pymobiledevice3.lockdown import create_using_usbmux

from hw.sim import Mode

from .conftest import run, wait_until


def apple_devices(bench) -> list[usb.core.Device]:
    return list(usb.core.find(find_all=True, idVendor=0x05AC, backend=bench.usb_backend))


def wait_for_mode(bench, phone, mode: Mode) -> None:
    wait_until(lambda: getattr(bench.world.device_of(phone), "mode", None) is mode)


def test_normal_mode_phone_on_its_hub_port(bench_for, make_phone):
    phone = make_phone(bus=2, port_path=(1, 3))
    bench = bench_for(phone)

    (device,) = apple_devices(bench)

    assert (device.idProduct, device.bus, device.port_numbers, device.port_number) == (0x12A8, 2, (1, 3), 3)
    assert device.serial_number == phone.udid.replace("-", "")
    assert (device.manufacturer, device.product) == ("Apple Inc.", "iPhone")


def test_dfu_phone_is_found_by_irecv_with_srtg(bench_for, make_phone):
    phone = make_phone(mode=Mode.DFU)
    bench = bench_for(phone)

    (device,) = apple_devices(bench)
    irecv = IRecv(ecid=phone.ecid, timeout=2)

    assert device.idProduct == 0x1227
    assert device.serial_number == (
        f"SDOM:01 CPID:8110 CPRV:11 CPFM:03 SCEP:01 BDID:0A ECID:{phone.ecid:016X} IBFL:3C SRTG:[{phone.securerom_tag}]")
    assert irecv.mode is IRecvMode.DFU_MODE
    assert (irecv.ecid, irecv.product_type, irecv.iboot_version) == (phone.ecid, "iPhone14,5", phone.securerom_tag)
    assert (irecv.ap_nonce, irecv.sep_nonce) == (phone.ap_nonce, phone.sep_nonce)
    assert "SRNM" not in device.serial_number


def test_two_phones_of_one_model_in_different_modes(bench_for, make_phone):
    recovering, normal = make_phone(mode=Mode.RECOVERY, port_path=(1, 1)), make_phone(port_path=(1, 2))
    bench = bench_for(recovering, normal)

    by_port = {d.port_numbers: d for d in apple_devices(bench)}
    irecv = IRecv(ecid=recovering.ecid, timeout=2)

    assert {p: d.idProduct for p, d in by_port.items()} == {(1, 1): 0x1281, (1, 2): 0x12A8}
    assert f"SRNM:[{recovering.serial}]" in by_port[(1, 1)].serial_number
    assert irecv.mode is IRecvMode.RECOVERY_MODE_2 and irecv.serial_number == recovering.serial
    with pytest.raises(IRecvNoDeviceConnectedError):
        IRecv(ecid=normal.ecid, timeout=0.2)  # not in recovery or DFU


def test_enter_recovery_then_found_on_the_same_port_with_a_new_address(bench_for, make_phone):
    phone = make_phone(port_path=(1, 4))
    bench = bench_for(phone, reboot_seconds=0.2)
    (before,) = apple_devices(bench)

    async def enter_recovery():
        async with await create_using_usbmux(serial=phone.udid, autopair=True, pair_timeout=0) as lockdown:
            await lockdown.enter_recovery()

    run(enter_recovery())
    wait_for_mode(bench, phone, Mode.RECOVERY)
    (after,) = apple_devices(bench)
    irecv = IRecv(ecid=phone.ecid, timeout=2)

    assert after.port_numbers == before.port_numbers == (1, 4)
    assert after.address != before.address
    assert after.idProduct == 0x1281
    assert irecv.getenv("build-version") == bytearray(phone.iboot_version.encode())
    assert irecv.getenv("radio-error") == bytearray()  # unset variables read back empty


def test_irecv_reboot_with_auto_boot_goes_back_to_normal(bench_for, make_phone):
    phone = make_phone(mode=Mode.RECOVERY)
    bench = bench_for(phone, reboot_seconds=0.1)

    irecv = IRecv(ecid=phone.ecid, timeout=2)
    irecv.set_autoboot(True)
    irecv.reboot()
    wait_for_mode(bench, phone, Mode.NORMAL)

    assert phone.requests()[-3:] == ["setenv auto-boot true", "saveenv", "reboot"]
    assert irecv.getenv("build-version") is None  # pmd3 swallows the old handle's ENODEV


def test_unknown_control_request_stalls(bench_for, make_phone):
    phone = make_phone(mode=Mode.RECOVERY)
    bench = bench_for(phone)
    (device,) = apple_devices(bench)

    with pytest.raises(usb.core.USBError):
        device.ctrl_transfer(0xC1, 0x42, 0, 0, 16)
