"""The whole simulated bench in one context manager: world, usbmuxd, activation server, USB backend.

It sets nothing process-wide by itself. A caller in this process passes ``usb_backend`` to
pyusb and points pymobiledevice3 with ``USBMUXD_SOCKET_ADDRESS`` and ``point_activation_at``;
a child process gets the same addresses from ``environment()``.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Self

from hw.sim.activation_server import ACTIVATION_URL_ENV, ActivationServer
from hw.sim.phone import SimPhone
from hw.sim.usb_backend import SimUsbBackend
from hw.sim.usbmuxd import SimUsbmuxd
from hw.sim.world import SimWorld

MAX_UNIX_PATH = 104  # sun_path is 108 bytes on Linux, 104 on macOS


class SimulatedBench:
    def __init__(self, phones: Iterable[SimPhone], state_dir: Path, *, reboot_seconds: float = 0.5) -> None:
        self.state_dir = Path(state_dir)
        self.world = SimWorld(reboot_seconds=reboot_seconds)
        self._phones = list(phones)
        socket_path = self.state_dir / "usbmuxd"
        if len(str(socket_path)) > MAX_UNIX_PATH:
            raise ValueError(f"state_dir is too long for a unix socket path: {socket_path}")
        self.usbmuxd = SimUsbmuxd(self.world, socket_path, pair_record_dir=self.state_dir / "lockdown")
        self.activation = ActivationServer(self.world)
        self.usb_backend = SimUsbBackend(self.world)

    @property
    def usbmuxd_address(self) -> str:
        return self.usbmuxd.address

    @property
    def activation_url(self) -> str:
        return self.activation.url

    def environment(self) -> dict[str, str]:
        """What a child process needs to reach this bench."""
        return {"USBMUXD_SOCKET_ADDRESS": self.usbmuxd_address, ACTIVATION_URL_ENV: self.activation_url}

    def __enter__(self) -> Self:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            for phone in self._phones:
                self.world.attach(phone)
            self.usbmuxd.start()
            self.activation.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.activation.stop()
        self.usbmuxd.stop()
        self.world.close()
