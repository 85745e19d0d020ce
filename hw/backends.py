"""The one table that names the concrete hardware adapters of each backend.

``[hardware] backend`` in the config, or ``STATION_BACKEND`` in the
environment, picks a row; nothing else in the station knows which it got.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hw import display, panel, simulated
from hw.iphone import layer

BACKEND_ENV = "STATION_BACKEND"


@dataclass(frozen=True)
class Backend:
    open_display: Callable[..., Any]  # (DisplaySection, TerminalView | None) -> Display
    open_panel: Callable[..., Any]  # (ButtonsSection, LedsSection, on_press) -> Panel | None
    open_phones: Callable[..., Any]  # (Config, Scenario | None, Clock) -> PhoneLayer


BACKENDS: dict[str, Backend] = {
    "pi": Backend(display.open_pi_display, panel.open_pi_panel, layer.open_usb_phones),
    "sim": Backend(display.open_sim_display, panel.open_sim_panel, simulated.open_simulated_phones),
}


class UnknownBackend(ValueError):
    pass


def backend_name(configured: str) -> str:
    name = os.environ.get(BACKEND_ENV) or configured
    if name not in BACKENDS:
        raise UnknownBackend(f"{BACKEND_ENV}={name!r}: must be one of {', '.join(BACKENDS)}")
    return name
