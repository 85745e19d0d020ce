"""Simulated iPhones that speak the real protocols: usbmuxd, lockdownd, iBoot and SecureROM over
pyusb, restored, ASR and FDR, and Apple's activation and signing (TSS) servers.

Tests and ``station run --sim`` drive pymobiledevice3's and pyusb's own client code against
these; only the transports (a unix socket, a pyusb backend and its bridge to other processes,
local HTTP servers) are fake.
"""
from hw.sim.activation_server import ActivationServer, Hang, Refuse, point_activation_at
from hw.sim.bench import SimulatedBench
from hw.sim.iboot import FAULTS as IBOOT_FAULTS
from hw.sim.phone import ACTIVATED, UNACTIVATED, Mode, Pairing, SimPhone, phone_named
from hw.sim.restored import parse_fault
from hw.sim.usb_backend import SimUsbBackend
from hw.sim.usbmuxd import SimUsbmuxd
from hw.sim.world import SimWorld, UsbDevice

def check_restore_fault(value: str) -> None:
    """A ``SimPhone.restore_fault`` either iBoot or restored acts on; ValueError names the choices."""
    if value in IBOOT_FAULTS:
        return
    try:
        parse_fault(value)
    except ValueError:
        raise ValueError(f"must be one of {', '.join(sorted(IBOOT_FAULTS))}, pulled-during-asr, "
                         "status-<n> (n != 0)") from None


__all__ = [
    "ACTIVATED", "check_restore_fault", "UNACTIVATED", "ActivationServer", "Hang", "Mode", "Pairing", "Refuse", "SimPhone",
    "SimUsbBackend", "SimUsbmuxd", "SimWorld", "SimulatedBench", "UsbDevice", "phone_named",
    "point_activation_at",
]
