"""What the operator reads: a retry, a failure in their words, the cursor apart from a call for help,
the retries and a port that needs a look. Asserted on the rendered pixels (``glyphs.shows``)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from hw.phones import Lock
from station.machine import Port, State
from station.snapshot import Counters, PortFlag, Screen, Snapshot
from station.ui.labels import detail_lines, operator_reason, retry_text, short_state
from station.ui.render import CELL_H, CELL_W, render

from .cases import DFU, NOW, PRO, restoring
from .glyphs import shows

RETRYING = replace(restoring(4, 42.0), attempts=2, max_attempts=2)
WAITING_TO_RETRY = Port(4, State.QUEUED, PRO, Lock.CLEAR, attempts=1, max_attempts=2,
                        reason="retrying: phone reported restore status 53: failed to recover FDR data",
                        restore_started=NOW - 60, confirmed_by="policy")


def overview(*ports: Port, selected: int = 1) -> Snapshot:
    return Snapshot(tuple(ports), Screen.OVERVIEW, selected=selected, now=NOW)


def test_a_retried_restore_says_which_attempt_it_is() -> None:
    assert retry_text(RETRYING) == "RETRY 2/2"
    assert retry_text(WAITING_TO_RETRY) == "RETRY 2/2"  # between the attempts
    assert retry_text(restoring(4, 42.0)) == ""  # a first attempt is no retry
    assert short_state(WAITING_TO_RETRY) == "RETRY"
    detail = render(Snapshot((RETRYING,), Screen.DETAIL, selected=4, now=NOW))
    assert shows(detail, "SLOT 4 RETRY 2/2", "medium", inverse=True)
    assert shows(render(Snapshot((WAITING_TO_RETRY,), Screen.DETAIL, selected=4, now=NOW)),
                 "SLOT 4 RETRY 2/2", "medium", inverse=True)
    first = render(Snapshot((restoring(4, 42.0),), Screen.DETAIL, selected=4, now=NOW))
    assert shows(first, "SLOT 4 RESTORING", "medium", inverse=True)
    assert not shows(first, "RETRY")


@pytest.mark.parametrize("selected", [1, 4])
def test_the_overview_cell_of_a_retried_restore_says_retry(selected: int) -> None:
    image = render(overview(Port(1), RETRYING, selected=selected))
    assert shows(image, "RETRY", "small") and shows(image, "42%", "medium")
    plain = render(overview(Port(1), restoring(4, 42.0), selected=selected))
    assert not shows(plain, "RETRY", "small") and shows(plain, "42%", "medium")


@pytest.mark.parametrize(("reason", "words"), [
    ("restore failed in phase update_baseband: device did not come back",
     "phone stopped answering while updating the modem"),
    ("simulated usb failure in restore_image at 42%", "USB connection lost while copying iOS"),
    ("USB connection lost: USBError: [Errno 19] No such device (it may have been disconnected)",
     "USB connection lost"),
    ("USB transfer failed: OSError: [Errno 71] Protocol error", "USB connection lost"),
    ("phone reported restore status 53: failed to recover FDR data",
     "phone error 53: failed to recover FDR data"),
    ("cannot reach Apple: ConnectTimeout: HTTPSConnectionPool(host='gs.apple.com')",
     "no answer from Apple"),
    ("Apple's signing server refused: TSSError: This device isn't eligible",
     "Apple would not sign this iOS"),
    ("timed out after 3600 s", "took too long"),
    ("internal error: KeyError: 'ProductType'", "station error: see the log"),
    ("phone did not come back in restore mode within 120 s after iBEC", "phone did not restart"),
    ("NO IPSW iPhone14,7", "NO IPSW iPhone14,7"),  # already the operator's words
    ("aborted by operator", "aborted by operator"),
])
def test_failures_are_told_in_the_operators_words(reason: str, words: str) -> None:
    assert operator_reason(reason) == words


def test_the_detail_screen_tells_the_failure_in_the_operators_words() -> None:
    failed = Port(1, State.FAILED, PRO, restore_started=NOW - 60, retryable=False,
                  reason="restore failed in phase update_baseband: device did not come back")
    lines = detail_lines(failed, NOW)
    assert "phone stopped answering while updating the modem" in lines
    assert not any("update_baseband" in line for line in lines)
    image = render(Snapshot((failed,), Screen.DETAIL, selected=1, now=NOW))
    assert shows(image, "phone stopped answering", "small")
    assert shows(image, "press OK to retry", "small")
    assert "retry after: phone error 53: failed to recover FDR data" in detail_lines(WAITING_TO_RETRY, NOW)


def cell(image, column: int, row: int = 0):
    return image.crop((column * CELL_W, row * CELL_H, (column + 1) * CELL_W, (row + 1) * CELL_H))


def test_the_cursor_and_a_call_for_help_look_different() -> None:
    done = Port(1, State.DONE, PRO, verified=True)
    held = Port(2, State.NEEDS_CONFIRM, DFU, held=True)
    on_done = render(overview(done, held, selected=1))
    on_held = render(overview(done, held, selected=2))
    # The cursor is a frame: the selected cell's label stays lit on dark...
    assert shows(cell(on_done, 0), "DONE", "medium", inverse=False)
    assert not shows(cell(on_done, 0), "DONE", "medium", inverse=True)
    # ...a phone that needs a person is inverted, selected or not...
    assert shows(cell(on_done, 1), "HOLD OK", "medium", inverse=True)
    assert shows(cell(on_held, 1), "HOLD OK", "medium", inverse=True)
    # ...and the frame is what the cursor adds: lit edges round the cell, there only.
    def framed(image) -> bool:
        width, height = image.size
        return (all(image.getpixel((x, 0)) for x in range(width - 1))
                and all(image.getpixel((0, y)) for y in range(height - 1)))
    assert framed(cell(on_done, 0)) and not framed(cell(on_held, 0))
    assert framed(cell(on_held, 1)) and not framed(cell(on_done, 1))


def test_the_counters_show_retries_and_a_port_to_look_at() -> None:
    snapshot = Snapshot((Port(1),), Screen.COUNTERS, counters=Counters(12, 1, 2, retried=3),
                        port_flags=(PortFlag(slot=4, troubles=3, attempts=5),), now=NOW)
    image = render(snapshot)
    assert shows(image, "retried 3", "small")
    assert shows(image, "CHECK PORT 4: 3 of 5 bad", "small", inverse=True)
    calm = render(replace(snapshot, port_flags=()))
    assert shows(calm, "retried 3", "small") and not shows(calm, "CHECK PORT", "small")


def test_an_erase_is_shown_as_erasing_not_restoring() -> None:
    erasing = replace(restoring(4, 0.0, phase="erase"), job="erase")
    detail = render(Snapshot((erasing,), Screen.DETAIL, selected=4, now=NOW))
    assert shows(detail, "SLOT 4 ERASING", "medium", inverse=True)
    assert not shows(detail, "RESTORING", "medium", inverse=True)
    assert "erasing 0%" in detail_lines(erasing, NOW)
    waiting = Port(4, State.NEEDS_CONFIRM, PRO, Lock.CLEAR, job="erase")
    assert "press OK to erase" in detail_lines(waiting, NOW)
    assert short_state(erasing) == "ERASE"
    assert shows(render(overview(Port(1), erasing, selected=1)), "ERASE", "medium")
