"""The erasure certificate as a printable page, for a shop to hand to its customer.

Made from the signed JSON document (``station.records.certificate``), every value escaped; the
page names the signature and the key, so the customer's copy can be checked against the JSON
(`station cert`, `station records verify --against`). No script, no outside resource: it
prints the same offline.
"""
from __future__ import annotations

from html import escape
from typing import Any

STYLE = """
body { font: 11pt/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 44em; color: #000; }
h1 { font-size: 16pt; margin-bottom: 0.2em; }
p.sub { margin-top: 0; color: #333; }
table { border-collapse: collapse; width: 100%; margin: 0.6em 0 1.2em; }
th, td { text-align: left; vertical-align: top; padding: 0.25em 0.5em; border-bottom: 1px solid #ccc; }
th { width: 14em; font-weight: 600; }
code { font-size: 9pt; word-break: break-all; }
@media print { body { margin: 0; } }
"""


def render(document: dict[str, Any]) -> str:
    person, media, how = document.get("person", {}), document.get("media", {}), document.get("sanitization", {})
    verification, records = document.get("verification", {}), document.get("records", {})
    firmware, battery = how.get("firmware") or {}, media.get("battery") or {}
    signer = document.get("signer", {})
    sections = [
        ("Device", [("Manufacturer", media.get("manufacturer")), ("Model", media.get("model")),
                    ("Serial number", media.get("serial")), ("IMEI", media.get("imei")),
                    ("Second IMEI", media.get("imei2")), ("MEID", media.get("meid")),
                    ("ECID", media.get("ecid")), ("UDID", media.get("udid")),
                    ("Storage", _storage(media.get("storage_bytes"))), ("Media type", media.get("media_type")),
                    ("iOS before", media.get("ios_before")),
                    ("Battery cycles", battery.get("cycle_count"))]),
        ("Sanitization", [("Method", f"{how.get('method_type', '')}: {how.get('method', '')}"),
                          ("Detail", how.get("method_detail")), ("Job", how.get("job")),
                          ("Tool", how.get("tool")), ("Started", how.get("started")),
                          ("Completed", how.get("completed")), ("Attempts", how.get("attempts")),
                          ("iOS installed", firmware.get("ios")), ("Build", firmware.get("build"))]),
        ("Verification", [("Method", verification.get("method")), ("Result", verification.get("result")),
                          ("Lock", verification.get("lock"))]),
        ("Performed by", [("Operator", person.get("name")), ("Location", person.get("location")),
                          ("Station", person.get("station")), ("Slot", person.get("slot")),
                          ("Date", document.get("date"))]),
        ("Proof", [("Certificate", document.get("certificate_id")), ("Record", document.get("record_id")),
                   ("Records chain", f"position {records.get('chain_position')}, "
                                     f"hash {records.get('chain_hash')}"),
                   ("Signed by", f"{signer.get('algorithm', '')} key {signer.get('public_key', '')}"),
                   ("Signature", document.get("signature")), ("Format", document.get("format"))]),
    ]
    body = "".join(f"<h2>{escape(title)}</h2><table>{_rows(rows)}</table>" for title, rows in sections)
    title = escape(str(document.get("title", "Certificate of Sanitization")))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{STYLE}</style></head><body><h1>{title}</h1>"
            f'<p class="sub">Certificate {escape(str(document.get("certificate_id", "")))}</p>'
            f"{body}</body></html>")


def _rows(rows: list[tuple[str, Any]]) -> str:
    return "".join(f"<tr><th>{escape(name)}</th><td>{_value(value)}</td></tr>" for name, value in rows
                   if value not in (None, ""))


def _value(value: Any) -> str:
    text = escape(str(value))
    return f"<code>{text}</code>" if len(text) > 40 and " " not in text else text


def _storage(size: Any) -> str | None:
    return f"{size / 1e9:.0f} GB" if isinstance(size, int) and size > 0 else None
