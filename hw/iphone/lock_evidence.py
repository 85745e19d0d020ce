"""What each source of lock evidence says, judged by what it is. Pure: no I/O.

The station's first promise rests here: CLEAR only on authoritative evidence.

- **Apple's activation server** is the only authority on Activation Lock. Its
  answer to a phone's own activation request is judged by its content, in the
  shapes libideviceactivation parses (src/activation.c:
  ``idevice_activation_parse_raw_response``, ``…_parse_buddyml_response``,
  ``…_parse_html_response``, ``idevice_activation_activation_record_from_plist``):
  an activation record is CLEAR; an Apple-ID credential form is LOCKED; an
  error page, an "already activated" acknowledgement, an unexpected content
  type or an HTTP error is UNKNOWN with the page's own words. (pymobiledevice3
  calls every ``application/x-buddyml`` answer "iCloud locked" and asserts an
  exact ``text/xml`` for the rest: mobile_activation.py ``activate``.)
- **lockdownd's** ``com.apple.fmip``/``IsAssociated`` is believed only when it
  says *true*. A false is no evidence: it reads false on phones with Find My on
  (libimobiledevice issue #275) and always in Setup Assistant after an erase
  while Activation Lock is still on (libideviceactivation issue #2); a missing
  value (pymobiledevice3 ``get_value`` returns None) or another type says nothing.
"""
from __future__ import annotations

import plistlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from html.parser import HTMLParser
from typing import Any

from hw.phones import Lock, LockCheck

ACTIVATION_SERVER = "activation-server"
FIND_MY = "fmip"

FIND_MY_UNCONFIRMED = "Find My not confirmed off: ask the owner to sign out of Find My, or hold OK"
LOCKED_BY_APPLE = "Activation Lock: Apple asks for the Apple ID"
CLEAR_BY_APPLE = "Apple: no Activation Lock"
MESSAGE_LIMIT = 80


def decide(evidence: Sequence[LockCheck]) -> LockCheck:
    """One decision from what the sources said: any LOCKED wins; CLEAR only from Apple's server."""
    for check in evidence:
        if check.lock is Lock.LOCKED:
            return check
    for check in evidence:
        if check.lock is Lock.CLEAR and check.method == ACTIVATION_SERVER:
            return check
    unknown = [c for c in evidence if c.lock is Lock.UNKNOWN]
    # Apple's words, when it was asked, tell the operator more than Find My's silence.
    apple = [c for c in unknown if c.method == ACTIVATION_SERVER]
    return (apple or unknown or [LockCheck(Lock.UNKNOWN, "no evidence", "none")])[0]


def judge_find_my(value: object) -> LockCheck:
    """``IsAssociated`` as lockdownd answered it: only a real ``true`` is evidence."""
    if value is True:
        return LockCheck(Lock.LOCKED, "Find My is on", FIND_MY)
    return LockCheck(Lock.UNKNOWN, FIND_MY_UNCONFIRMED, FIND_MY)


def judge_activation_reply(status: int, content_type: str, body: bytes) -> LockCheck:
    """Apple's answer to ``deviceActivation`` (status, Content-Type header, body)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if not 200 <= status < 300:
        return _unknown(f"Apple's activation server answered HTTP {status}{_said(_page_text(body))}")
    if kind in ("text/xml", "application/xml"):  # libideviceactivation: both are plists
        return _judge_plist(_plist(body))
    if kind == "application/x-buddyml":
        return _judge_buddyml(body)
    if kind == "text/html":
        return _judge_html(body)
    return _unknown(f"unexpected answer from Apple's activation server ({kind or 'no type'})")


# Plists --------------------------------------------------------------------


def _judge_plist(plist: dict[str, Any] | None) -> LockCheck:
    if plist is None:
        return _unknown("unreadable answer from Apple's activation server")
    if "HandshakeResponseMessage" in plist:  # a drmHandshake answer, not an activation answer
        return _unknown("Apple's activation server sent a handshake, not an activation record")
    record = plist.get("ActivationRecord")
    if record is not None:
        return _judge_record(record, acknowledged=_ack(record))
    node = plist.get("iphone-activation", plist.get("device-activation"))
    if isinstance(node, dict):
        return _judge_record(node.get("activation-record"), acknowledged=_ack(node))
    return _unknown("Apple's activation server sent no activation record")


def _judge_record(record: object, acknowledged: bool) -> LockCheck:
    if acknowledged:
        # An acknowledgement of an earlier activation carries no fresh decision about the lock.
        return _unknown("Apple acknowledged an earlier activation: no fresh answer")
    if isinstance(record, dict) and record:
        return LockCheck(Lock.CLEAR, CLEAR_BY_APPLE, ACTIVATION_SERVER)
    return _unknown("Apple's activation server sent an empty activation record")


def _ack(node: object) -> bool:
    return isinstance(node, dict) and node.get("ack-received") is True


def _plist(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = plistlib.loads(body)
    except Exception:  # noqa: BLE001 - plistlib raises many types on garbage
        return None
    return parsed if isinstance(parsed, dict) else None


# BuddyML -------------------------------------------------------------------


def _judge_buddyml(body: bytes) -> LockCheck:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return _unknown("unreadable page from Apple's activation server")
    if root.tag != "xmlui":
        return _unknown("unexpected page from Apple's activation server")
    error_bar = root.find("navigationBar")  # directly under <xmlui> only on an error page
    if error_bar is not None:
        return _unknown(f"Apple's activation server: {_clip(error_bar.get('title')) or 'error page'}")
    if any(info.get("ack-received") == "true" for info in root.findall("clientInfo")):
        return _unknown("Apple acknowledged an earlier activation: no fresh answer")
    server_info = root.find("serverInfo")
    asks_for_login = (server_info is not None and "isAuthRequired" in server_info.attrib) or bool(
        root.findall("page//editableTextRow"))
    if asks_for_login:
        return LockCheck(Lock.LOCKED, LOCKED_BY_APPLE, ACTIVATION_SERVER)
    titled = root.find("alert")
    if titled is None:
        titled = root.find("page/navigationBar")
    words = _clip(titled.get("title")) if titled is not None else ""
    return _unknown(f"Apple's activation server sent a page without a decision{_said(words)}")


# HTML ----------------------------------------------------------------------


class _Page(HTMLParser):
    """What libideviceactivation looks for in an HTML answer, and the page's title."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.asks_for_login = False
        self.plists: list[str] = []
        self.title = ""
        self._in: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name.lower(): (value or "") for name, value in attrs}
        if tag == "input" and attributes.get("name") == "isAuthRequired" and attributes.get("value") == "true":
            self.asks_for_login = True
        elif tag == "script" and attributes.get("type") == "text/x-apple-plist":
            self._in, self._text = "plist", []
        elif tag == "title":
            self._in, self._text = "title", []

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._in == "plist" and tag == "script":
            self.plists.append("".join(self._text))
        elif self._in == "title" and tag == "title":
            self.title = " ".join("".join(self._text).split())
        else:
            return
        self._in = None


def _judge_html(body: bytes) -> LockCheck:
    page = _Page()
    page.feed(body.decode("utf-8", "replace"))
    page.close()
    if page.asks_for_login:  # //input[@name='isAuthRequired' and @value='true']
        return LockCheck(Lock.LOCKED, LOCKED_BY_APPLE, ACTIVATION_SERVER)
    if page.plists:  # //script[@type='text/x-apple-plist']/plist
        return _judge_plist(_plist(_with_header(page.plists[0])))
    return _unknown(f"Apple's activation server sent a page without a decision{_said(page.title)}")


def _with_header(embedded: str) -> bytes:
    """An embedded ``<plist>`` element as a plist document plistlib reads."""
    text = embedded.strip()
    if not text.startswith("<?xml"):
        text = '<?xml version="1.0" encoding="UTF-8"?>' + text
    return text.encode()


# Words for the operator ---------------------------------------------------


def _unknown(reason: str) -> LockCheck:
    return LockCheck(Lock.UNKNOWN, reason, ACTIVATION_SERVER)


def _page_text(body: bytes) -> str:
    """The title of an error page, or its first words."""
    text = body[:4096].decode("utf-8", "replace")
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
    if title:
        return _clip(title.group(1))
    return _clip(re.sub(r"<[^>]*>", " ", text))


def _said(words: str) -> str:
    return f": {words}" if words else ""


def _clip(text: str | None) -> str:
    words = " ".join((text or "").split())
    return words if len(words) <= MESSAGE_LIMIT else words[: MESSAGE_LIMIT - 3] + "..."
