"""The display: luma's dummy device, PNG frames, the terminal view, a missing OLED, throttled redraws."""
from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from pathlib import Path

import pytest
from luma.core.error import DeviceNotFoundError, DevicePermissionError
from luma.core.interface.serial import noop
from PIL import Image, ImageDraw

from hw.display import (
    LumaDisplay,
    NoDisplay,
    Redrawer,
    TerminalView,
    open_pi_display,
    open_sim_display,
)
from station.config import DisplaySection


def frame(text: str) -> Image.Image:
    image = Image.new("1", (128, 64))
    ImageDraw.Draw(image).text((2, 2), text, fill=1)
    return image


def test_the_dummy_device_receives_the_frame() -> None:
    display = open_sim_display(DisplaySection(), interactive=False)
    display.show(frame("hello"))
    assert display.image.mode == "1"
    assert display.image.tobytes() == frame("hello").tobytes()


def test_png_frames_are_written_only_when_the_picture_changes(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    display = open_sim_display(DisplaySection(frames_dir=frames), interactive=False)
    for text in ("a", "a", "b", "b", "b", "a"):
        display.show(frame(text))
    written = sorted(frames.iterdir())
    assert [path.name for path in written] == ["frame-00001.png", "frame-00002.png",
                                               "frame-00003.png"]
    assert Image.open(written[1]).convert("1").tobytes() == frame("b").tobytes()


def test_no_frames_dir_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    open_sim_display(DisplaySection(), interactive=False).show(frame("x"))
    assert list(tmp_path.iterdir()) == []


def test_terminal_view_draws_half_blocks_in_place() -> None:
    image = Image.new("1", (128, 64))
    image.putpixel((0, 0), 1)  # top half of the first cell
    image.putpixel((1, 1), 1)  # bottom half of the second
    image.putpixel((2, 0), 1)
    image.putpixel((2, 1), 1)  # both halves of the third
    stream = io.StringIO()
    view = TerminalView(stream, log_lines=lambda: ["12:00:00 slot 1 EMPTY -> DETECTING"],
                        help_line="keys: s/o/b")
    view.draw(image)
    view.draw(image)
    first, second = stream.getvalue().split("\x1b[J")[:2]
    assert first.startswith("\x1b[2J\x1b[H")  # cleared once...
    assert second.startswith("\x1b[H") and "\x1b[2J" not in second  # ...then overwritten
    rows = [line.removesuffix("\x1b[K") for line in second.removeprefix("\x1b[H").splitlines()]
    panel = rows[1:33]
    assert len(panel) == 32 and all(len(row) == 128 for row in panel)
    assert panel[0][:3] == "\u2580\u2584\u2588"
    assert rows[34:] == ["keys: s/o/b", "12:00:00 slot 1 EMPTY -> DETECTING"]


def test_sim_display_feeds_its_terminal_view() -> None:
    stream = io.StringIO()
    display = open_sim_display(DisplaySection(), interactive=TerminalView(stream))
    display.show(frame("x"))
    assert "\u2588" in stream.getvalue() or "\u2580" in stream.getvalue()


def test_no_terminal_view_when_stdout_is_not_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert open_sim_display(DisplaySection(), interactive=True).terminal is None


def test_no_i2c_bus_is_one_log_line_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    section = DisplaySection(i2c_port=31)  # no /dev/i2c-31 on any machine we run tests on
    with caplog.at_level(logging.INFO, logger="hw.display"):
        display = open_pi_display(section)
        display.show(frame("x"))  # frames are dropped
        display.close()
    assert isinstance(display, NoDisplay)
    assert len(caplog.records) == 1
    assert "no display: ssd1306 at 0x3c on /dev/i2c-31" in caplog.records[0].getMessage()


@pytest.mark.parametrize("error", [
    DeviceNotFoundError("I2C device not found on address: 0x3C"),
    DevicePermissionError("I2C device permission denied: /dev/i2c-1"),
    OSError(121, "Remote I/O error"),
])
def test_a_missing_or_forbidden_oled_is_one_log_line(error: Exception,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    def no_bus(**kwargs: object) -> None:
        raise error
    monkeypatch.setattr("luma.core.interface.serial.i2c", no_bus)
    with caplog.at_level(logging.INFO, logger="hw.display"):
        assert isinstance(open_pi_display(DisplaySection()), NoDisplay)
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert str(error) in caplog.records[0].getMessage()


# luma.oled 3.16 reads pixels with a call Pillow 13 deprecates: theirs to change, not ours.
LUMA_GETDATA = "ignore:Image.Image.getdata is deprecated:DeprecationWarning"


@pytest.mark.filterwarnings(LUMA_GETDATA)
@pytest.mark.parametrize("driver", ["ssd1306", "sh1106"])
def test_pi_display_drives_the_configured_oled(driver: str, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: dict[str, object] = {}

    def bus(**kwargs: object) -> noop:
        opened.update(kwargs)
        return noop()
    monkeypatch.setattr("luma.core.interface.serial.i2c", bus)
    display = open_pi_display(DisplaySection(driver=driver, i2c_address=0x3D, rotate=2))
    assert isinstance(display, LumaDisplay)
    assert type(display.device).__name__ == driver and display.device.rotate == 2
    assert opened == {"port": 1, "address": 0x3D}
    display.show(frame("x"))


class FlakyDevice:
    mode = "1"

    def __init__(self) -> None:
        self.broken = False
        self.shown = 0

    def display(self, image: Image.Image) -> None:
        if self.broken:
            raise OSError(121, "Remote I/O error")
        self.shown += 1


def test_a_display_that_stops_answering_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    device = FlakyDevice()
    display = LumaDisplay(device)
    with caplog.at_level(logging.INFO, logger="hw.display"):
        display.show(frame("1"))
        device.broken = True
        for _ in range(20):
            display.show(frame("2"))
        device.broken = False
        display.show(frame("3"))
    assert [r.levelname for r in caplog.records] == ["ERROR", "INFO"]
    assert device.shown == 2


class CountingDisplay:
    def __init__(self) -> None:
        self.frames: list[Image.Image] = []

    def show(self, image: Image.Image) -> None:
        self.frames.append(image)

    def close(self) -> None:
        pass


async def test_many_requests_make_few_frames_of_the_latest_snapshot() -> None:
    display = CountingDisplay()
    state = {"n": 0}
    rendered: list[int] = []

    def render(n: int) -> Image.Image:
        rendered.append(n)
        return frame(str(n))

    redrawer = Redrawer(display, lambda: state["n"], render, min_interval_s=0.05)
    task = asyncio.create_task(redrawer.run())
    started = time.monotonic()
    while time.monotonic() - started < 0.5:
        state["n"] += 1
        redrawer.request()
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.12)  # the request held back is drawn after the interval
    task.cancel()
    elapsed = time.monotonic() - started
    assert state["n"] > 50
    assert 3 <= len(display.frames) <= elapsed / 0.05 + 2
    assert rendered[-1] == state["n"]  # the last frame shows the newest snapshot


async def test_an_idle_station_is_redrawn_now_and_then() -> None:
    display = CountingDisplay()
    redrawer = Redrawer(display, lambda: 0, lambda n: frame("idle"), min_interval_s=0.02,
                        idle_s=0.05)
    task = asyncio.create_task(redrawer.run())
    await asyncio.sleep(0.3)
    task.cancel()
    assert 2 <= len(display.frames) <= 6


async def test_a_broken_view_is_logged_once_and_redraws_go_on(
        caplog: pytest.LogCaptureFixture) -> None:
    display = CountingDisplay()
    leds: list[int] = []
    state = {"n": 0}

    def render(n: int) -> Image.Image:
        if n < 3:
            raise ValueError("bad snapshot")
        return frame(str(n))

    redrawer = Redrawer(display, lambda: state["n"], render, min_interval_s=0.01,
                        also=[leds.append])
    task = asyncio.create_task(redrawer.run())
    with caplog.at_level(logging.ERROR, logger="hw.display"):
        for n in range(5):
            state["n"] = n
            redrawer.request()
            await asyncio.sleep(0.03)
    task.cancel()
    assert len([r for r in caplog.records if "redraw failed" in r.getMessage()]) == 1
    assert len(display.frames) == 2 and leds == [3, 4]


def test_no_display_drops_frames() -> None:
    display = NoDisplay()
    display.show(frame("x"))
    display.close()


async def test_the_redrawer_stops_when_cancelled_just_as_a_frame_is_asked_for() -> None:
    """Python 3.11's wait_for returns the result, swallowing the cancel, when both land together
    (CPython gh-86296): the station then never finishes shutting down."""
    display = CountingDisplay()
    redrawer = Redrawer(display, lambda: 0, lambda n: frame("x"), min_interval_s=0.0, idle_s=5.0)
    task = asyncio.create_task(redrawer.run())
    await asyncio.sleep(0.01)
    redrawer.request()
    await asyncio.sleep(0)  # the wait for the request is done; the redrawer has not resumed yet
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    assert task in done, "the redrawer went on after it was cancelled"


def test_the_terminal_view_needs_128x43_and_says_so_when_smaller() -> None:
    stream = io.StringIO()
    size = [(100, 30)]
    view = TerminalView(stream, log_lines=lambda: ["12:00:00 " + "x" * 200], help_line="keys",
                        size=lambda: size[0])
    assert (view.columns, view.rows_needed) == (128, 43)
    view.draw(frame("x"))
    small = stream.getvalue()
    assert "128x43" in small and "100x30" in small and "\u2588" not in small
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", small)
    assert max(len(line) for line in plain.split("\n")) < 100  # itself fits the small window
    size[0] = (128, 43)  # the window was made bigger: the panel comes back
    view.draw(frame("x"))
    drawn = stream.getvalue()[len(small):]
    lines = re.sub(r"\x1b\[[0-9;]*[A-HKJ]", "", drawn).splitlines()
    assert len(lines) == 36 and "\u2588" in drawn  # edge, 32 panel rows, edge, help, one log line
    assert all(len(line) <= 128 for line in lines)  # the log line is cut to the panel's width
