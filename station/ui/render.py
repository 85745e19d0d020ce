"""The OLED screens: a pure function from a station snapshot to a 128x64 image.

Nothing here touches a device; ``hw.display`` pushes the image. Every screen
keeps the bottom line for a station-level fault (``NO NETWORK``, inverted) so
the operator sees it whatever screen is up; without a fault that line is the
screen's own footer (today's counters, or the station's status line while it
has one, a progress bar). Every text goes
through ``_text``, which cuts it to its box: nothing is drawn off screen.
"""
from __future__ import annotations

import textwrap
from functools import cache
from importlib import resources

from PIL import Image, ImageDraw, ImageFont

from station.machine import Port, State
from station.snapshot import PortFlag, Screen, Snapshot
from station.ui.labels import NEEDS_PERSON, detail_lines, retry_text, short_state, state_title

WIDTH, HEIGHT = 128, 64
FOOTER_TOP = 56  # the bottom line: 5x8 text, or a fault inverted from FOOTER_TOP - 1
COLUMNS = 2
CELL_W, CELL_H = WIDTH // COLUMNS, 11
ROWS = (FOOTER_TOP - 1) // CELL_H  # 5 rows: a 7-port hub fits one page, 16 slots take two
PER_PAGE = COLUMNS * ROWS
BODY_TOP, LINE_H = 12, 8  # detail lines under the title bar, down into the footer when free


# The fonts are X11 misc-fixed 5x8, 6x10 and 9x15B (Debian xfonts-base), public domain
# ("Public domain font. Share and enjoy."), converted to PIL format: see fonts/README.md.
# Pixel fonts drawn at their own size stay crisp on a monochrome OLED.
@cache
def font(name: str) -> ImageFont.ImageFont:
    path = resources.files("station.ui") / "fonts" / f"{name}.pil"
    with resources.as_file(path) as file:
        return ImageFont.load(str(file))


def small() -> ImageFont.ImageFont:
    return font("5x8")  # 25 characters a line


def medium() -> ImageFont.ImageFont:
    return font("6x10")  # 21 characters a line, easier to read from arm's length


def large() -> ImageFont.ImageFont:
    return font("9x15b")


def render(snapshot: Snapshot) -> Image.Image:
    image = Image.new("1", (WIDTH, HEIGHT), 0)
    draw_screen(ImageDraw.Draw(image), snapshot)
    return image


def draw_screen(draw: ImageDraw.ImageDraw, snapshot: Snapshot) -> None:
    """Draw the snapshot's screen on a 128x64 ``draw``: the screen, then the fault line over it."""
    SCREENS[snapshot.screen](draw, snapshot)
    if snapshot.faults:
        _fault(draw, snapshot.faults)


# Overview ------------------------------------------------------------------


def _overview(draw: ImageDraw.ImageDraw, snapshot: Snapshot) -> None:
    page, pages, ports = _page(snapshot)
    for index, port in enumerate(ports):
        row, column = divmod(index, COLUMNS)
        _cell(draw, port, column * CELL_W, row * CELL_H, port.slot == snapshot.selected)
    draw.line((0, FOOTER_TOP - 2, WIDTH - 1, FOOTER_TOP - 2), fill=1)
    right = 0
    if pages > 1:
        marker = f"{page + 1}/{pages}"
        right = int(draw.textlength(marker, font=small())) + 2
        _text(draw, (WIDTH - right + 2, FOOTER_TOP), marker, small(), right - 2)
    done, failed, locked = (snapshot.counters.restored, snapshot.counters.failed,
                            snapshot.counters.locked)
    width = WIDTH - right - 2
    if snapshot.status:  # while there is one (a download, NOT SIGNED): the counters have their own screen
        _text(draw, (0, FOOTER_TOP), snapshot.status, small(), width)
        return
    # Shorter wordings for big days: a number must never be cut.
    wordings = (f"DONE {done} FAIL {failed} LOCK {locked}", f"DONE{done} FAIL{failed} LOCK{locked}",
                f"D{done} F{failed} L{locked}")
    footer = next((text for text in wordings if draw.textlength(text, font=small()) <= width),
                  wordings[-1])
    _text(draw, (0, FOOTER_TOP), footer, small(), width)


def _page(snapshot: Snapshot) -> tuple[int, int, tuple[Port, ...]]:
    """The page of cells that holds the selected slot: (page, pages, its ports)."""
    position = next((i for i, p in enumerate(snapshot.ports) if p.slot == snapshot.selected), 0)
    page = position // PER_PAGE
    pages = max(1, -(-len(snapshot.ports) // PER_PAGE))
    return page, pages, snapshot.ports[page * PER_PAGE:(page + 1) * PER_PAGE]


def _cell(draw: ImageDraw.ImageDraw, port: Port, x: int, y: int, selected: bool) -> None:
    """``12 HOLD OK`` or ``3 [bar] 42%``: the cursor frames the cell, a waiting state inverts
    its label (selected or not), so the two never look alike on the panel."""
    right, bottom = x + CELL_W - 2, y + CELL_H - 2
    if selected:
        draw.rectangle((x, y, right, bottom), outline=1)
    number = str(port.slot)
    _text(draw, (x + 2, y + 1), number, medium(), 18)
    left = x + 2 + int(draw.textlength(number, font=medium())) + 4
    label = short_state(port)
    if port.state is State.RESTORING:
        label_w = int(draw.textlength(label, font=medium()))
        label_x = right - 1 - label_w
        _text(draw, (label_x, y + 1), label, medium(), label_w)
        if retry_text(port):  # the word says more than the bar: the detail screen has the bar
            _retry_mark(draw, left, y, label_x - 3)
        else:
            _bar(draw, (left, y + 2, label_x - 3, bottom - 2), port.percent, 1)
    elif port.state in NEEDS_PERSON:
        label_w = min(right - 1 - left, int(draw.textlength(label, font=medium())))
        draw.rectangle((left - 2, y + 1 if selected else y, left + label_w + 1,
                        bottom - 1 if selected else bottom), fill=1)  # inside the cursor's frame
        _text(draw, (left, y + 1), label, medium(), label_w, 0)
    else:
        _text(draw, (left, y + 1), label, medium(), right - 1 - left)


def _retry_mark(draw: ImageDraw.ImageDraw, left: int, y: int, right: int) -> None:
    """``RETRY`` in the bar's place, or ``R`` where a two-digit slot leaves no room for it."""
    for word in ("RETRY", "R"):
        if draw.textlength(word, font=small()) <= right - left:
            _text(draw, (left, y + 2), word, small(), right - left)
            return


# Detail --------------------------------------------------------------------


def _detail(draw: ImageDraw.ImageDraw, snapshot: Snapshot) -> None:
    port = next((p for p in snapshot.ports if p.slot == snapshot.selected),
                Port(snapshot.selected))
    _titled(draw, f"SLOT {port.slot} {retry_text(port) or state_title(port)}",
            detail_lines(port, snapshot.now),
            footer_taken=port.state is State.RESTORING or bool(snapshot.faults))
    if port.state is State.RESTORING:
        _bar(draw, (1, FOOTER_TOP - 1, WIDTH - 2, HEIGHT - 2), port.percent, 1)


def _titled(draw: ImageDraw.ImageDraw, title: str, lines: list[str], footer_taken: bool) -> None:
    """A title bar, then ``lines`` wrapped below it, down into the footer when it is free."""
    draw.rectangle((0, 0, WIDTH - 1, 10), fill=1)
    _text(draw, (1, 1), title, medium(), WIDTH - 2, 0)
    room = (FOOTER_TOP if footer_taken else HEIGHT) - BODY_TOP
    for index, line in enumerate(_wrapped(lines, room // LINE_H)):
        _text(draw, (1, BODY_TOP + index * LINE_H), line, small(), WIDTH - 2)


def _wrapped(lines: list[str], room: int) -> list[str]:
    """Long lines wrap onto the next; a line cut short ends in ``..``.

    Each line keeps at least one row for every line after it, so the last
    lines (what to do next) are not pushed off by a long reason.
    """
    columns = (WIDTH - 2) // 5
    out: list[str] = []
    for index, line in enumerate(lines):
        rows = textwrap.wrap(line, columns, break_on_hyphens=False)
        allowed = max(1, room - len(out) - (len(lines) - index - 1))
        if len(rows) > allowed:
            rows = rows[:allowed]
            rows[-1] = rows[-1][:columns - 2] + ".."
        out += rows
    return out[:room]


# Counters ------------------------------------------------------------------


def _counters(draw: ImageDraw.ImageDraw, snapshot: Snapshot) -> None:
    """Today's counts, the restores that needed another attempt, and a port to look at
    (inverted: it needs a person), above the fault line."""
    draw.rectangle((0, 0, WIDTH - 1, 10), fill=1)
    _text(draw, (2, 1), "TODAY", medium(), WIDTH - 4, 0)
    counters = snapshot.counters
    column_w = WIDTH // 3
    values = {"restored": counters.restored, "failed": counters.failed, "locked": counters.locked}
    widest = max(draw.textlength(str(value), font=large()) for value in values.values())
    face = large() if widest <= column_w - 1 else medium()  # five digits do not fit in large
    for index, (label, value) in enumerate(values.items()):
        x = index * column_w
        _centred(draw, x, 12, str(value), face, column_w - 1)
        _centred(draw, x, 27, label, small(), column_w - 1)
    _text(draw, (1, 36), f"retried {counters.retried}", small(), WIDTH - 2)
    if snapshot.port_flags:
        line = _flag_line(draw, snapshot.port_flags)
        draw.rectangle((0, 45, int(draw.textlength(line, font=small())) + 1, 53), fill=1)
        _text(draw, (1, 46), line, small(), WIDTH - 3, 0)


def _flag_line(draw: ImageDraw.ImageDraw, flags: tuple[PortFlag, ...]) -> str:
    """``CHECK PORT 4: 3 of 5 bad``, or ``CHECK PORTS 4 7 12`` when there are several."""
    if len(flags) == 1:
        flag = flags[0]
        line = f"CHECK PORT {flag.slot}: {flag.troubles} of {flag.attempts} bad"
    else:
        line = "CHECK PORTS " + " ".join(str(flag.slot) for flag in flags)
    while draw.textlength(line, font=small()) > WIDTH - 3 and " " in line:
        line = line.rsplit(" ", 1)[0]  # whole numbers only, never a cut one
    return line


# Faults --------------------------------------------------------------------


def _faults(draw: ImageDraw.ImageDraw, snapshot: Snapshot) -> None:
    """Each fault's whole line (a config file's error names the file, the key, what is wrong)."""
    _titled(draw, "FAULTS", list(snapshot.fault_details) or ["none"], footer_taken=bool(snapshot.faults))


# Shared pieces -------------------------------------------------------------


def _fault(draw: ImageDraw.ImageDraw, faults: tuple[str, ...]) -> None:
    """The most urgent station fault, inverted, with how many more there are."""
    draw.rectangle((0, FOOTER_TOP - 1, WIDTH - 1, HEIGHT - 1), fill=1)
    more = f" +{len(faults) - 1}" if len(faults) > 1 else ""
    more_w = int(draw.textlength(more, font=small()))
    _text(draw, (1, FOOTER_TOP), f"! {faults[0]}", small(), WIDTH - 3 - more_w, 0)
    _text(draw, (WIDTH - 1 - more_w, FOOTER_TOP), more, small(), more_w, 0)


def _bar(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], percent: float,
         ink: int) -> None:
    left, top, right, bottom = box
    if right - left < 4:
        return  # no room for a bar: the percentage beside it still says it
    draw.rectangle(box, outline=ink)
    filled = round((right - left - 2) * max(0.0, min(100.0, percent)) / 100)
    if filled > 0:
        draw.rectangle((left + 1, top + 1, left + filled, bottom - 1), fill=ink)


def _centred(draw: ImageDraw.ImageDraw, x: int, y: int, text: str, face: ImageFont.ImageFont,
             width: int) -> None:
    text_w = min(width, int(draw.textlength(text, font=face)))
    _text(draw, (x + (width - text_w) // 2, y), text, face, width)


def _text(draw: ImageDraw.ImageDraw, at: tuple[int, int], text: str,
          face: ImageFont.ImageFont, width: int, ink: int = 1) -> None:
    """Draw ``text`` cut to ``width`` pixels: never past the edge of its box."""
    while text and draw.textlength(text, font=face) > width:
        text = text[:-1]
    if text:
        draw.text(at, text, font=face, fill=ink)


SCREENS = {Screen.OVERVIEW: _overview, Screen.DETAIL: _detail, Screen.COUNTERS: _counters,
           Screen.FAULTS: _faults}
