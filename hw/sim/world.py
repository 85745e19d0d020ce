"""Which simulated phones are plugged in where, and how they show on the USB bus.

The world is the single source of truth for the simulated hardware. Each time a
phone enumerates (plug-in, reboot, mode change) it gets a new USB address on its
bus, as on Linux, and subscribers (the simulated usbmuxd) hear ``UsbArrived`` /
``UsbLeft``; the pyusb backend reads ``usb_devices()`` on every scan. Callbacks run
with the world's lock held so that they see events in order: they must not block.

A USB 3 hub shows each physical port twice, once on a USB 2 bus and once on its
SuperSpeed companion bus (``superspeed``: USB 2 bus -> SuperSpeed bus). A USB-C
phone that speaks USB 3 (``SimPhone.usb3``) enumerates on the SuperSpeed bus while
iOS runs, and on the USB 2 bus in iBoot (recovery, DFU), whose USB stack is USB 2.
"""
from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hw.sim.phone import USBMUX_MODES, Mode, SimPhone

logger = logging.getLogger(__name__)

MAX_USB_ADDRESS = 127


@dataclass(frozen=True, eq=False)
class UsbDevice:
    """One enumeration of a phone: a new object (and address) every time it re-enumerates."""

    phone: SimPhone
    mode: Mode
    bus: int
    port_path: tuple[int, ...]
    address: int
    superspeed: bool = False

    @property
    def location_id(self) -> int:
        """usbmuxd's LocationID on Linux: bus and device address, not the port."""
        return (self.bus << 16) | self.address


@dataclass(frozen=True)
class UsbArrived:
    device: UsbDevice


@dataclass(frozen=True)
class UsbLeft:
    device: UsbDevice


UsbEvent = UsbArrived | UsbLeft
Listener = Callable[[UsbEvent], None]


@dataclass
class _Plug:
    bus: int
    port_path: tuple[int, ...]
    device: UsbDevice | None = None  # None while the phone reboots
    reboot: threading.Timer | None = None


class SimWorld:
    def __init__(self, phones: Iterable[SimPhone] = (), *, reboot_seconds: float = 0.5,
                 superspeed: dict[int, int] | None = None) -> None:
        self.lock = threading.RLock()
        # The bench's own phones, plugged in or not, and any other phone while it is plugged in:
        # a station sees thousands of phones one after another, and a world that kept each one
        # (its key, pairings, dialogue) grew with every phone (bench.soak).
        self.phones: list[SimPhone] = list(phones)
        self._own = set(self.phones)
        self.reboot_seconds = reboot_seconds
        self.superspeed = dict(superspeed or {})
        self._plugs: dict[SimPhone, _Plug] = {}
        self._listeners: list[Listener] = []
        self._next_address: dict[int, int] = {}

    # Hotplug -----------------------------------------------------------------

    def attach(self, phone: SimPhone, bus: int | None = None, port_path: tuple[int, ...] | None = None) -> UsbDevice:
        """Plug the phone in (at its own location unless given) and enumerate it in its current mode."""
        with self.lock:
            if phone in self._plugs:
                raise ValueError(f"{phone.serial} is already plugged in")
            if phone not in self.phones:
                self.phones.append(phone)
            if bus is not None:
                phone.bus = bus
            if port_path is not None:
                phone.port_path = tuple(port_path)
            taken = {(p.bus, p.port_path) for p in self._plugs.values()}
            if (phone.bus, phone.port_path) in taken:
                raise ValueError(f"port {phone.bus}-{'.'.join(map(str, phone.port_path))} is taken")
            plug = self._plugs[phone] = _Plug(phone.bus, phone.port_path)
            return self._enumerate(phone, plug)

    def detach(self, phone: SimPhone) -> None:
        with self.lock:
            plug = self._plugs.pop(phone, None)
            if plug is None:
                return
            if plug.reboot is not None:
                plug.reboot.cancel()
            self._vanish(plug)
            if phone not in self._own:
                self.phones.remove(phone)

    def set_mode(self, phone: SimPhone, mode: Mode) -> None:
        """Change mode at once (re-enumerating if plugged), e.g. a scenario that starts in DFU."""
        with self.lock:
            phone.mode = mode
            plug = self._plugs.get(phone)
            if plug is not None:
                self._cancel_reboot(plug)
                self._vanish(plug)
                self._enumerate(phone, plug)

    def reboot(self, phone: SimPhone, mode: Mode, delay: float | None = None) -> None:
        """Leave the bus now and come back in ``mode`` after ``delay`` (what EnterRecovery or a reboot does)."""
        with self.lock:
            plug = self._plugs.get(phone)
            phone.mode = mode
            if plug is None:
                return
            self._cancel_reboot(plug)
            self._vanish(plug)
            timer = threading.Timer(self.reboot_seconds if delay is None else delay, self._boot, (phone, plug))
            timer.name = f"sim-reboot-{phone.serial}"
            timer.daemon = True
            plug.reboot = timer
            timer.start()

    def close(self) -> None:
        """Cancel pending reboots (and wait for their threads)."""
        with self.lock:
            timers = [p.reboot for p in self._plugs.values() if p.reboot is not None]
            for plug in self._plugs.values():
                self._cancel_reboot(plug)
        for timer in timers:
            timer.join()

    # Views -----------------------------------------------------------------

    def usb_devices(self) -> list[UsbDevice]:
        with self.lock:
            return [p.device for p in self._plugs.values() if p.device is not None]

    def device_of(self, phone: SimPhone) -> UsbDevice | None:
        with self.lock:
            plug = self._plugs.get(phone)
            return plug.device if plug is not None else None

    def is_present(self, device: UsbDevice) -> bool:
        with self.lock:
            plug = self._plugs.get(device.phone)
            return plug is not None and plug.device is device

    def find_phone(self, udid: str) -> SimPhone | None:
        """The phone with this UDID (dash optional): plugged in, or one of the bench's own."""
        with self.lock:
            for phone in self.phones:
                if phone.udid.replace("-", "") == udid.replace("-", ""):
                    return phone
            return None

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Hear every enumeration change, starting with an ``UsbArrived`` per device present now."""
        with self.lock:
            self._listeners.append(listener)
            for device in self.usb_devices():
                listener(UsbArrived(device))

        def unsubscribe() -> None:
            with self.lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    # Internals (lock held) ---------------------------------------------------

    def _boot(self, phone: SimPhone, plug: _Plug) -> None:
        with self.lock:
            if self._plugs.get(phone) is not plug or plug.reboot is None:
                return  # unplugged or superseded while rebooting
            plug.reboot = None
            self._enumerate(phone, plug)

    def _cancel_reboot(self, plug: _Plug) -> None:
        if plug.reboot is not None:
            plug.reboot.cancel()
            plug.reboot = None

    def _enumerate(self, phone: SimPhone, plug: _Plug) -> UsbDevice:
        superspeed = phone.usb3 and phone.mode in USBMUX_MODES and plug.bus in self.superspeed
        bus = self.superspeed[plug.bus] if superspeed else plug.bus
        device = UsbDevice(phone, phone.mode, bus, plug.port_path, self._allocate_address(bus), superspeed)
        plug.device = device
        logger.debug("enumerated %s in %s at %d-%s address %d", phone.serial, phone.mode.value, bus,
                     ".".join(map(str, plug.port_path)), device.address)
        self._notify(UsbArrived(device))
        return device

    def _vanish(self, plug: _Plug) -> None:
        if plug.device is not None:
            device, plug.device = plug.device, None
            self._notify(UsbLeft(device))

    def _allocate_address(self, bus: int) -> int:
        """Linux hands out the next free address on the bus, wrapping at 127 (1 is the root hub)."""
        in_use = {p.device.address for p in self._plugs.values() if p.device is not None and p.device.bus == bus}
        start = self._next_address.get(bus, 2)
        for address in itertools.chain(range(start, MAX_USB_ADDRESS + 1), range(2, start)):
            if address not in in_use:
                self._next_address[bus] = address + 1 if address < MAX_USB_ADDRESS else 2
                return address
        raise RuntimeError(f"USB bus {bus} is full")

    def _notify(self, event: UsbEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # one broken listener must not stop the others
                logger.exception("USB listener failed on %s", event)
