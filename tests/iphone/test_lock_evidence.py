"""The lock decision, source by source: CLEAR only on Apple's activation record.

The pages under ``activation_pages/`` have the shapes libideviceactivation parses
(their README names the XPath each one answers to).
"""
from __future__ import annotations

import plistlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.iphone.lock_evidence import (ACTIVATION_SERVER, FIND_MY, FIND_MY_UNCONFIRMED, decide,
                                     judge_activation_reply, judge_find_my)
from hw.phones import Lock, LockCheck

PAGES = Path(__file__).parent / "activation_pages"
TYPES = {".plist": "text/xml", ".buddyml": "application/x-buddyml", ".html": "text/html"}


def page(name: str) -> tuple[str, bytes]:
    path = PAGES / name
    content_type = "application/xml" if name == "record-legacy.plist" else TYPES[path.suffix]
    return content_type, path.read_bytes()


@pytest.mark.parametrize("name, lock", [
    ("record.plist", Lock.CLEAR),
    ("record-legacy.plist", Lock.CLEAR),
    ("record.html", Lock.CLEAR),
    ("lock-form.buddyml", Lock.LOCKED),
    ("wrong-password.buddyml", Lock.LOCKED),
    ("lock-form.html", Lock.LOCKED),
    ("ack.plist", Lock.UNKNOWN),
    ("handshake.plist", Lock.UNKNOWN),
    ("error.buddyml", Lock.UNKNOWN),
    ("ack.buddyml", Lock.UNKNOWN),
    ("no-fields.buddyml", Lock.UNKNOWN),
    ("error.html", Lock.UNKNOWN),
])
def test_each_kind_of_answer_is_judged_by_what_it_is(name, lock):
    content_type, body = page(name)
    result = judge_activation_reply(200, content_type, body)
    assert result.lock is lock, result
    assert result.method == ACTIVATION_SERVER


@pytest.mark.parametrize("name, words", [
    ("error.buddyml", "Activation Error"),
    ("no-fields.buddyml", "Unsupported SIM"),
    ("error.html", "Activation Server Error"),
    ("ack.buddyml", "acknowledged"),
])
def test_an_unknown_answer_carries_the_pages_own_words(name, words):
    content_type, body = page(name)
    assert words in judge_activation_reply(200, content_type, body).reason


@pytest.mark.parametrize("status", [301, 400, 403, 404, 500, 503])
def test_an_http_error_is_unknown_even_around_a_record(status):
    content_type, body = page("record.plist")
    result = judge_activation_reply(status, content_type, body)
    assert result.lock is Lock.UNKNOWN and f"HTTP {status}" in result.reason


def test_an_http_error_page_is_quoted():
    result = judge_activation_reply(503, "text/html", (PAGES / "error.html").read_bytes())
    assert result.reason == "Apple's activation server answered HTTP 503: Activation Server Error"


@pytest.mark.parametrize("content_type, lock", [
    ("text/xml; charset=utf-8", Lock.CLEAR),  # pymobiledevice3's exact `== "text/xml"` would assert
    ("TEXT/XML", Lock.CLEAR),
    ("application/json", Lock.UNKNOWN),
    ("text/plain", Lock.UNKNOWN),
    ("", Lock.UNKNOWN),
])
def test_content_types_are_read_as_libideviceactivation_reads_them(content_type, lock):
    assert judge_activation_reply(200, content_type, (PAGES / "record.plist").read_bytes()).lock is lock


def test_a_record_that_is_empty_or_not_a_dict_is_no_record():
    for record in ({}, "yes", b"\x00", 1):
        body = plistlib.dumps({"ActivationRecord": record})
        assert judge_activation_reply(200, "text/xml", body).lock is Lock.UNKNOWN


@pytest.mark.parametrize("value", [False, None, 0, 1, "true", "YES", b"\x01", [True], {"IsAssociated": True}])
def test_find_my_is_believed_only_when_it_says_true(value):
    result = judge_find_my(value)
    assert result == LockCheck(Lock.UNKNOWN, FIND_MY_UNCONFIRMED, FIND_MY)
    assert judge_find_my(True).lock is Lock.LOCKED


def test_any_locked_source_wins_and_only_apple_makes_clear():
    apple_clear = judge_activation_reply(200, *page("record.plist"))
    assert decide([judge_find_my(True), apple_clear]).lock is Lock.LOCKED
    assert decide([apple_clear, judge_find_my(True)]).lock is Lock.LOCKED
    assert decide([judge_find_my(False), apple_clear]) == apple_clear
    assert decide([LockCheck(Lock.CLEAR, "looks fine", FIND_MY)]).lock is Lock.UNKNOWN
    assert decide([]).lock is Lock.UNKNOWN


# The property: over random answers of every source, CLEAR only when Apple sent a record -----

OK_STATUS = st.integers(200, 299)
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\ufffe\uffff"),
               max_size=12)  # what XML plists can hold
RECORD_TYPES = st.sampled_from(["text/xml", "application/xml", "Text/XML; charset=UTF-8"])
PLIST_VALUES = st.recursive(
    st.booleans() | st.integers(-2**63, 2**63 - 1) | TEXT | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6)
RECORD = st.dictionaries(TEXT.filter(bool), PLIST_VALUES, min_size=1, max_size=4)


@st.composite
def genuine_records(draw: st.DrawFn) -> tuple[int, str, bytes]:
    """Answers that carry a fresh activation record: the only ones that may make a phone CLEAR."""
    record = draw(RECORD).copy()
    record.pop("ack-received", None)
    shape = draw(st.sampled_from(["record", "legacy", "html"]))
    if shape == "record":
        return draw(OK_STATUS), draw(RECORD_TYPES), plistlib.dumps({"ActivationRecord": record})
    if shape == "legacy":
        return draw(OK_STATUS), draw(RECORD_TYPES), plistlib.dumps(
            {"iphone-activation": {"activation-record": record}})
    embedded = plistlib.dumps({"iphone-activation": {"activation-record": record}}).decode()
    embedded = embedded[embedded.index("<plist"):]
    html = f'<html><head><script type="text/x-apple-plist">{embedded}</script></head></html>'
    return draw(OK_STATUS), "text/html", html.encode()


@st.composite
def other_answers(draw: st.DrawFn) -> tuple[int, str, bytes]:
    """Everything else Apple's server (or something in its place) might send."""
    status = draw(st.integers(100, 599))
    content_type = draw(st.sampled_from(
        ["text/xml", "application/xml", "application/x-buddyml", "text/html", "application/json",
         "text/plain", ""]) | st.text(max_size=20))
    kind = draw(st.sampled_from(["fixture", "bytes", "plist", "ack", "truncated", "bad-status"]))
    if kind == "fixture":
        name = draw(st.sampled_from(sorted(p.name for p in PAGES.iterdir()
                                           if p.suffix in TYPES and not p.name.startswith("record"))))
        return status, content_type, (PAGES / name).read_bytes()
    if kind == "bytes":
        return status, content_type, draw(st.binary(max_size=200))
    if kind == "plist":  # a plist without a record where libideviceactivation looks for one
        body = draw(st.dictionaries(TEXT.filter(
            lambda k: k not in ("ActivationRecord", "iphone-activation", "device-activation")),
            PLIST_VALUES, max_size=4))
        return status, content_type, plistlib.dumps(body)
    if kind == "ack":
        record = draw(RECORD) | {"ack-received": True}
        key = draw(st.sampled_from(["ActivationRecord", "iphone-activation"]))
        return status, content_type, plistlib.dumps({key: record})
    if kind == "truncated":
        _, _, body = draw(genuine_records())
        # Cut inside the plist: an HTML page cut only in its closing tags still holds a whole record.
        return status, content_type, body[: draw(st.integers(0, body.rindex(b"</plist>")))]
    _, content_type, body = draw(genuine_records())
    return draw(st.integers(100, 199) | st.integers(300, 599)), content_type, body


FIND_MY_VALUES = PLIST_VALUES | st.none()
NOT_ASKED = st.just(None)


@given(
    find_my=st.one_of(FIND_MY_VALUES.map(lambda v: ("value", v)),
                      st.just(("error", None))),  # an exception or timeout reading it
    apple=st.one_of(genuine_records().map(lambda a: ("record", a)),
                    other_answers().map(lambda a: ("other", a)),
                    st.just(("error", None)),  # no network, a timeout, the phone not ready
                    NOT_ASKED.map(lambda _: ("not asked", None))),
)
@settings(max_examples=1500, deadline=None)
def test_the_decision_is_clear_only_on_an_authoritative_record(find_my, apple):
    evidence = []
    kind, value = find_my
    evidence.append(judge_find_my(value) if kind == "value"
                    else LockCheck(Lock.UNKNOWN, "Find My not readable", FIND_MY))
    kind_apple, answer = apple
    if kind_apple in ("record", "other"):
        evidence.append(judge_activation_reply(*answer))
    elif kind_apple == "error":
        evidence.append(LockCheck(Lock.UNKNOWN, "no network", ACTIVATION_SERVER))
    result = decide(evidence)
    find_my_on = kind == "value" and value is True
    if result.lock is Lock.CLEAR:
        assert kind_apple == "record" and not find_my_on, (find_my, apple, result)
    if find_my_on:
        assert result.lock is Lock.LOCKED
    if kind_apple == "record" and not find_my_on:
        assert result.lock is Lock.CLEAR, (apple, result)
