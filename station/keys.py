"""Keys stand in for the buttons when a simulated station runs in a terminal."""
from __future__ import annotations

import asyncio
import contextlib
import sys
import termios
import tty
from collections.abc import Iterator

HELP = "keys: s/o/b = SELECT/OK/BACK, S/O/B = hold, q = quit"
KEYS = {"s": ("select", False), "o": ("ok", False), "b": ("back", False),
        "S": ("select", True), "O": ("ok", True), "B": ("back", True)}


async def read_keys(panel: object, stop: asyncio.Event) -> None:
    """Read single keys from stdin and press the panel's (mock) buttons with them."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()
    with _cbreak():
        loop.add_reader(sys.stdin.fileno(), lambda: queue.put_nowait(sys.stdin.read(1)))
        try:
            while True:
                key = await queue.get()
                if key in ("q", ""):
                    stop.set()
                    return
                if key in KEYS:
                    name, long = KEYS[key]
                    await panel.press(name, long)  # type: ignore[attr-defined]
        finally:
            loop.remove_reader(sys.stdin.fileno())


@contextlib.contextmanager
def _cbreak() -> Iterator[None]:
    """Keys arrive one at a time, unechoed; the terminal is put back whatever happens."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
