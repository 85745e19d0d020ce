"""The hardware's own config sections: what the display and the panel need to open.

They live below both ``hw`` and ``station.config``, which reads them from TOML and checks
each field against its type and ``bounded`` range like any other section.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


def bounded(low: float, high: float) -> dict[str, Any]:
    """A field's allowed range, read by the config loader."""
    return {"bounds": (low, high)}


@dataclass(frozen=True)
class DisplaySection:
    driver: Literal["ssd1306", "sh1106"] = "ssd1306"
    i2c_port: int = field(default=1, metadata=bounded(0, 31))
    i2c_address: int = field(default=0x3C, metadata=bounded(0x03, 0x77))
    rotate: Literal[0, 2] = 0  # half turns only: a quarter turn would stand 128x64 on end
    min_redraw_s: float = field(default=0.2, metadata=bounded(0.02, 5.0))
    frames_dir: Path | None = None


@dataclass(frozen=True)
class ButtonsSection:
    select_pin: int = field(default=17, metadata=bounded(0, 27))
    ok_pin: int = field(default=27, metadata=bounded(0, 27))
    back_pin: int = field(default=22, metadata=bounded(0, 27))
    bounce_s: float = field(default=0.03, metadata=bounded(0.0, 1.0))
    hold_s: float = field(default=1.5, metadata=bounded(0.3, 10.0))


@dataclass(frozen=True)
class LedsSection:
    # One BCM pin per slot, in slot order; an empty list means no LEDs.
    pins: tuple[int, ...] = ()
