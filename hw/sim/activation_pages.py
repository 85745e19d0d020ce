"""The answers Apple's activation server gives to ``deviceActivation``, one per kind.

Each shape is what libideviceactivation's parser looks for (src/activation.c):
a plist with ``ActivationRecord`` or an ``iphone-activation`` node holding an
``activation-record`` (``idevice_activation_activation_record_from_plist``), an
``ack-received`` acknowledgement, BuddyML (``/xmlui/navigationBar/@title`` directly
under ``<xmlui>`` on an error page, ``/xmlui/clientInfo[@ack-received='true']``,
``/xmlui/page//editableTextRow`` and ``/xmlui/serverInfo/@isAuthRequired`` on the
Apple-ID form), and HTML (``//input[@name='isAuthRequired' and @value='true']``,
``//script[@type='text/x-apple-plist']/plist``). The texts are ours.
"""
from __future__ import annotations

import os
import plistlib
from collections.abc import Callable
from xml.sax.saxutils import quoteattr

from hw.sim.phone import SimPhone

Answer = tuple[int, str, bytes]  # HTTP status, Content-Type, body


def activation_record(phone: SimPhone) -> dict[str, object]:
    token = plistlib.dumps({"UniqueDeviceID": phone.udid, "SerialNumber": phone.serial})
    return {
        "unbrick": True,
        "AccountToken": token,
        "AccountTokenCertificate": os.urandom(32),
        "AccountTokenSignature": os.urandom(32),
        "DeviceCertificate": os.urandom(32),
        "FairPlayKeyData": os.urandom(32),
        "LDActivationVersion": 2,
    }


def record(phone: SimPhone) -> Answer:
    return 200, "text/xml", plistlib.dumps({"ActivationRecord": activation_record(phone)})


def record_in_html(phone: SimPhone) -> Answer:
    """The iTunes-style page: the record as a plist inside a script element."""
    plist = plistlib.dumps({"iphone-activation": {"activation-record": activation_record(phone)}})
    embedded = plist.decode().split("?>", 1)[1].split("\n", 2)[2]  # drop the XML header and DOCTYPE
    page = ("<!DOCTYPE html><html><head><title>iPhone Activation</title>"
            f'<script id="protocol" type="text/x-apple-plist">{embedded}</script>'
            "</head><body></body></html>")
    return 200, "text/html", page.encode()


def apple_id_form(phone: SimPhone) -> Answer:
    """The BuddyML page Apple sends a locked phone (pymobiledevice3 and libideviceactivation parse it)."""
    footer = ("This iPhone is linked to an Apple ID. Enter the Apple ID and password that were "
              "used to set up this iPhone.")
    page = (
        "<xmlui><page>"
        '<navigationBar title="Activation Lock" hidesBackButton="false"/>'
        "<tableView><section>"
        '<editableTextRow id="login" label="Apple ID" placeholder="example@icloud.com" keyboardType="emailAddress"/>'
        '<editableTextRow id="password" label="Password" placeholder="Required" secure="true"/>'
        f"</section><section><footer>{footer}</footer></section></tableView>"
        "</page>"
        f'<serverInfo isAuthRequired="true" product-type={quoteattr(phone.product_type)}/>'
        "</xmlui>")
    return 200, "application/x-buddyml", page.encode()


def apple_id_form_in_html(phone: SimPhone) -> Answer:
    page = ('<!DOCTYPE html><html><head><title>Activation Lock</title></head><body>'
            '<form method="post"><input type="hidden" name="isAuthRequired" value="true"/>'
            '<input type="text" name="login"/><input type="password" name="password"/>'
            "</form></body></html>")
    return 200, "text/html", page.encode()


def buddyml_error(phone: SimPhone) -> Answer:
    page = ('<xmlui><navigationBar title="Activation Error"/>'
            "<page><tableView><section><footer>Your request could not be completed.</footer>"
            "</section></tableView></page></xmlui>")
    return 200, "application/x-buddyml", page.encode()


def buddyml_ack(phone: SimPhone) -> Answer:
    return 200, "application/x-buddyml", b'<xmlui><clientInfo ack-received="true"/></xmlui>'


def plist_ack(phone: SimPhone) -> Answer:
    return 200, "text/xml", plistlib.dumps({"iphone-activation": {"ack-received": True}})


def html_error(phone: SimPhone) -> Answer:
    page = ("<!DOCTYPE html><html><head><title>Activation Error</title></head>"
            "<body><p>The activation server is temporarily unavailable.</p></body></html>")
    return 200, "text/html", page.encode()


def server_error(phone: SimPhone) -> Answer:
    return 500, "text/html", b"<html><head><title>500 Internal Server Error</title></head></html>"


def wrong_type(phone: SimPhone) -> Answer:
    return 200, "application/json", b"{}"


# What a phone's ``activation_answer`` names; "auto" is Apple's real choice.
ANSWERS: dict[str, Callable[[SimPhone], Answer]] = {
    "record": record,
    "record-html": record_in_html,
    "form": apple_id_form,
    "form-html": apple_id_form_in_html,
    "error": buddyml_error,
    "ack": buddyml_ack,
    "ack-plist": plist_ack,
    "error-html": html_error,
    "http-500": server_error,
    "wrong-type": wrong_type,
}
GIVES_A_RECORD = frozenset({"record", "record-html"})


def answer_for(phone: SimPhone) -> Answer:
    """Apple's answer: the Apple-ID form for a locked phone, else a record, unless the phone says otherwise."""
    kind = phone.activation_answer
    if kind == "auto":
        kind = "form" if phone.activation_lock else "record"
    return ANSWERS[kind](phone)
