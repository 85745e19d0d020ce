"""The simulated SecureROM and iBoot, driven by pymobiledevice3's own IRecv and Recovery code.

Only the pyusb backend is simulated. pymobiledevice3's USB scans busy-wait on the test's thread;
the phone re-enumerates on the world's timer threads meanwhile.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import plistlib
import random
from types import SimpleNamespace

import pytest
import usb.core
from ipsw_parser.build_manifest import BuildManifest
from pymobiledevice3 import usbmux
from pymobiledevice3.exceptions import PyMobileDevice3Exception
from pymobiledevice3.irecv import IRecv
from pymobiledevice3.irecv import Mode as IRecvMode
from pymobiledevice3.restore import recovery
from pymobiledevice3.restore.base_restore import Behavior
from pymobiledevice3.restore.device import Device
from pymobiledevice3.restore.recovery import Recovery

from hw.sim import Mode

from .conftest import run, wait_until

SLEEP_SCALE = 0.05  # pymobiledevice3's fixed sleeps in recovery.py (1 s, 10 s, 2 s) shrunk 20 times
DFU_GETSTATUS = 3


def blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def usb_device(bench, phone) -> usb.core.Device:
    (device,) = [d for d in usb.core.find(find_all=True, backend=bench.usb_backend)
                 if d.port_numbers == phone.port_path]
    return device


# Components of a synthetic build (sizes chosen for the transfer edge cases: DFU blocks whose suffix
# fits or not, bulk uploads ending in a short packet or needing a zero-length packet).
COMPONENTS = {
    "iBSS": blob(2 * 0x800 + 0x7F8, 1),  # the last block + 16 suffix bytes exceed 0x800: own transfer
    "iBEC": blob(0x8000 + 3 * 512, 2),  # multiple of 512: needs the ZLP
    "RestoreLogo": blob(3000, 3),
    "ANE": blob(700, 4),  # a firmware loaded by iBoot
    "RestoreRamDisk": blob(3 * 0x8000 + 17, 5),
    "RestoreDeviceTree": blob(4096, 6),
    "RestoreSEP": blob(2000, 7),
    "RestoreKernelCache": blob(0x8000 + 1, 8),
}


def build_manifest() -> BuildManifest:
    """A BuildManifest with one Erase identity for iPhone14,5 (d17ap), build 21F90 (build_major 21)."""
    manifest = {name: {"Info": {"Path": f"Firmware/{name}.im4p"}} for name in COMPONENTS}
    manifest["ANE"]["Info"] |= {"IsLoadedByiBoot": True, "IsLoadedByiBootStage1": False}
    identity = {"ApBoardID": "0x0A", "ApChipID": "0x8110", "Manifest": manifest,
                "Info": {"DeviceClass": "d17ap", "Variant": "Customer Erase Install (IPSW)",
                         "RestoreBehavior": "Erase"}}
    plist = {"ProductBuildVersion": "21F90", "ProductVersion": "17.5.1", "SupportedProductTypes": ["iPhone14,5"],
             "BuildIdentities": [identity]}
    return BuildManifest(None, plistlib.dumps(plist))


class UnsignedRecovery(Recovery):
    """pymobiledevice3's Recovery with the components sent as they are: personalising them
    (img4.stitch_component) needs an APTicket from TSS, which this test does not have."""

    async def get_personalized_data(self, component_name, data=None, *, tss, path=None) -> bytes:
        return COMPONENTS[component_name]


@pytest.fixture
def fast_recovery_sleeps(monkeypatch):
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        await real_sleep(seconds * SLEEP_SCALE)

    monkeypatch.setattr(recovery, "asyncio", SimpleNamespace(sleep=sleep))


async def recovery_for(phone) -> UnsignedRecovery:
    """Built in a coroutine, as Restore builds it (its logger is named after the running task)."""
    ipsw = SimpleNamespace(build_manifest=build_manifest())
    return UnsignedRecovery(ipsw, Device(irecv=IRecv(ecid=phone.ecid, timeout=5)), tss={}, behavior=Behavior.Erase)


async def boot_ramdisk(phone) -> None:
    await (await recovery_for(phone)).boot_ramdisk()


async def dfu_enter_recovery(phone) -> None:
    await (await recovery_for(phone)).dfu_enter_recovery()


# DFU ---------------------------------------------------------------------------------------


def test_dfu_phone_takes_ibss_and_comes_back_in_recovery_on_the_same_port(bench_for, make_phone):
    phone = make_phone(mode=Mode.DFU)
    bench = bench_for(phone, reboot_seconds=0.1)
    before = usb_device(bench, phone)
    irecv = IRecv(ecid=phone.ecid, timeout=5)
    statuses: list[int] = []
    ctrl_transfer = irecv.ctrl_transfer

    def watching(bmRequestType, bRequest, **kwargs):
        answer = ctrl_transfer(bmRequestType, bRequest, **kwargs)
        if (bmRequestType, bRequest) == (0xA1, DFU_GETSTATUS):
            statuses.append(answer[4])
        return answer

    irecv.ctrl_transfer = watching
    irecv.send_buffer(COMPONENTS["iBSS"])  # DNLOAD blocks, suffix, GETSTATUS, empty DNLOAD, reset, re-find
    after = usb_device(bench, phone)

    assert statuses == [5, 7, 8]  # dfuDNLOAD-IDLE, then dfuMANIFEST, dfuMANIFEST-WAIT-RESET
    assert irecv.mode is IRecvMode.RECOVERY_MODE_2 and "SRTG" not in irecv._device_info
    assert irecv.ecid == phone.ecid and irecv.ap_nonce == phone.ap_nonce  # one boot chain, one nonce
    assert (after.port_numbers, after.idProduct) == (before.port_numbers, 0x1281)
    assert after.address != before.address
    assert phone.uploads == [("ibss", len(COMPONENTS["iBSS"]), sha(COMPONENTS["iBSS"]))]


def test_a_dfu_download_with_a_bad_crc_is_refused_and_the_phone_stays_in_dfu(bench_for, make_phone):
    phone = make_phone(mode=Mode.DFU)
    bench_for(phone, reboot_seconds=0.1)
    irecv = IRecv(ecid=phone.ecid, timeout=5)
    statuses: list[int] = []
    ctrl_transfer = irecv.ctrl_transfer

    def bit_flip_on_the_wire(bmRequestType, bRequest, **kwargs):
        data = kwargs.get("data_or_wLength")
        if (bmRequestType, bRequest, kwargs.get("wValue")) == (0x21, 1, 1) and data:
            kwargs["data_or_wLength"] = bytes([data[0] ^ 0x01]) + bytes(data[1:])
        answer = ctrl_transfer(bmRequestType, bRequest, **kwargs)
        if (bmRequestType, bRequest) == (0xA1, DFU_GETSTATUS):
            statuses.append(answer[4])
        return answer

    irecv.ctrl_transfer = bit_flip_on_the_wire
    irecv.send_buffer(COMPONENTS["iBSS"])

    assert statuses == [5, 10, 10]  # dfuERROR once the suffix did not check out
    assert irecv.mode is IRecvMode.DFU_MODE and "SRTG" in irecv._device_info
    assert phone.uploads == []

    irecv.ctrl_transfer = ctrl_transfer  # a clean second attempt goes through
    irecv.send_buffer(COMPONENTS["iBSS"])
    assert irecv.mode is IRecvMode.RECOVERY_MODE_2


# Recovery ----------------------------------------------------------------------------------


def test_recovery_uploads_land_with_their_size_and_sha(bench_for, make_phone):
    phone = make_phone(mode=Mode.RECOVERY)
    bench_for(phone)
    irecv = IRecv(ecid=phone.ecid, timeout=5)

    assert irecv.getenv("build-version") == bytearray(phone.iboot_version.encode())  # bare, no NUL
    assert irecv.getenv("ramdisk-size") == bytearray(b"0x10000000")
    irecv.send_buffer(COMPONENTS["RestoreRamDisk"])  # ends in a short packet
    irecv.send_command("ramdisk")
    irecv.send_buffer(COMPONENTS["RestoreDeviceTree"])  # 4096 bytes: pmd3 sends the ZLP
    irecv.send_command("devicetree")

    assert phone.uploads == [("ramdisk", len(COMPONENTS["RestoreRamDisk"]), sha(COMPONENTS["RestoreRamDisk"])),
                             ("devicetree", 4096, sha(COMPONENTS["RestoreDeviceTree"]))]
    assert phone.iboot_commands == ["getenv build-version", "getenv ramdisk-size", "ramdisk", "devicetree"]


def test_an_upload_without_its_zero_length_packet_stalls_the_next_command(bench_for, make_phone):
    phone = make_phone(mode=Mode.RECOVERY)
    bench_for(phone)
    irecv = IRecv(ecid=phone.ecid, timeout=5)

    irecv.ctrl_transfer(0x41, 0)
    irecv.device.write(0x04, b"\0" * 1024)  # a multiple of 512 and no ZLP: iBoot waits for more
    with pytest.raises(usb.core.USBError) as stalled:
        irecv.send_command("firmware")

    assert stalled.value.errno == errno.EPIPE  # pymobiledevice3 PR #1763
    assert phone.uploads == []


def test_ibss_only_loads_ibec_and_bootx_without_a_ramdisk_comes_back_in_recovery(bench_for, make_phone):
    phone = make_phone(mode=Mode.DFU)
    bench = bench_for(phone, reboot_seconds=0.1)
    irecv = IRecv(ecid=phone.ecid, timeout=5)
    irecv.send_buffer(COMPONENTS["iBSS"])  # now in iBSS

    irecv.send_buffer(COMPONENTS["RestoreRamDisk"])
    irecv.send_command("ramdisk")  # not an iBSS command: nothing happens
    irecv.send_buffer(COMPONENTS["iBEC"])
    irecv.send_command("go", b_request=1)
    irecv._reinit(ecid=phone.ecid, timeout=5)  # iBEC, on a new address
    irecv.send_buffer(COMPONENTS["RestoreKernelCache"])
    irecv.send_command("bootx", b_request=1)  # no ramdisk, no device tree: the kernel panics

    assert [stage for stage, _, _ in phone.uploads] == ["ibss", "ibec", "kernelcache"]
    wait_until(lambda: getattr(bench.world.device_of(phone), "mode", None) is Mode.RECOVERY)


def test_reboot_gives_new_nonces(bench_for, make_phone):
    phone = make_phone(mode=Mode.RECOVERY)
    bench = bench_for(phone, reboot_seconds=0.1)
    before = IRecv(ecid=phone.ecid, timeout=5)
    old_device = usb_device(bench, phone)

    before.reboot()
    wait_until(lambda: getattr(bench.world.device_of(phone), "address", old_device.address) != old_device.address)
    after = IRecv(ecid=phone.ecid, timeout=5)

    assert before.ap_nonce == phone.ap_nonce
    assert after.ap_nonce != before.ap_nonce and after.sep_nonce != before.sep_nonce


@pytest.mark.parametrize("start", [Mode.DFU, Mode.RECOVERY])
def test_pymobiledevice3_boot_ramdisk_brings_the_phone_to_restore_mode(bench_for, make_phone, fast_recovery_sleeps,
                                                                       start):
    phone = make_phone(mode=start)
    bench = bench_for(phone, reboot_seconds=0.2)

    run(boot_ramdisk(phone))
    wait_until(lambda: getattr(bench.world.device_of(phone), "mode", None) is Mode.RESTORE)
    listed = run(usbmux.list_devices())

    stages = ["ibss"] if start is Mode.DFU else []
    stages += ["ibec", "logo", "firmware", "ramdisk", "devicetree", "rsepfirmware", "kernelcache"]
    names = ["iBEC", "RestoreLogo", "ANE", "RestoreRamDisk", "RestoreDeviceTree", "RestoreSEP", "RestoreKernelCache"]
    names = (["iBSS"] if start is Mode.DFU else []) + names
    assert phone.uploads == [(s, len(COMPONENTS[n]), sha(COMPONENTS[n])) for s, n in zip(stages, names)]
    assert phone.iboot_commands[phone.iboot_commands.index("go"):] == [
        "go", "getenv build-version", "getenv build-style", "getenv radio-error", "setenv auto-boot false",
        "saveenv", "setpicture 4", "bgcolor 0 0 0", "firmware", "getenv ramdisk-size", "getenv ramdisk-delay",
        "ramdisk", "devicetree", "rsepfirmware", "setenv boot-args rd=md0 nand-enable-reformat=1 -progress", "bootx"]
    assert [d.serial for d in listed] == [phone.udid]  # on usbmuxd again, as the restore ramdisk


# Faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [Mode.DFU, Mode.RECOVERY])
def test_usb_pulled_during_an_upload(bench_for, make_phone, mode):
    phone = make_phone(mode=mode, restore_fault="usb-pulled-upload")
    bench = bench_for(phone)
    irecv = IRecv(ecid=phone.ecid, timeout=5)

    with pytest.raises(usb.core.USBError) as pulled:
        irecv.send_buffer(COMPONENTS["RestoreRamDisk"])

    assert pulled.value.errno == errno.ENODEV  # as libusb reports a vanished device
    assert bench.world.device_of(phone) is None and phone.uploads == []


def test_a_refused_ibss_leaves_the_phone_in_dfu_and_pymobiledevice3_says_so(bench_for, make_phone,
                                                                             fast_recovery_sleeps):
    phone = make_phone(mode=Mode.DFU, restore_fault="ibss-rejected")
    bench = bench_for(phone, reboot_seconds=0.1)

    with pytest.raises(PyMobileDevice3Exception, match="still in DFU mode"):
        run(dfu_enter_recovery(phone))

    assert bench.world.device_of(phone).mode is Mode.DFU and phone.uploads == []
