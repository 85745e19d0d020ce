"""The erasure certificate of a successful restore, after NIST SP 800-88 Rev. 1 Appendix G.

A JSON document with the sample certificate's fields — who sanitized (operator,
station, location), the media (manufacturer, model, serial, media type), how
(method type Purge, cryptographic erase by iOS restore or by the phone's own erase, which
job, tool and version), the
verification (the post-restore lock/setup check) and the date — plus the
phone's UDID and ECID, what refurbishers record (IMEI, IMEI2, MEID, storage, colours and
battery health; null where the phone did not say: format 3) and the IPSW restored. It is signed with the station's
Ed25519 key over the canonical JSON of everything but ``signature``; ``signer``
names the key by fingerprint. Only sessions that reach DONE get one; a restore
whose post-check could not tell says ``not verified`` and why.

``records`` names the chain head when the certificate was issued (position,
record and hash): every certificate a customer takes away is a witness of the
records up to it, which ``station records verify --against`` checks.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from station.records import chain, db, keys

FORMAT = "station-erasure-certificate/4"  # 4: sanitization.job; 3: the phone's facts in media
METHOD_DETAIL = "Purge: cryptographic erase by iOS restore"
# Both jobs purge by cryptographic erase (NIST SP 800-88 Rev. 1, Table A-2, Apple iOS): a restore
# reinstalls iOS; an erase has the phone erase itself (mobilebackup2 EraseDevice) and keeps it.
JOBS = {"restore": ("restore", METHOD_DETAIL),
        "erase": ("erase (EraseDevice)",
                  "Purge: cryptographic erase by the phone's Erase All Content and Settings")}
VERIFICATION_METHOD = "post-restore Activation Lock / setup check"


@dataclass(frozen=True)
class Issuer:
    """Who and what sanitizes: from ``[station]`` and the installed packages, read once."""

    station_id: str
    operator: str
    location: str
    tool: str


def tool_version() -> str:
    return f"station {_version('station')}; pymobiledevice3 {_version('pymobiledevice3')}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def build(session: dict[str, Any], issuer: Issuer, signer: Ed25519PublicKey,
          head: tuple[int, int | None, str] = (0, None, chain.GENESIS)) -> dict[str, Any]:
    """The unsigned document for a session that reached DONE; ``head``: the chain head now."""
    verified = bool(session["verified"])
    job, method_detail = JOBS[session.get("job") or "restore"]  # before v4 every job was a restore
    return {
        "format": FORMAT,
        "title": "Certificate of Sanitization (NIST SP 800-88 Rev. 1)",
        "certificate_id": f"{session['station_id']}-{session['id']}",
        "record_id": session["id"],
        "date": session["result_at"],
        "person": {"name": session["operator"], "location": session["location"],
                   "station": session["station_id"], "slot": session["slot"]},
        "media": {
            "manufacturer": "Apple",
            "model": session["model"],
            "serial": session["serial"],
            "media_type": "flash memory",
            "udid": session["udid"],
            "ecid": session["ecid"],
            "ios_before": session["ios_before"],
            "imei": session.get("imei"),
            "imei2": session.get("imei2"),
            "meid": session.get("meid"),
            "storage_bytes": session.get("storage_bytes"),
            "color": session.get("color"),
            "enclosure_color": session.get("enclosure_color"),
            "battery": {
                "cycle_count": session.get("battery_cycle_count"),
                "design_capacity_mah": session.get("battery_design_capacity"),
                "full_charge_capacity_mah": session.get("battery_full_charge_capacity"),
            },
        },
        "sanitization": {
            "method_type": "Purge",
            "method": "cryptographic erase",
            "method_detail": method_detail,
            "job": job,
            # What erased: pymobiledevice3's Restore, or said plainly when it was a simulation.
            "tool": session.get("restore_tool") or issuer.tool,
            "station_software": issuer.tool,
            "started": session["restore_started_at"],
            "completed": session["restore_finished_at"],
            "attempts": session["attempts"],
            # An erase installs nothing: no IPSW, and the phone keeps the iOS it came with.
            "firmware": {"build": None, "ios": session["ios_before"], "sha256": None}
            if session.get("job") == "erase" else
            {"build": session["ipsw_build"], "ios": session["ios_after"], "sha256": session["ipsw_sha256"]},
        },
        "verification": {
            "method": f"{VERIFICATION_METHOD} ({session['verify_method'] or 'unspecified'})",
            # The machine's reason for an unverified DONE already reads "not verified: <why>".
            "result": "passed" if verified else session["reason"] or "not verified",
            "lock": session["verify_result"],
        },
        "records": {"chain_position": head[0], "chain_record": head[1], "chain_hash": head[2]},
        "signer": {"algorithm": "Ed25519", "public_key": keys.fingerprint(signer)},
    }


def sign(document: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    return dict(document, signature=keys.sign(key, chain.canonical(document)))


def is_signed_by(document: dict[str, Any], public: Ed25519PublicKey) -> bool:
    """The signature is valid and was made by ``public`` (not merely by some key)."""
    unsigned = dict(document)
    signature = unsigned.pop("signature", None)
    if not isinstance(signature, str):
        return False
    if unsigned.get("signer", {}).get("public_key") != keys.fingerprint(public):
        return False
    return keys.is_valid(public, chain.canonical(unsigned), signature)


def issue(conn: sqlite3.Connection, key: Ed25519PrivateKey, session_id: int,
          issuer: Issuer) -> dict[str, Any]:
    """Build, sign and store the certificate (inside the caller's transaction)."""
    session = db.session(conn, session_id)
    if session is None:
        raise KeyError(session_id)
    document = sign(build(session, issuer, key.public_key(), chain.current_head(conn)), key)
    conn.execute("INSERT OR REPLACE INTO certificates VALUES (?, ?, ?, ?)",
                 (session_id, session["serial"], session["result_at"],
                  chain.canonical(document).decode("utf-8")))
    return document


class NotItsCertificate(Exception):
    """A stored certificate is not what its row says (edited): the message names it."""


KINDS = ("serial", "imei", "ecid", "record")  # what `station cert` finds a certificate by


@dataclass(frozen=True)
class Found:
    """A certificate found for a look-up: the newest of the phone (or the record's own)."""

    kind: str  # which of KINDS matched
    session_id: int
    document: str


def find(conn: sqlite3.Connection, term: str, kind: str | None = None) -> list[Found]:
    """The newest certificate for ``term`` read as each kind in ``kinds`` (all by default) that
    matches one: a serial, an IMEI (also a second IMEI), an ECID (hex as the station shows it,
    with or without ``0x``/``ECID:`` and leading zeros) or a record id (``123`` or ``#123``).
    One entry per kind that found a certificate; the caller decides when two disagree.

    The certificates table's ``serial`` and ``issued_at`` and the session's columns are an
    index outside the signature: the document itself must name what it was found by, or
    ``NotItsCertificate``.
    """
    present = set(db.session_columns(conn))
    found = []
    for each in (kind,) if kind else KINDS:
        where = _where(each, term, present)
        if where is None:
            continue
        condition, value, field, shown = where
        row = conn.execute("SELECT c.session_id, c.document FROM certificates c JOIN sessions s "
                           f"ON s.id = c.session_id WHERE {condition} "
                           "ORDER BY c.issued_at DESC, c.session_id DESC LIMIT 1", value).fetchone()
        if row is None:
            continue
        problem = mismatch(row[1], row[0], field, shown)
        if problem:
            raise NotItsCertificate(f"the certificate stored for {each} {term} {problem} (edited?)")
        found.append(Found(each, row[0], row[1]))
    return found


def split_kind(term: str) -> tuple[str | None, str]:
    """(kind, rest) of ``ecid:1A2B``, ``imei:...``, ``serial:...``, ``record:12``; (None, term) else.
    ``ECID:`` is also how iBoot's serial string spells it, so it names the kind too."""
    head, colon, rest = term.partition(":")
    if colon and head.lower() in KINDS:
        return head.lower(), rest
    return None, term


def kinds_of(term: str) -> list[str]:
    """The kinds ``term`` can be read as (``NOSUCH`` only as a serial; ``123`` as four)."""
    return [kind for kind in KINDS if _where(kind, term, {"imei"}) is not None]


def _where(kind: str, term: str, present: set[str]) -> tuple[str, tuple[Any, ...], tuple[str, ...], Any] | None:
    """(SQL condition, its parameters, the document's field that must agree, its value) for
    ``term`` read as ``kind``; None when ``term`` cannot be one."""
    text = term.strip()
    if kind == "serial":
        return ("c.serial = ?", (text,), ("media", "serial"), text) if text else None
    if kind == "imei":
        if not (len(text) == 15 and text.isascii() and text.isdigit()) or "imei" not in present:
            return None
        return ("(s.imei = ? OR s.imei2 = ?)", (text, text), ("media", "imei", "imei2"), text)
    if kind == "ecid":
        ecid = ecid_of(text)
        return None if ecid is None else ("s.ecid = ?", (ecid,), ("media", "ecid"), ecid)
    if kind == "record":
        number = text.removeprefix("#")
        if not (number.isascii() and number.isdigit()) or len(number) > 18:
            return None
        return ("c.session_id = ?", (int(number),), ("record_id",), int(number))
    raise ValueError(kind)


def ecid_of(text: str) -> str | None:
    """An ECID as the records store it (upper-case hex, no leading zeros), or None."""
    digits = text.strip()
    for prefix in ("ECID:", "ecid:", "0x", "0X"):
        digits = digits.removeprefix(prefix)
    if not digits or len(digits) > 16 or not all(c in "0123456789abcdefABCDEF" for c in digits):
        return None
    value = int(digits, 16)
    return f"{value:X}" if value else None


def latest_for(conn: sqlite3.Connection, serial: str) -> str | None:
    """The stored text of the newest certificate of a serial number."""
    found = find(conn, serial, "serial")
    return found[0].document if found else None


def mismatch(document: str, session_id: int, field: tuple[str, ...] | str = ("media", "serial"),
             value: Any = None) -> str:
    """How a stored document differs from the row it is filed under; "" when it does not.

    ``field``: where the document names what it was filed or found by (``("media", "serial")``,
    ``("media", "imei", "imei2")``: either, ``("record_id",)``); a plain string is a serial.
    """
    if isinstance(field, str):
        field, value = ("media", "serial"), field
    try:
        parsed = json.loads(document)
        record = parsed["record_id"]
        place = parsed[field[0]] if len(field) > 1 else parsed
    except (ValueError, KeyError, TypeError):
        return "is not a certificate"
    if record != session_id:
        return f"is record #{record}'s, filed under record #{session_id}"
    names = field[1:] or field
    said = [place.get(name) if isinstance(place, dict) else None for name in names]
    if value not in said:
        return f"names {names[0]} {said[0] if said[0] is not None else '?'}, filed under {value}"
    return ""
