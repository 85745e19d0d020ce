"""Simulated iPhones that speak the real protocols: usbmuxd, lockdownd, iBoot over pyusb, Apple's activation server.

Tests and ``station run --sim`` drive pymobiledevice3's and pyusb's own client code against
these; only the transports (a unix socket, a pyusb backend, a local HTTP server) are fake.
"""
from hw.sim.activation_server import ActivationServer, Hang, Refuse, point_activation_at
from hw.sim.bench import SimulatedBench
from hw.sim.phone import ACTIVATED, UNACTIVATED, Mode, Pairing, SimPhone
from hw.sim.usb_backend import SimUsbBackend
from hw.sim.usbmuxd import SimUsbmuxd
from hw.sim.world import SimWorld, UsbDevice

__all__ = [
    "ACTIVATED", "UNACTIVATED", "ActivationServer", "Hang", "Mode", "Pairing", "Refuse", "SimPhone",
    "SimUsbBackend", "SimUsbmuxd", "SimWorld", "SimulatedBench", "UsbDevice", "point_activation_at",
]
