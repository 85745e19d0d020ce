"""Find a text where the operator would read it: the exact pixels the OLED's own font draws.

``shows(image, "RETRY 2/2")`` looks for the text as the station's pixel fonts
draw it, lit on dark or dark on lit (a title bar, an inverted label), anywhere
on a 128x64 frame. Pixel fonts are exact, so this is an exact match: no OCR.
"""
from __future__ import annotations

from functools import cache

from PIL import Image, ImageDraw

from station.ui.render import large, medium, small

FACES = {"small": small, "medium": medium, "large": large}


@cache
def _pattern(text: str, face: str, inverse: bool) -> tuple[str, ...]:
    font = FACES[face]()
    probe = Image.new("1", (8 * len(text) * 2 + 8, 24), 0)
    ImageDraw.Draw(probe).text((4, 4), text, font=font, fill=1)
    box = probe.getbbox()
    assert box, f"{text!r} draws nothing"
    left, top, right, bottom = box
    # The ink's own box: a frame or a bar may run right past the text (the cursor's frame does).
    return _rows(probe.crop((left, top, right, bottom)), inverse)


def _rows(image: Image.Image, inverse: bool = False) -> tuple[str, ...]:
    pixels = image.convert("1").load()
    width, height = image.size
    lit, dark = ("0", "1") if inverse else ("1", "0")
    return tuple("".join(lit if pixels[x, y] else dark for x in range(width)) for y in range(height))


def shows(image: Image.Image, text: str, face: str | None = None, inverse: bool | None = None) -> bool:
    """Whether ``text`` is on ``image`` in ``face`` (any of the three when None), lit on dark
    (``inverse=False``), dark on lit (``True``) or either (None)."""
    rows = _rows(image)
    for name in ([face] if face else list(FACES)):
        for inverted in ([inverse] if inverse is not None else [False, True]):
            if _found(rows, _pattern(text, name, inverted)):
                return True
    return False


def _found(rows: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    for y in range(len(rows) - len(pattern) + 1):
        x = rows[y].find(pattern[0])
        while x >= 0:
            if all(rows[y + i][x:x + len(pattern[i])] == pattern[i] for i in range(1, len(pattern))):
                return True
            x = rows[y].find(pattern[0], x + 1)
    return False
