"""The simulated phone's boot stages on USB: SecureROM's DFU and iBoot's recovery protocol.

pymobiledevice3's restore (``restore/recovery.py`` ``Recovery``, driving ``irecv.py`` ``IRecv``) and
idevicerestore (``dfu.c``, ``recovery.c`` through libirecovery's ``irecv_send_buffer``) walk a phone
through these stages; the pyusb backend (``hw.sim.usb_backend``) hands each transfer to the phone's
:class:`IBoot`, which keeps what the real boot chain keeps between two transfers::

    DFU (SecureROM) --iBSS, DNLOAD.., empty DNLOAD, USB reset--> recovery (iBSS)
    recovery (iBSS or iBoot) --iBEC upload, "go"--> recovery (iBEC)
    recovery (iBEC) --ramdisk, devicetree, rsepfirmware, kernelcache, "bootx"--> restore mode (usbmuxd)

Every step re-enumerates the phone on the same hub port with a new address (``SimWorld.reboot``).

DFU (USB DFU 1.1 state machine, as SecureROM runs it):

- ``DFU_GETSTATE`` (0xA1/5) answers the state; uploads start only from dfuIDLE (2): pymobiledevice3
  ``IRecv.send_buffer`` and libirecovery ``irecv_send_buffer`` both read it first, CLRSTATUS (0x21/4)
  from dfuERROR (10), ABORT (0x21/6) from anything else.
- ``DFU_DNLOAD`` (0x21/1, wValue = block number) with data: at most wTransferSize (0x800) bytes, more
  is refused (idevicerestore issue #189: 2036 + 16 bytes in one transfer failed). State
  dfuDNLOAD-SYNC (3); blocks may follow each other without a GETSTATUS in between, as pymobiledevice3
  sends them (libirecovery polls after each block).
- ``DFU_GETSTATUS`` (0xA1/3, 6 bytes, state in byte 4): dfuDNLOAD-SYNC -> dfuDNLOAD-IDLE (5), the
  state both hosts poll for; after the empty DNLOAD dfuMANIFEST-SYNC (6) -> dfuMANIFEST (7) ->
  dfuMANIFEST-WAIT-RESET (8) (pymobiledevice3 and libirecovery read it twice before the reset).
- The last 16 bytes of the download are the DFU suffix: ``FF FF FF FF AC 05 00 01 55 46 44 10`` and a
  little-endian CRC-32 of the image and those 12 bytes. It is checked at the empty DNLOAD; a bad one
  leaves the download in dfuERROR with bStatus errVERIFY and the USB reset brings the phone back in
  DFU, not recovery — which pymobiledevice3 reports as "still in DFU mode after receiving iBSS"
  (``Recovery.dfu_enter_recovery``). The two hosts compute that CRC differently: libirecovery
  (``irecv_send_buffer``, ``crc32_step`` from 0xFFFFFFFF, no final complement: the DFU 1.1 ``dwCRC``)
  and pymobiledevice3 (``binascii.crc32`` seeded with -1: register 0, final complement). Both restore
  real phones from DFU, so the simulated SecureROM takes either value and nothing else.
- The USB reset (``IRecv.reset``, ``irecv_reset``) after the manifest boots the iBSS: the phone leaves
  USB and comes back in recovery (0x1281, no SRTG in its serial string) with the same ECID.

Recovery (iBoot's USB protocol, libirecovery ``irecv_send_command``/``irecv_send_buffer``):

- Commands are control OUT 0x40, bRequest 0 (1 for ``go``/``bootx``, pymobiledevice3
  ``Recovery.send_ibec``/``send_kernelcache``), NUL-terminated. ``getenv NAME`` makes the next control
  IN 0xC0/0 answer the bare value, no trailing NUL (an unset variable answers nothing), as
  ``IRecv.getenv`` and ``Recovery.enter_restore`` (``int(radio_error)``) need.
- Uploads: control 0x41/0, then bulk OUT to EP 0x04 in pieces (0x8000 bytes from both hosts). The
  upload ends with a short packet: a piece whose length is not a multiple of 512, or a zero-length
  packet. Until then iBoot waits for more data and stalls the next command (pymobiledevice3 PR #1763,
  EPIPE on the "firmware" that followed a 9232896-byte component; libirecovery commit 12ed446 sends
  the ZLP). A finished upload is what the next command consumes; it is recorded then, in
  ``SimPhone.uploads`` as (stage, size, sha256): ``go`` -> "ibec", ``ramdisk`` -> "ramdisk",
  ``devicetree`` -> "devicetree", ``rsepfirmware`` -> "rsepfirmware", ``firmware`` -> "firmware",
  ``setpicture`` -> "logo", ``bootx`` -> "kernelcache"; the DFU download the SecureROM boots -> "ibss".
- ``go`` with an image loaded: the phone leaves USB and re-enumerates running iBEC, well inside the
  fixed 10 s pymobiledevice3 sleeps (``Recovery.dfu_enter_recovery``) and idevicerestore's 10 s window
  (``dfu.c``). ``bootx`` with a kernelcache loaded: the phone leaves USB and, if a ramdisk and a
  device tree were loaded in this boot, shows on usbmuxd in restore mode (idevicerestore
  ``recovery_enter_restore`` waits for that disconnect); without them the kernel has no root and the
  phone comes back in recovery. The control 0x21/1 "pokes" pymobiledevice3 sends after ``go`` and
  after the kernelcache upload are taken (or fail with ENODEV once the phone has left, which both
  hosts ignore).
- iBSS (stage 1, loaded over DFU) only loads the next stage: it takes getenv/setenv/saveenv/reboot
  and ``go``; ramdisk, devicetree, bootx and the like are not iBSS commands and do nothing there
  (idevicerestore ``dfu.c`` sends iBSS nothing but iBEC). The commands are recorded in
  ``SimPhone.iboot_commands`` whatever the stage.
- ``reboot`` starts a new boot: iBoot generates a new ApNonce and SEP nonce (string 1 ``NONC``/
  ``SNON``), which pymobiledevice3 compares across reconnects in ``dfu_enter_recovery``. Within one
  boot chain (DFU -> iBSS -> iBEC -> restore) the nonce stays: the ticket signed for it must verify
  every stage.

Faults (``SimPhone.restore_fault``):

- ``"usb-pulled-upload"``: the cable is pulled during the second transfer of the phone's first
  upload (DFU block or bulk piece): the phone is detached from the world and the transfer fails with
  ``USBError`` ENODEV, as libusb reports a vanished device; it stays unplugged until attached again.
- ``"ibss-rejected"``: the SecureROM refuses the iBSS image (e.g. an APTicket for another nonce):
  the download finishes (dfuMANIFEST...), but after the reset the phone comes back in DFU, so
  pymobiledevice3 raises "still in DFU mode after receiving iBSS".
"""
from __future__ import annotations

import binascii
import enum
import errno
import hashlib
import logging
import struct
from dataclasses import dataclass, field

from usb.core import USBError

from hw.sim.phone import Mode, SimPhone
from hw.sim.world import SimWorld, UsbDevice

logger = logging.getLogger(__name__)

FAULTS = {
    "usb-pulled-upload": "the cable is pulled during the second transfer of the first upload",
    "ibss-rejected": "SecureROM refuses the iBSS: after the reset the phone is back in DFU",
}

# DFU class requests (USB DFU 1.1, table 3.2) and what SecureROM reports.
DFU_DNLOAD, DFU_GETSTATUS, DFU_CLRSTATUS, DFU_GETSTATE, DFU_ABORT = 1, 3, 4, 5, 6
DFU_TRANSFER_SIZE = 0x800  # wTransferSize of Apple's DFU functional descriptor; pmd3 IRECV_TRANSFER_SIZE_DFU
DFU_SUFFIX = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xAC, 0x05, 0x00, 0x01, 0x55, 0x46, 0x44, 0x10])  # + CRC-32 LE
DFU_SUFFIX_LENGTH = 16
DFU_OK, DFU_ERR_VERIFY = 0x00, 0x07  # bStatus OK, errVERIFY (USB DFU 1.1, table 6.2)

# Recovery: iBoot's bulk OUT endpoint and its high-speed max packet size.
RECOVERY_UPLOAD_ENDPOINT = 0x04
BULK_PACKET = 512
# Shown by iBoot in a public idevicerestore log ("ramdisk-size=0x10000000").
DEFAULT_RAMDISK_SIZE = "0x10000000"

# Which command consumes the finished upload, and the stage name the phone records it under.
CONSUMERS = {"go": "ibec", "ramdisk": "ramdisk", "devicetree": "devicetree", "rsepfirmware": "rsepfirmware",
             "firmware": "firmware", "setpicture": "logo", "bootx": "kernelcache"}
ENV_COMMANDS = {"getenv", "setenv", "setenvnp", "saveenv", "reboot"}
IBSS_COMMANDS = ENV_COMMANDS | {"go"}
BOOT_NEEDS = {"ramdisk", "devicetree"}  # what bootx needs loaded to come up as the restore ramdisk


class Stage(enum.Enum):
    """What runs on the phone while it is on USB in DFU or recovery."""

    SECUREROM = "SecureROM"  # DFU
    IBSS = "iBSS"  # stage 1, loaded over DFU
    IBEC = "iBEC"  # stage 2, loaded by iBSS or iBoot: takes the restore ramdisk
    IBOOT = "iBoot"  # recovery entered from iOS (EnterRecovery) or after a reboot


class DfuState(enum.IntEnum):
    """USB DFU 1.1 device states (appendix A.1)."""

    IDLE = 2
    DNLOAD_SYNC = 3
    DNBUSY = 4
    DNLOAD_IDLE = 5
    MANIFEST_SYNC = 6
    MANIFEST = 7
    MANIFEST_WAIT_RESET = 8
    ERROR = 10


def suffix_crcs(data: bytes) -> set[int]:
    """The suffix CRC-32 of a DFU download as libirecovery and as pymobiledevice3 compute it."""
    signed = data + DFU_SUFFIX
    libirecovery = ~binascii.crc32(signed) & 0xFFFFFFFF  # register from 0xFFFFFFFF, no final complement
    pymobiledevice3 = binascii.crc32(signed, 0xFFFFFFFF)  # register from 0, final complement
    return {libirecovery, pymobiledevice3}


def stall() -> USBError:
    return USBError("Pipe error", errno=errno.EPIPE)


def gone() -> USBError:
    return USBError("No such device (it may have been disconnected)", errno=errno.ENODEV)


@dataclass(eq=False)
class IBoot:
    """One phone's boot chain as USB sees it. Call with the world's lock held."""

    phone: SimPhone
    world: SimWorld
    env: dict[str, str] = field(default_factory=dict)  # NVRAM: kept across boots
    stage: Stage = Stage.IBOOT
    boot: int = 0  # boots since the simulation started: a new one gets new nonces
    # Set by what makes the phone re-enumerate, taken by the next enumeration.
    _next_stage: Stage | None = None
    _device: UsbDevice | None = None  # the enumeration the state below belongs to
    # One enumeration's state.
    _answer: bytes = b""  # what the next control IN 0xC0/0 returns (a getenv)
    _dfu_state: DfuState = DfuState.IDLE
    _dfu_status: int = DFU_OK
    _dfu_data: bytearray = field(default_factory=bytearray)
    _dfu_image: bytes | None = None  # the download once its suffix checked out
    _upload: bytearray = field(default_factory=bytearray)
    _upload_open: bool = False  # bulk data came without its short packet yet
    _loaded: bytes | None = None  # a finished upload, until a command consumes it
    _booted: set[str] = field(default_factory=set)  # what this boot has loaded (ramdisk, devicetree)
    _uploads_started: int = 0
    _transfers: int = 0  # in the current upload
    _fault_done: bool = False

    def __post_init__(self) -> None:
        self.env = {"build-version": self.phone.iboot_version, "build-style": "RELEASE", "auto-boot": "false",
                    "ramdisk-size": DEFAULT_RAMDISK_SIZE} | self.env

    # Nonces (string descriptor 1) ---------------------------------------------

    @property
    def ap_nonce(self) -> bytes:
        if self.boot == 0:
            return self.phone.ap_nonce  # the one lockdownd reported before EnterRecovery
        return hashlib.sha256(b"apnonce" + self.phone.ecid.to_bytes(8, "big") + self.boot.to_bytes(4, "big")).digest()

    @property
    def sep_nonce(self) -> bytes:
        if self.boot == 0:
            return self.phone.sep_nonce
        return hashlib.sha1(b"sepnonce" + self.phone.ecid.to_bytes(8, "big") + self.boot.to_bytes(4, "big")).digest()

    # Enumerations ---------------------------------------------------------------

    def attend(self, device: UsbDevice) -> None:
        """Called before every transfer: a new enumeration starts the stage it was booted into."""
        if device is self._device:
            return
        default = Stage.SECUREROM if device.mode is Mode.DFU else Stage.IBOOT
        wanted = self._next_stage
        if wanted is not None and (wanted is Stage.SECUREROM) == (device.mode is Mode.DFU):
            self.stage = wanted
        else:
            self.stage = default
        self._next_stage = None
        self._device = device
        self._answer = b""
        self._dfu_state, self._dfu_status = DfuState.IDLE, DFU_OK
        self._dfu_data, self._dfu_image = bytearray(), None
        self._upload, self._upload_open, self._loaded = bytearray(), False, None
        self._booted = set()
        logger.debug("%s on USB at address %d running %s", self.phone.serial, device.address, self.stage.value)

    def keep_stage(self, device: UsbDevice) -> None:
        """The phone re-enumerates without rebooting (a glitch, a USB reset in recovery)."""
        self.attend(device)
        self._next_stage = self.stage

    def _leave(self, mode: Mode, stage: Stage | None, delay: float | None = None) -> None:
        self._next_stage = stage
        self.world.reboot(self.phone, mode, delay=delay)

    def reset(self, device: UsbDevice) -> None:
        """A USB port reset: SecureROM boots a manifested image; otherwise the phone just re-enumerates."""
        self.attend(device)
        if device.mode is not Mode.DFU:
            self.keep_stage(device)
            self.world.reboot(self.phone, device.mode, delay=0.05)
            return
        manifested = self._dfu_state in (DfuState.MANIFEST_SYNC, DfuState.MANIFEST, DfuState.MANIFEST_WAIT_RESET)
        if not manifested or self._dfu_image is None:
            self._leave(Mode.DFU, Stage.SECUREROM, delay=0.05)
            return
        if self._fault("ibss-rejected"):
            logger.info("%s: SecureROM refused the iBSS image", self.phone.serial)
            self._leave(Mode.DFU, Stage.SECUREROM, delay=0.05)
            return
        self._record("ibss", self._dfu_image)
        self._leave(Mode.RECOVERY, Stage.IBSS)  # the iBSS boots: recovery, the world's reboot time later

    # DFU -------------------------------------------------------------------------

    def dfu_out(self, device: UsbDevice, request: int, block: int, payload: bytes) -> int:
        self.attend(device)
        if request == DFU_DNLOAD and payload:
            return self._dfu_block(block, payload)
        if request == DFU_DNLOAD:
            self._dfu_finish(block)
            return 0
        if request in (DFU_CLRSTATUS, DFU_ABORT):
            self._dfu_state, self._dfu_status = DfuState.IDLE, DFU_OK
            self._dfu_data, self._dfu_image = bytearray(), None
            return 0
        raise stall()

    def _dfu_block(self, block: int, payload: bytes) -> int:
        if len(payload) > DFU_TRANSFER_SIZE:  # more than wTransferSize: idevicerestore issue #189
            self._dfu_state = DfuState.ERROR
            raise stall()
        if self._dfu_state not in (DfuState.IDLE, DfuState.DNLOAD_SYNC, DfuState.DNLOAD_IDLE):
            raise stall()
        if self._dfu_state is DfuState.IDLE:
            self._start_upload()
        self._transfer()
        self._dfu_data += payload
        self._dfu_state = DfuState.DNLOAD_SYNC
        logger.debug("%s DFU block %d: %d bytes", self.phone.serial, block, len(payload))
        return len(payload)

    def _dfu_finish(self, blocks: int) -> None:
        """The empty DNLOAD: the download is complete; the suffix decides whether it manifests."""
        if self._dfu_state is not DfuState.DNLOAD_IDLE:
            self._dfu_state = DfuState.ERROR
            raise stall()
        data = bytes(self._dfu_data)
        image, suffix = data[:-DFU_SUFFIX_LENGTH], data[-DFU_SUFFIX_LENGTH:]
        crc_ok = (len(data) >= DFU_SUFFIX_LENGTH and suffix[:12] == DFU_SUFFIX
                  and struct.unpack("<I", suffix[12:])[0] in suffix_crcs(image))
        if not crc_ok:
            logger.info("%s: DFU download of %d bytes refused: bad suffix CRC", self.phone.serial, len(data))
            self._dfu_state, self._dfu_status = DfuState.ERROR, DFU_ERR_VERIFY
            return
        self._dfu_image = image
        self._dfu_state = DfuState.MANIFEST_SYNC

    def dfu_in(self, device: UsbDevice, request: int) -> bytes:
        self.attend(device)
        if request == DFU_GETSTATE:
            return bytes([self._dfu_state])
        if request == DFU_GETSTATUS:
            following = {DfuState.DNLOAD_SYNC: DfuState.DNLOAD_IDLE, DfuState.MANIFEST_SYNC: DfuState.MANIFEST,
                         DfuState.MANIFEST: DfuState.MANIFEST_WAIT_RESET}
            self._dfu_state = following.get(self._dfu_state, self._dfu_state)
            return bytes([self._dfu_status, 0, 0, 0, self._dfu_state, 0])  # bwPollTimeout 0, iString 0
        raise stall()

    # Recovery -----------------------------------------------------------------

    def start_upload(self, device: UsbDevice) -> int:
        """Control 0x41/0: a recovery upload begins."""
        self.attend(device)
        self._upload, self._upload_open = bytearray(), False
        self._start_upload()
        return 0

    def bulk_out(self, device: UsbDevice, endpoint: int, payload: bytes) -> int:
        self.attend(device)
        if endpoint != RECOVERY_UPLOAD_ENDPOINT:
            raise stall()
        self._transfer()
        self._upload += payload
        self._upload_open = True
        if len(payload) % BULK_PACKET != 0 or not payload:  # a short packet ends the transfer
            self._loaded, self._upload, self._upload_open = bytes(self._upload), bytearray(), False
        return len(payload)

    def poke(self, device: UsbDevice) -> int:
        """Control 0x21/1 without data in recovery: pymobiledevice3 sends it after "go" and the kernelcache."""
        self.attend(device)
        return 0

    def command(self, device: UsbDevice, text: str) -> None:
        self.attend(device)
        if self._upload_open:
            raise stall()  # still waiting for the upload's short packet (pymobiledevice3 PR #1763)
        logger.debug("%s %s: %s", self.stage.value, self.phone.serial, text)
        self.phone.iboot_commands.append(text)
        self.phone.record({"Command": text})
        name, _, argument = text.partition(" ")
        understood = IBSS_COMMANDS if self.stage is Stage.IBSS else ENV_COMMANDS | set(CONSUMERS) | {"bgcolor"}
        if name not in understood:
            logger.info("%s %s: command not found: %s", self.stage.value, self.phone.serial, text)
            return
        if name == "getenv":
            self._answer = self.env.get(argument, "").encode()
        elif name in ("setenv", "setenvnp"):
            key, _, value = argument.partition(" ")
            self.env[key] = value
        elif name == "reboot":
            self.boot += 1
            self._leave(Mode.NORMAL if self.env.get("auto-boot") == "true" else Mode.RECOVERY, None)
        elif name in CONSUMERS:
            self._consume(name)

    def answer(self, device: UsbDevice) -> bytes:
        """Control IN 0xC0/0: the last getenv's value, once."""
        self.attend(device)
        answer, self._answer = self._answer, b""
        return answer

    def _consume(self, command: str) -> None:
        image, self._loaded = self._loaded, None
        if image is None:
            logger.info("%s %s: %s with nothing uploaded", self.stage.value, self.phone.serial, command)
            return
        self._record(CONSUMERS[command], image)
        self._booted.add(command)
        if command == "go":
            self._leave(Mode.RECOVERY, Stage.IBEC)
        elif command == "bootx" and BOOT_NEEDS <= self._booted:
            self._leave(Mode.RESTORE, None)
        elif command == "bootx":
            logger.info("%s: bootx without %s: the kernel panics", self.phone.serial, BOOT_NEEDS - self._booted)
            self._leave(Mode.RECOVERY, None)

    # Uploads and faults ---------------------------------------------------------

    def _start_upload(self) -> None:
        self._uploads_started += 1
        self._transfers = 0

    def _transfer(self) -> None:
        self._transfers += 1
        if self._uploads_started == 1 and self._transfers == 2 and self._fault("usb-pulled-upload"):
            logger.info("%s: USB cable pulled during an upload", self.phone.serial)
            self.world.detach(self.phone)
            raise gone()

    def _fault(self, name: str) -> bool:
        if self.phone.restore_fault != name or self._fault_done:
            return False
        self._fault_done = True
        return True

    def _record(self, stage: str, image: bytes) -> None:
        self.phone.uploads.append((stage, len(image), hashlib.sha256(image).hexdigest()))


def iboot_of(world: SimWorld, phone: SimPhone) -> IBoot:
    """The phone's boot chain in this world, kept by the phone and shared by every backend on the
    world (hold the world's lock)."""
    iboot = phone.iboot
    if not isinstance(iboot, IBoot) or iboot.world is not world:
        iboot = phone.iboot = IBoot(phone, world)
    return iboot


def nonces_of(world: SimWorld, phone: SimPhone) -> tuple[bytes, bytes]:
    """The ApNonce and SEP nonce the phone's iBoot shows now."""
    iboot = phone.iboot
    if isinstance(iboot, IBoot) and iboot.world is world:
        return iboot.ap_nonce, iboot.sep_nonce
    return phone.ap_nonce, phone.sep_nonce
