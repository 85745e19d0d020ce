"""The front panel: three buttons and the per-slot LEDs, as one gpiozero composite.

Like gpiozero's own boards (``TrafficHat``), ``Panel`` is a ``CompositeDevice``
with named parts: ``select``, ``ok``, ``back`` (``Button``) and, when the config
names LED pins, ``leds`` (an ``LEDBoard``, one LED per slot in slot order).

A press is reported once: as short when released before ``hold_s``, as long
when ``hold_s`` is reached (its release then reports nothing). Debouncing is
gpiozero's ``bounce_time``, which the pin driver applies. gpiozero calls the
handlers from its own threads (the pin's, the hold thread), so ``on_press``
must hand them to the station's loop (``call_soon_threadsafe``): nothing here
knows about the loop.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from collections.abc import Callable
from typing import Any

from gpiozero import Button, CompositeDevice, GPIOZeroError, LEDBoard
from gpiozero.exc import PinFactoryFallback
from gpiozero.pins.mock import MockFactory

from hw.settings import ButtonsSection, LedsSection

log = logging.getLogger(__name__)

BUTTONS = ("select", "ok", "back")
# on_time, off_time of each LED pattern; None: steady.
PATTERNS: dict[str, tuple[float, float] | None] = {
    "off": None, "on": None, "blink": (0.5, 0.5), "fast": (0.1, 0.1)}
SHORT_PRESS_S = 0.1  # how long a simulated short press holds the pin down


class Panel(CompositeDevice):
    def __init__(self, buttons: ButtonsSection, leds: LedsSection,
                 on_press: Callable[[str, bool], None], *, pin_factory: Any = None) -> None:
        self.button_pins = {"select": buttons.select_pin, "ok": buttons.ok_pin,
                            "back": buttons.back_pin}
        self.hold_s = buttons.hold_s
        self._on_press = on_press
        self._lock = threading.Lock()  # the pin's thread and the hold thread both decide
        self._down: dict[str, str] = {}  # button -> "pressed" | "held", while it is down
        self._patterns: dict[int, str] = {}
        parts: dict[str, Any] = {}
        try:
            for name, pin in self.button_pins.items():
                parts[name] = Button(pin, bounce_time=buttons.bounce_s or None,
                                     hold_time=buttons.hold_s, pin_factory=pin_factory)
            if leds.pins:
                parts["leds"] = LEDBoard(*leds.pins, pin_factory=pin_factory)
        except BaseException:
            for part in parts.values():  # free the pins already claimed
                part.close()
            raise
        super().__init__(_order=tuple(parts), pin_factory=pin_factory, **parts)
        for name in BUTTONS:
            button = parts[name]
            button.when_pressed = lambda n=name: self._pressed(n)
            button.when_held = lambda n=name: self._held(n)
            button.when_released = lambda n=name: self._released(n)

    def _pressed(self, name: str) -> None:
        with self._lock:
            self._down[name] = "pressed"

    def _held(self, name: str) -> None:
        with self._lock:
            long = self._down.get(name) == "pressed"  # not if the release won the race
            if long:
                self._down[name] = "held"
        if long:
            self._on_press(name, True)

    def _released(self, name: str) -> None:
        with self._lock:
            short = self._down.pop(name, None) == "pressed"
        if short:
            self._on_press(name, False)

    def set_led(self, slot: int, pattern: str) -> None:
        """``off``, ``on``, ``blink`` (working) or ``fast`` (needs a person).

        Setting the pattern an LED already shows does nothing, so a blink is not
        restarted by every redraw. Slots without an LED are ignored.
        """
        timing = PATTERNS[pattern]
        if not 1 <= slot <= len(self._slot_leds) or self._patterns.get(slot) == pattern:
            return
        self._patterns[slot] = pattern
        led = self._slot_leds[slot - 1]
        if timing is not None:
            led.blink(on_time=timing[0], off_time=timing[1], background=True)
        elif pattern == "on":
            led.on()
        else:
            led.off()

    @property
    def _slot_leds(self) -> tuple[Any, ...]:
        return tuple(self.leds) if "leds" in self._named else ()


class MockPanel(Panel):
    """The panel on gpiozero's ``MockFactory``: a finger is ``drive_low()`` on a pin.

    ``pin(name)`` gives a button's mock pin to a scenario runner or the terminal keys.
    """

    def __init__(self, buttons: ButtonsSection, leds: LedsSection,
                 on_press: Callable[[str, bool], None], *, pin_factory: MockFactory) -> None:
        super().__init__(buttons, leds, on_press, pin_factory=pin_factory)
        self.mock_factory = pin_factory

    def pin(self, name: str) -> Any:
        return self.mock_factory.pin(self.button_pins[name])

    async def press(self, name: str, long: bool = False) -> None:
        """Press and release as a finger would; the buttons pull up, so pressed is low."""
        pin = self.pin(name)
        pin.drive_low()
        await asyncio.sleep(self.hold_s + 0.3 if long else SHORT_PRESS_S)
        pin.drive_high()


def open_pi_panel(buttons: ButtonsSection, leds: LedsSection,
                  on_press: Callable[[str, bool], None]) -> Panel | None:
    """The panel on gpiozero's default pin factory, or one log line and None when there is no GPIO."""
    with warnings.catch_warnings(record=True) as fallbacks:
        warnings.simplefilter("always", PinFactoryFallback)
        try:
            return Panel(buttons, leds, on_press)
        except (GPIOZeroError, OSError, RuntimeError) as error:
            tried = "; ".join(str(w.message) for w in fallbacks
                              if issubclass(w.category, PinFactoryFallback))
            log.error("no buttons or LEDs: %s%s (the station runs on without them)", error,
                      f" ({tried})" if tried else "")
            return None
        finally:
            for fallback in fallbacks:
                log.debug("gpiozero: %s", fallback.message)


def open_sim_panel(buttons: ButtonsSection, leds: LedsSection,
                   on_press: Callable[[str, bool], None]) -> MockPanel:
    return MockPanel(buttons, leds, on_press, pin_factory=MockFactory())
