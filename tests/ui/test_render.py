"""The OLED screens, pixel for pixel against reviewed reference PNGs.

``STATION_UPDATE_REFERENCE=1 pytest tests/ui`` rewrites the references; look at
every changed PNG (scaled up) before committing it.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from hw.phones import Device, Lock, Mode
from station.machine import Port, State
from station.snapshot import Counters, PortFlag, Screen, Snapshot
from station.ui.labels import SHORT, detail_lines, eta_text, short_state
from station.ui.render import HEIGHT, WIDTH, _page, draw_screen, render

from .cases import CASES, NOW, PRO, every_state, restoring

REFERENCE = Path(__file__).parent / "reference"
UPDATE = os.environ.get("STATION_UPDATE_REFERENCE") == "1"


@pytest.mark.parametrize("name", sorted(CASES))
def test_screen_matches_its_reference(name: str, tmp_path: Path) -> None:
    image = render(CASES[name])
    assert image.mode == "1" and image.size == (WIDTH, HEIGHT)
    reference = REFERENCE / f"{name}.png"
    if UPDATE:
        image.save(reference)
    assert reference.exists(), f"{reference} missing: run with STATION_UPDATE_REFERENCE=1"
    expected = Image.open(reference).convert("1")
    if image.tobytes() != expected.tobytes():  # ImageChops.difference misreads mode "1"
        image.save(tmp_path / reference.name)
        pytest.fail(f"{name} differs from {reference}; this render is {tmp_path / reference.name}")


def test_render_is_pure() -> None:
    snapshot = CASES["overview_mixed"]
    assert render(snapshot).tobytes() == render(snapshot).tobytes()


@pytest.mark.parametrize(("slots", "selected", "shown"), [
    (7, 7, range(1, 8)), (16, 1, range(1, 11)), (16, 12, range(11, 17)), (64, 64, range(61, 65))])
def test_overview_pages_to_the_selected_slot(slots: int, selected: int, shown: range) -> None:
    snapshot = Snapshot(tuple(Port(slot) for slot in range(1, slots + 1)), selected=selected)
    assert [port.slot for port in _page(snapshot)[2]] == list(shown)


def test_every_state_has_a_short_label() -> None:
    assert set(SHORT) == set(State)
    for port in every_state():
        label = short_state(port)
        assert label and len(label) <= 8, (port.state, label)
        assert detail_lines(port, NOW), port.state


def test_eta_from_the_pace_so_far() -> None:
    assert eta_text(restoring(1, 25, minutes=1), NOW) == "3m00s left"
    assert eta_text(restoring(1, 10, minutes=30), NOW) == "4h30m left"
    assert eta_text(restoring(1, 0.5), NOW) == ""  # no pace yet
    assert eta_text(Port(1, State.QUEUED, PRO), NOW) == ""


def test_detail_tells_the_lock_reason_and_the_phase() -> None:
    locked = CASES["detail_locked"].port(2)
    assert "lock: LOCKED" in detail_lines(locked, NOW)
    assert "Find My is on" in detail_lines(locked, NOW)
    lines = detail_lines(CASES["detail_restoring"].port(3), NOW)
    assert "restoring filesystem 42%" in lines and "6m47s left" in lines


class FencedDraw(ImageDraw.ImageDraw):
    """Fails on any text or shape that would reach past the 128x64 canvas."""

    def _inside(self, box: tuple[float, float, float, float], what: object) -> None:
        left, top, right, bottom = box
        assert 0 <= left and 0 <= top and right <= WIDTH and bottom <= HEIGHT, (box, what)

    def text(self, xy, text, fill=None, font=None, *args, **kwargs):  # type: ignore[override]
        self._inside(self.textbbox(xy, text, font=font), text)
        return super().text(xy, text, fill, font, *args, **kwargs)

    def rectangle(self, xy, *args, **kwargs):  # type: ignore[override]
        left, top, right, bottom = xy
        self._inside((left, top, right + 1, bottom + 1), "rectangle")
        return super().rectangle(xy, *args, **kwargs)

    def line(self, xy, *args, **kwargs):  # type: ignore[override]
        left, top, right, bottom = xy
        self._inside((min(left, right), min(top, bottom), max(left, right) + 1,
                      max(top, bottom) + 1), "line")
        return super().line(xy, *args, **kwargs)


texts = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
devices = st.builds(Device, key=st.just("k"), mode=st.sampled_from(Mode), name=texts,
                    product_type=texts, ios_version=texts, serial=texts)
ports = st.builds(Port, slot=st.just(0), state=st.sampled_from(State),
                  device=st.none() | devices, lock=st.sampled_from(Lock), lock_reason=texts,
                  held=st.booleans(), phase=texts, attempts=st.integers(0, 99),
                  max_attempts=st.integers(0, 99),
                  percent=st.floats(0, 100), reason=texts, verified=st.booleans(),
                  restore_started=st.none() | st.floats(0, NOW))
counts = st.integers(0, 10**7)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    many = draw(st.lists(ports, min_size=1, max_size=64))
    numbered = tuple(replace(port, slot=index + 1) for index, port in enumerate(many))
    return Snapshot(numbered, draw(st.sampled_from(Screen)),
                    selected=draw(st.integers(1, len(numbered) + 1)),
                    counters=Counters(draw(counts), draw(counts), draw(counts), draw(counts)),
                    faults=tuple(draw(st.lists(texts, max_size=3))), now=NOW,
                    port_flags=tuple(draw(st.lists(st.builds(PortFlag, st.integers(1, 64), counts, counts),
                                                   max_size=5))))


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_nothing_is_drawn_off_the_canvas(snapshot: Snapshot) -> None:
    image = Image.new("1", (WIDTH, HEIGHT))
    draw_screen(FencedDraw(image), snapshot)
