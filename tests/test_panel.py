"""The front panel on gpiozero's MockFactory: presses, long presses, debounce, LED patterns."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from gpiozero import GPIOPinInUse
from gpiozero.pins.mock import MockFactory, MockPin

from hw.panel import Panel, open_pi_panel, open_sim_panel
from station.config import ButtonsSection, LedsSection

HOLD_S = 0.3
BUTTONS = ButtonsSection(select_pin=17, ok_pin=27, back_pin=22, bounce_s=0.03, hold_s=HOLD_S)
LEDS = LedsSection(pins=(5, 6, 13))


class DebouncedMockPin(MockPin):
    """A MockPin that drops an edge within ``bounce`` of the last one it reported.

    gpiozero's MockPin stores ``bounce`` but does not apply it ("XXX Need to
    implement this" in gpiozero/pins/mock.py, 2.0.1): on MockPin every bounce is
    a press. Real pin drivers (lgpio, RPi.GPIO) do filter; this pin filters like
    RPi.GPIO's ``bouncetime``, so the panel can be tested as it runs on a Pi.
    """

    _reported = float("-inf")

    def _call_when_changed(self) -> None:
        if self.bounce is not None and self._last_change - self._reported < self.bounce:
            return
        self._reported = self._last_change
        super()._call_when_changed()


@pytest.fixture
def presses() -> list[tuple[str, bool]]:
    return []


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    factory = MockFactory()
    yield factory
    factory.reset()


@pytest.fixture
def panel(factory: MockFactory, presses: list[tuple[str, bool]]) -> Iterator[Panel]:
    panel = Panel(BUTTONS, LEDS, lambda name, long: presses.append((name, long)),
                  pin_factory=factory)
    yield panel
    panel.close()


def wait_for(condition, timeout: float = 2.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_short_press_is_reported_on_release(panel: Panel, factory: MockFactory,
                                            presses: list[tuple[str, bool]]) -> None:
    pin = factory.pin(BUTTONS.select_pin)
    pin.drive_low()
    assert presses == []  # could still become a long press
    time.sleep(0.05)
    pin.drive_high()
    assert presses == [("select", False)]


def test_long_press_is_reported_once_at_hold_time(panel: Panel, factory: MockFactory,
                                                  presses: list[tuple[str, bool]]) -> None:
    pin = factory.pin(BUTTONS.ok_pin)
    pin.drive_low()
    wait_for(lambda: presses)
    assert presses == [("ok", True)]  # while the finger is still down
    time.sleep(HOLD_S + 0.1)  # no repeats while held
    pin.drive_high()
    assert presses == [("ok", True)]  # and no short press on release


def test_buttons_are_told_apart(panel: Panel, factory: MockFactory,
                                presses: list[tuple[str, bool]]) -> None:
    for pin in (BUTTONS.back_pin, BUTTONS.ok_pin):
        factory.pin(pin).drive_low()
        factory.pin(pin).drive_high()
    assert presses == [("back", False), ("ok", False)]


def test_bounce_time_reaches_the_pin(panel: Panel, factory: MockFactory) -> None:
    for pin in (BUTTONS.select_pin, BUTTONS.ok_pin, BUTTONS.back_pin):
        assert factory.pin(pin).bounce == pytest.approx(BUTTONS.bounce_s)
    assert panel.ok.hold_time == HOLD_S


def test_bounces_within_bounce_time_make_one_press(presses: list[tuple[str, bool]]) -> None:
    """Contacts chatter on press and on release; a pin that debounces shows one press.

    MockPin itself ignores bounce_time (see DebouncedMockPin), so this uses a
    MockPin that filters as a real driver does.
    """
    factory = MockFactory(pin_class=DebouncedMockPin)
    panel = Panel(BUTTONS, LEDS, lambda name, long: presses.append((name, long)),
                  pin_factory=factory)
    try:
        pin = factory.pin(BUTTONS.ok_pin)
        for level in (0, 1, 0, 1, 0):  # chatter on press, well within 30 ms
            pin.drive_low() if level == 0 else pin.drive_high()
        time.sleep(0.1)
        for level in (1, 0, 1, 0, 1):  # chatter on release
            pin.drive_low() if level == 0 else pin.drive_high()
        time.sleep(0.05)
        assert presses == [("ok", False)]
    finally:
        panel.close()
        factory.reset()


def test_led_on_and_off(panel: Panel, factory: MockFactory) -> None:
    panel.set_led(1, "on")
    panel.set_led(3, "on")
    assert [factory.pin(p).state for p in LEDS.pins] == [True, False, True]
    panel.set_led(1, "off")
    assert factory.pin(5).state is False


@pytest.mark.parametrize(("pattern", "period"), [("fast", 0.2), ("blink", 1.0)])
def test_led_blinks_at_its_pace(panel: Panel, factory: MockFactory, pattern: str,
                                period: float) -> None:
    pin = factory.pin(6)
    pin.clear_states()
    panel.set_led(2, pattern)
    time.sleep(period * 0.65)  # on for half a period, then off
    panel.set_led(2, "off")
    levels = [state.state for state in pin.states]
    assert levels[:3] == [False, True, False], levels
    on_time = pin.states[2].timestamp  # how long it stayed on before going off
    assert on_time == pytest.approx(period / 2, abs=0.05)


def test_setting_the_same_pattern_again_does_not_restart_the_blink(
        panel: Panel, factory: MockFactory) -> None:
    pin = factory.pin(5)
    pin.clear_states()
    deadline = time.monotonic() + 0.35
    while time.monotonic() < deadline:  # a redraw loop sets every LED at each frame
        panel.set_led(1, "fast")
        time.sleep(0.02)
    assert sum(1 for state in pin.states if state.state is False) >= 2  # it did go off


def test_slots_without_an_led_are_ignored(factory: MockFactory) -> None:
    panel = Panel(BUTTONS, LedsSection(), lambda name, long: None, pin_factory=factory)
    try:
        panel.set_led(1, "on")
        assert "leds" not in panel.namedtuple._fields
    finally:
        panel.close()


def test_a_failed_panel_frees_the_pins_it_took(factory: MockFactory) -> None:
    clash = LedsSection(pins=(5, BUTTONS.ok_pin))
    with pytest.raises(GPIOPinInUse):
        Panel(BUTTONS, clash, lambda name, long: None, pin_factory=factory)
    Panel(BUTTONS, LEDS, lambda name, long: None, pin_factory=factory).close()


def test_no_gpio_is_one_log_line_and_no_panel(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    from gpiozero import Device
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    with caplog.at_level(logging.DEBUG, logger="hw.panel"):
        assert open_pi_panel(BUTTONS, LEDS, lambda name, long: None) is None
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and "no buttons or LEDs" in errors[0].getMessage()


async def test_sim_panel_presses_through_its_mock_pins() -> None:
    presses: list[tuple[str, bool]] = []
    panel = open_sim_panel(BUTTONS, LEDS, lambda name, long: presses.append((name, long)))
    try:
        await panel.press("select")
        await panel.press("ok", long=True)
        assert presses == [("select", False), ("ok", True)]
        panel.pin("back").drive_low()
        panel.pin("back").drive_high()
        assert presses[-1] == ("back", False)
    finally:
        panel.close()
