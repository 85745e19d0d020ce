"""Which two USB port paths are one physical hub port: the USB 2 and SuperSpeed halves of a USB 3 port.

A USB 3 hub appears twice to Linux, once on a USB 2 bus and once on its
SuperSpeed companion bus. A USB-C iPhone that speaks USB 3 enumerates on the
SuperSpeed bus while iOS runs and on the USB 2 bus in recovery and DFU (iBoot's
USB stack is USB 2), so its port path changes with its mode. The kernel links
the two halves of each port in sysfs: drivers/usb/core/port.c names a port
``<hub>-port<N>`` under the hub's interface ``<hub>:1.0`` (a root hub is
``usb<bus>`` with interface ``<bus>-0:1.0``) and ``link_peers`` adds a ``peer``
link to the companion port (Documentation/ABI/testing/sysfs-bus-usb, ``peer``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

SYSFS_USB_DEVICES = Path("/sys/bus/usb/devices")
PORT_PATH = re.compile(r"^(\d+)-(\d+(?:\.\d+)*)$")  # a device's name in sysfs: bus-port.port...
_PORT = re.compile(r"^(?:usb(\d+)|(\d+-\d+(?:\.\d+)*))-port(\d+)$")


class PortPeers:
    """Looks up a port path's companion in a sysfs tree (the real one, or a simulated bench's)."""

    def __init__(self, root: Path = SYSFS_USB_DEVICES) -> None:
        self.root = root

    def peer(self, port_path: str) -> str | None:
        """``2-1.3`` for ``1-1.3`` when they are the two halves of one USB 3 port; else None."""
        link = self._port_dir(port_path)
        if link is None:
            return None
        try:
            target = os.path.basename(os.path.realpath(link / "peer", strict=True))
        except OSError:
            return None  # a USB 2 port, or a hub that is gone
        match = _PORT.match(target)
        if match is None:
            return None
        root_bus, hub, port = match.groups()
        return f"{root_bus}-{port}" if root_bus else f"{hub}.{port}"

    def _port_dir(self, port_path: str) -> Path | None:
        match = PORT_PATH.match(port_path)
        if match is None:
            return None
        bus, ports = match.group(1), match.group(2).split(".")
        if len(ports) == 1:
            hub, interface = f"usb{bus}", f"{bus}-0:1.0"
        else:
            hub = f"{bus}-{'.'.join(ports[:-1])}"
            interface = f"{hub}:1.0"
        return self.root / hub / interface / f"{hub}-port{ports[-1]}"
