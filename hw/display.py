"""The OLED behind a small interface: ``show(image)`` and ``close()``.

Pi: luma.oled's ssd1306 or sh1106 over I2C. Sim: luma.core's ``dummy`` device,
saving each new frame as PNG when asked to and drawing it live in the
terminal. A display that is missing or stops answering is one log line; the
station runs on without it (it still restores and still records).

``Redrawer`` decides when to draw: the station asks for a redraw whenever
something changed, and at most one frame per ``min_redraw_s`` goes out, made
from the snapshot of that moment (Klipper's ``request_redraw``).
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import textwrap
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TextIO, TypeVar

from luma.core.device import dummy
from luma.core.error import Error as LumaError
from PIL import Image

from hw.settings import DisplaySection

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 128, 64
LOG_LINES = 8  # the newest log lines beneath the terminal view


class Display(Protocol):
    def show(self, image: Image.Image) -> None: ...

    def close(self) -> None: ...


class NoDisplay:
    """Stands in for a display that is not there: frames are dropped."""

    def show(self, image: Image.Image) -> None:
        pass

    def close(self) -> None:
        pass


class LumaDisplay:
    """Any luma device. A failing bus is logged when it starts failing and when it is back."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self._failing = False

    def show(self, image: Image.Image) -> None:
        try:
            self.device.display(image.convert(self.device.mode))
        except (OSError, LumaError) as error:
            if not self._failing:
                log.error("display stopped answering: %s (the station runs on without it)", error)
            self._failing = True
            return
        if self._failing:
            log.info("display answers again")
            self._failing = False

    def close(self) -> None:
        try:
            self.device.cleanup()
        except (OSError, LumaError):
            pass  # a dead bus has nothing left to clear


class SimDisplay(LumaDisplay):
    """luma's dummy device, plus numbered PNGs of each new frame and a live terminal view."""

    def __init__(self, frames_dir: Path | None = None, terminal: TerminalView | None = None) -> None:
        super().__init__(dummy(width=WIDTH, height=HEIGHT, mode="1"))
        self.frames_dir = frames_dir
        self.terminal = terminal
        self.frames = 0  # frames written to frames_dir
        self._last: bytes | None = None
        if frames_dir is not None:
            frames_dir.mkdir(parents=True, exist_ok=True)

    def show(self, image: Image.Image) -> None:
        super().show(image)
        frame = self.image
        data = frame.tobytes()
        changed, self._last = data != self._last, data
        if changed and self.frames_dir is not None:
            self.frames += 1
            frame.save(self.frames_dir / f"frame-{self.frames:05d}.png")
        if self.terminal is not None:
            self.terminal.draw(frame)  # also when unchanged: the log lines beneath may be new

    @property
    def image(self) -> Image.Image:
        """What the emulated panel shows now (luma's dummy keeps the last frame)."""
        return self.device.image


class TerminalView:
    """The 128x64 panel in a terminal: half blocks put two pixel rows in one text row.

    Redrawn in place (cursor home, overwrite, clear the rest), so it does not
    scroll or flicker; the help line and the newest log lines go beneath it.
    That takes a window of ``columns`` x ``rows_needed`` (128x43) characters: in
    a smaller one the lines would wrap or scroll and the picture would tear, so
    the view says what it needs instead, until the window is big enough.
    """

    columns = WIDTH
    rows_needed = 1 + HEIGHT // 2 + 1 + 1 + LOG_LINES  # edge, panel, edge, help, log lines

    # (top pixel lit, bottom pixel lit) -> the character that shows both
    BLOCKS: ClassVar[dict[tuple[bool, bool], str]] = {
        (False, False): " ", (True, False): "\u2580", (False, True): "\u2584", (True, True): "\u2588"}

    def __init__(self, stream: TextIO | None = None, log_lines: Callable[[], list[str]] = list,
                 help_line: str = "", size: Callable[[], tuple[int, int] | None] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.log_lines = log_lines
        self.help_line = help_line
        self.size = size or self._window_size  # (columns, rows), None when unknown
        self._cleared = False
        self._too_small: tuple[int, int] | None = None

    def draw(self, image: Image.Image) -> None:
        head = "\x1b[H" if self._cleared else "\x1b[2J\x1b[H"  # clear once, then overwrite
        self._cleared = True
        size = self.size()
        if size is not None and (size[0] < self.columns or size[1] < self.rows_needed):
            lines = self._too_small_lines(*size)
            if self._too_small != size:
                head = "\x1b[2J\x1b[H"  # the panel's rows wrapped: start clean
            self._too_small = size
        else:
            if self._too_small is not None:
                head = "\x1b[2J\x1b[H"
            self._too_small = None
            edge = "-" * WIDTH  # the panel's top and bottom; its dark sides need no mark
            logs = [line[:WIDTH] for line in self.log_lines()[-LOG_LINES:]]
            lines = [edge, *self.rows(image), edge, self.help_line[:WIDTH], *logs]
        self.stream.write(head + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
        self.stream.flush()

    def _too_small_lines(self, columns: int, rows: int) -> list[str]:
        text = (f"The station's panel needs a terminal window of {self.columns}x{self.rows_needed} "
                f"characters; this one is {columns}x{rows}. Make the window bigger (or the font "
                f"smaller); the panel comes back by itself. {self.help_line}")
        return textwrap.wrap(text, max(10, columns - 1))[:max(1, rows - 1)]

    def _window_size(self) -> tuple[int, int] | None:
        try:
            size = os.get_terminal_size(self.stream.fileno())
        except (AttributeError, OSError, ValueError):  # not a terminal (a file, a StringIO)
            return None
        return size.columns, size.lines

    @classmethod
    def rows(cls, image: Image.Image) -> list[str]:
        """32 text rows of 128 half blocks (``▀`` top pixel lit, ``▄`` bottom, ``█`` both)."""
        pixels = image.convert("1").load()
        width, height = image.size
        return ["".join(cls.BLOCKS[(pixels[x, y] > 0, y + 1 < height and pixels[x, y + 1] > 0)]
                        for x in range(width)) for y in range(0, height, 2)]


class RecentLines(logging.Handler):
    """Keeps the newest log lines for the terminal view, which owns the screen."""

    def __init__(self, count: int = LOG_LINES) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=count)
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record)[:WIDTH])  # the view is WIDTH wide: no line wraps


S = TypeVar("S")


class Redrawer(Generic[S]):
    """Pushes frames of the latest snapshot, at most one per ``min_interval_s``.

    The station's event loop owns it: loop code calls ``request()`` whenever
    something changed, and ``run()`` is a task on that loop. Requests that
    arrive while a frame is held back collapse into one frame, made from the
    snapshot of the moment it is drawn. With ``idle_s`` it also redraws that
    often unasked, so ETAs move on a quiet station. ``also`` are other views
    fed from the same snapshot (the LEDs).
    """

    def __init__(self, display: Display, snapshot: Callable[[], S],
                 render: Callable[[S], Image.Image], min_interval_s: float, *,
                 idle_s: float | None = None, also: Iterable[Callable[[S], None]] = ()) -> None:
        self.display = display
        self.snapshot = snapshot
        self.render = render
        self.min_interval_s = min_interval_s
        self.idle_s = idle_s
        self.also = tuple(also)
        self._wanted = asyncio.Event()
        self._last_error = ""

    def request(self) -> None:
        self._wanted.set()

    async def run(self) -> None:
        while True:
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that lands
                # with the request (CPython gh-86296), and the station would never stop.
                async with asyncio.timeout(self.idle_s):
                    await self._wanted.wait()
            except TimeoutError:
                pass  # idle redraw
            self._wanted.clear()
            self.push()
            await asyncio.sleep(self.min_interval_s)

    def push(self) -> None:
        """Draw the current snapshot now. A broken view is logged, not raised: restores go on."""
        try:
            snapshot = self.snapshot()
            self.display.show(self.render(snapshot))
            for view in self.also:
                view(snapshot)
        except Exception as error:  # a bug in a view must not stop the station
            if str(error) != self._last_error:  # once per distinct error, not once per frame
                log.exception("redraw failed")
            self._last_error = str(error)
        else:
            self._last_error = ""


def open_pi_display(section: DisplaySection, interactive: object = False) -> Display:
    """The OLED on I2C, or a ``NoDisplay`` and one log line when it is not there.

    ``interactive`` is accepted for the backend table's sake: a Pi draws on its OLED only.
    """
    try:
        from luma.core.interface.serial import i2c
        from luma.oled import device as oled

        serial = i2c(port=section.i2c_port, address=section.i2c_address)
        driver = getattr(oled, section.driver)  # "ssd1306" or "sh1106", as luma names them
        return LumaDisplay(driver(serial, rotate=section.rotate))
    except (OSError, LumaError) as error:
        log.error("no display: %s at %#04x on /dev/i2c-%d: %s (the station runs on without it)",
                  section.driver, section.i2c_address, section.i2c_port, error)
        return NoDisplay()


def open_sim_display(section: DisplaySection, interactive: bool | TerminalView = False) -> SimDisplay:
    """luma's dummy device; with ``interactive`` also a live view when stdout is a terminal.

    A ``TerminalView`` given as ``interactive`` is used as it is (its caller set
    up the help and log lines beneath it).
    """
    if isinstance(interactive, TerminalView):
        terminal: TerminalView | None = interactive
    else:
        terminal = TerminalView() if interactive and sys.stdout.isatty() else None
    return SimDisplay(section.frames_dir, terminal)
