"""One USB port's gadget in configfs (``Documentation/usb/gadget_configfs.rst``) and its UDC.

A port has one gadget with three FunctionFS functions, one per face a phone shows on USB:
``mux`` (iOS and the restore ramdisk, usbmuxd's interface), ``recovery`` (iBoot) and ``dfu``
(SecureROM). Each keeps its ep0 open for the whole run: FunctionFS takes descriptors once per
opening, and a thread blocked on a closing ep0 would keep it busy. A phone changing mode is what
the kernel sees of a real one: the gadget leaves the UDC (a disconnect), gets the new mode's ids,
strings and function, and binds again (a new enumeration, a new device address).
"""
from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

CONFIGFS = Path("/sys/kernel/config/usb_gadget")
FACES = ("mux", "recovery", "dfu")


class PortGadget:
    def __init__(self, name: str, udc: str, mount_root: Path) -> None:
        self.name = name
        self.udc = udc
        self.root = CONFIGFS / name
        self.mounts = {face: mount_root / f"{name}-{face}" for face in FACES}
        self.face: str | None = None

    def create(self) -> None:
        if self.root.exists():  # left by a run that ended: its files are closed now, so it can go
            self.remove()
        self.root.mkdir()
        _write(self.root / "idVendor", "0x05ac")
        _write(self.root / "bcdUSB", "0x0200")
        _write(self.root / "bcdDevice", "0x1100")
        (self.root / "strings/0x409").mkdir(parents=True)
        config = self.root / "configs/c.1"
        config.mkdir(parents=True)
        _write(config / "MaxPower", "500")
        for face, mount in self.mounts.items():
            (self.root / f"functions/ffs.{self.name}-{face}").mkdir(parents=True)
            mount.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "-t", "functionfs", f"{self.name}-{face}", str(mount)], check=True)

    def show(self, face: str, product_id: int, strings: tuple[str, str, str]) -> None:
        """Enumerate as ``face``: the host sees a disconnect (if shown before), then a new device."""
        self.hide()
        _write(self.root / "idProduct", f"{product_id:#06x}")
        for name, text in zip(("manufacturer", "product", "serialnumber"), strings):
            _write(self.root / "strings/0x409" / name, text)
        link = self.root / "configs/c.1" / f"ffs.{self.name}-{face}"
        link.symlink_to(self.root / f"functions/ffs.{self.name}-{face}")
        self.face = face
        _write(self.root / "UDC", self.udc)

    def hide(self) -> None:
        """Off the bus (an unplugged cable, or a phone between two modes)."""
        if self.face is None:
            return
        _write(self.root / "UDC", "")
        (self.root / "configs/c.1" / f"ffs.{self.name}-{self.face}").unlink()
        self.face = None

    def remove(self) -> None:
        """The gadget gone from configfs. Only once no process holds its FunctionFS files open
        (a mount in use cannot be unmounted): the next run removes what this one leaves."""
        if (self.root / "UDC").read_text().strip():
            _write(self.root / "UDC", "")
        for link in (self.root / "configs/c.1").glob("ffs.*"):
            link.unlink()
        self.face = None
        for face, mount in self.mounts.items():
            subprocess.run(["umount", str(mount)], check=False, capture_output=True)
            _rmdir(self.root / f"functions/ffs.{self.name}-{face}")
        for sub in ("configs/c.1/strings/0x409", "configs/c.1", "strings/0x409"):
            _rmdir(self.root / sub)
        _rmdir(self.root)


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, (text + "\n").encode() if text else b"\n")
    finally:
        os.close(fd)


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
