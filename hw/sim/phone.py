"""The model of one simulated iPhone: its identity and the state a restore station can observe.

Identity follows what real phones report: the UDID of an A12-or-later phone is
``<CPID:08X>-<ECID:016X>``; an A11 or older phone's UDID is 40 hex digits with no
ECID in it (a SHA-1 of hardware ids; pymobiledevice3 ``MuxDevice.ecid`` is then None).
The chip/board ids come from pymobiledevice3's own ``IRECV_DEVICES`` table so that
every view of the phone (lockdownd, usbmuxd, iBoot serial string) agrees with what
pymobiledevice3 derives from it.

The quirk fields below make the phone behave as real ones do where the station's
promises live; each names its source.

The daemons in this package mutate the runtime fields (mode, activation, pairing
progress) while holding the world's lock; tests read them.
"""
from __future__ import annotations

import enum
import hashlib
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hw import models
from hw.models import IRecvDevice


class Mode(enum.Enum):
    NORMAL = "normal"
    RECOVERY = "recovery"
    DFU = "dfu"
    RESTORE = "restore"  # the restore ramdisk: on usbmuxd like iOS, but lockdownd is restored


# iOS and the restore ramdisk: the modes usbmuxd serves (0x12a8), never iBoot's.
USBMUX_MODES = frozenset({Mode.NORMAL, Mode.RESTORE})


class FindMyAnswer(enum.Enum):
    """What lockdownd answers for ``com.apple.fmip``/``IsAssociated``."""

    HONEST = "honest"  # the phone's Find My state
    FALSE = "false"  # false whatever the state: libimobiledevice #275, libideviceactivation #2
    ABSENT = "absent"  # a reply with no Value: pymobiledevice3 get_value returns None


class Pairing(enum.Enum):
    """How the phone answers lockdownd ``Pair``."""

    AUTO_ACCEPT = "auto"  # at the Hello screen: pairs without a dialog
    DIALOG = "dialog"  # "Trust this computer?" pending for ``dialog_tries`` attempts, then tapped
    PASSCODE = "passcode"  # locked with a passcode: the dialog cannot even show
    DENIED = "denied"  # the user tapped "Don't Trust"


UNACTIVATED = "Unactivated"
FIRST_ECID_UDID_CHIP = 0x8020  # A12: the first chip whose UDID is <CPID>-<ECID>
ACTIVATED = "Activated"


def _luhn_check_digit(digits: str) -> int:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return (10 - total % 10) % 10


def irecv_device(product_type: str) -> IRecvDevice:
    """pymobiledevice3's chip/board/model row for a ProductType (``KeyError`` if it has none)."""
    device = models.by_product_type(product_type)
    if device is not None:
        return device
    raise KeyError(f"{product_type} is not in pymobiledevice3.irecv_devices.IRECV_DEVICES")


@dataclass(eq=False)  # phones are compared by identity: two phones may share every field but the ECID
class SimPhone:
    ecid: int
    serial: str
    product_type: str = "iPhone14,5"
    ios_version: str = "17.5.1"
    build: str = "21F90"
    iboot_version: str = "iBoot-10151.122.1"
    securerom_tag: str = "iBoot-6338.0.0.200.19"
    device_name: str = "iPhone"
    mode: Mode = Mode.NORMAL
    activation_state: str = UNACTIVATED
    activation_lock: bool = False  # Apple's server would answer with an Apple-ID form
    find_my: bool = False  # lockdown domain com.apple.fmip, key IsAssociated
    pairing: Pairing = Pairing.AUTO_ACCEPT
    dialog_tries: int = 2  # Pair attempts answered PairingDialogResponsePending before the tap
    bus: int = 1
    port_path: tuple[int, ...] = (1,)  # sysfs "1-1"; (1, 3) is "1-1.3"

    # What refurbishers record (hw/iphone/phone_facts.py reads them). IMEIs and the MEID come from
    # the ECID unless given; a phone without ``cellular`` has no IMEI or MEID key at all (lockdownd
    # leaves them out). A given value is served as it is, a bad one included.
    cellular: bool = True
    dual_sim: bool = True  # eSIM phones (XS and later) report a second IMEI
    imei_given: str | None = None  # served as InternationalMobileEquipmentIdentity instead of the derived one
    storage_bytes: int = 128_000_000_000  # com.apple.disk_usage TotalDiskCapacity (decimal GB, as Apple sells)
    color: str = "1"  # DeviceColor: current phones send a digit or "#rrggbb"
    enclosure_color: str = "#3b3b3c"  # DeviceEnclosureColor
    battery_cycle_count: int = 87  # diagnostics relay IOPMPowerSource (AppleSmartBattery) CycleCount
    battery_design_capacity: int = 3227  # mAh, DesignCapacity (an iPhone 13's)
    battery_full_charge_capacity: int = 2951  # mAh, NominalChargeCapacity
    diagnostics_stalls: bool = False  # the diagnostics relay takes the request and never answers

    # Quirks of real phones and of Apple's server (see each type for its source).
    find_my_answer: FindMyAnswer = FindMyAnswer.HONEST
    activation_answer: str = "auto"  # hw.sim.activation_pages.ANSWERS: what Apple's server sends
    activation_ready_after: float = 0.0  # s after a boot before mobileactivationd gives session info
    lockdown_stalls: bool = False  # lockdownd takes connections and never answers
    erase_reboot_s: float | None = None  # after EraseDevice, back at Hello this long after (None: the world's)
    erase_starts_s: float = 0.0  # after EraseDevice, the link drops this long after (unverified)
    erase_refused: bool = False  # mobilebackup2 answers EraseDevice with an error instead of erasing
    usb3: bool = False  # USB-C phone on a USB 3 hub: SuperSpeed bus in iOS, USB 2 bus in iBoot
    vanish_on_scan: int = 0  # the next N descriptor reads find the phone re-enumerating

    # The restore, as the phone's iBoot, restored and ASR see it (hw.sim.iboot, hw.sim.restored).
    os_image: tuple[int, str] | None = None  # (size, sha256) of the OS image ASR must receive
    restore_fault: str = ""  # "" or where the phone fails its restore (hw.sim.restored.FAULTS)
    usb_rate: float = 0.0  # bytes/s ASR takes the OS image at (a Pi 4's USB 2 link: ~35e6); 0: unpaced

    # What happened to the phone: written by the simulated daemons.
    paired_hosts: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    pair_attempts: int = field(default=0, repr=False)
    values_set: dict[str, Any] = field(default_factory=dict, repr=False)
    received: list[dict[str, Any]] = field(default_factory=list, repr=False)
    uploads: list[tuple[str, int, str]] = field(default_factory=list, repr=False)  # iBoot: (stage, size, sha256)
    iboot_commands: list[str] = field(default_factory=list, repr=False)
    asr_received: tuple[int, str] | None = field(default=None, repr=False)  # (bytes, sha256) that ASR took
    # What its boot chain keeps across USB transfers, enumerations and unplugs (NVRAM, boots):
    # hw.sim.iboot.IBoot, once iBoot has run. The phone's, so it goes when the phone does.
    iboot: object | None = field(default=None, repr=False)
    _received_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        irecv_device(self.product_type)  # fail at construction, not in a daemon thread

    def erase(self) -> None:
        """What a restore leaves: a phone at the Hello screen that trusts nobody.

        Activation Lock lives on Apple's server and survives the erase.
        """
        self.activation_state = UNACTIVATED
        self.find_my = False
        self.paired_hosts.clear()
        self.pair_attempts = 0
        self.pairing = Pairing.AUTO_ACCEPT

    # Identity ---------------------------------------------------------------

    @property
    def chip_id(self) -> int:
        return irecv_device(self.product_type).chip_id

    @property
    def board_id(self) -> int:
        return irecv_device(self.product_type).board_id

    @property
    def hardware_model(self) -> str:
        """Upper case, as lockdownd reports it (``D17AP``); IRECV_DEVICES keeps it lower case."""
        return irecv_device(self.product_type).hardware_model.upper()

    @property
    def udid(self) -> str:
        if self.chip_id >= FIRST_ECID_UDID_CHIP:
            return f"{self.chip_id:08X}-{self.ecid:016X}"
        # Before the A12 the UDID is a SHA-1 over hardware ids; no ECID can be read from it.
        return hashlib.sha1(f"{self.serial}{self.ecid}{self.wifi_address}".encode()).hexdigest()

    @property
    def wifi_address(self) -> str:
        tail = self.ecid.to_bytes(8, "big")[-3:]
        return "f0:99:b6:" + ":".join(f"{b:02x}" for b in tail)

    @property
    def imei(self) -> str | None:
        if not self.cellular:
            return None
        if self.imei_given is not None:
            return self.imei_given
        body = f"35{self.ecid % 10**12:012d}"
        return body + str(_luhn_check_digit(body))

    @property
    def imei2(self) -> str | None:
        if not (self.cellular and self.dual_sim):
            return None
        body = f"35{(self.ecid + 1) % 10**12:012d}"
        return body + str(_luhn_check_digit(body))

    @property
    def meid(self) -> str | None:
        """A CDMA-capable iPhone's MEID is its IMEI without the check digit (14 decimal digits)."""
        imei = self.imei
        return imei[:14] if imei is not None and len(imei) == 15 else None

    @property
    def ap_nonce(self) -> bytes:
        return hashlib.sha256(b"apnonce" + self.ecid.to_bytes(8, "big")).digest()

    @property
    def sep_nonce(self) -> bytes:
        return hashlib.sha1(b"sepnonce" + self.ecid.to_bytes(8, "big")).digest()

    @cached_property
    def private_key(self) -> rsa.RSAPrivateKey:
        """The phone's lockdown key; pairing certifies its public half, TLS sessions use it."""
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @property
    def public_key_pem(self) -> bytes:
        """``DevicePublicKey`` as real phones send it: a PKCS#1 ``RSA PUBLIC KEY`` PEM."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        )

    @property
    def private_key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    # Dialogue record ----------------------------------------------------------

    def record(self, message: dict[str, Any]) -> None:
        with self._received_lock:
            self.received.append(message)

    def requests(self) -> list[str]:
        """Names of what the phone received, in order (lockdown ``Request`` or service ``Command``)."""
        with self._received_lock:
            return [str(m.get("Request", m.get("Command", "?"))) for m in self.received]


def phone_named(name: str, *, ecid: int | None = None, serial: str = "", activated: bool = False,
                find_my: bool = False, **facts: Any) -> SimPhone:
    """A phone whose ECID and serial number, unless given, come from its name: the same in
    every run of a scenario (the station's simulation and the gadget phones name theirs)."""
    digest = hashlib.sha256(name.encode()).digest()
    return SimPhone(
        ecid=ecid if ecid is not None else int.from_bytes(digest[:7], "big"),
        serial=serial or "".join("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"[b % 34] for b in digest[8:20]),
        # Find My is only ever on for a set-up (activated) phone.
        activation_state=ACTIVATED if activated or find_my else UNACTIVATED, find_my=find_my, **facts)
