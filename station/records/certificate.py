"""The erasure certificate of a successful restore, after NIST SP 800-88 Rev. 1 Appendix G.

A JSON document with the sample certificate's fields — who sanitized (operator,
station, location), the media (manufacturer, model, serial, media type), how
(method type Purge, cryptographic erase by iOS restore, tool and version), the
verification (the post-restore lock/setup check) and the date — plus the
phone's UDID and ECID and the IPSW restored. It is signed with the station's
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

FORMAT = "station-erasure-certificate/2"
METHOD_DETAIL = "Purge: cryptographic erase by iOS restore"
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
        },
        "sanitization": {
            "method_type": "Purge",
            "method": "cryptographic erase",
            "method_detail": METHOD_DETAIL,
            # What erased: pymobiledevice3's Restore, or said plainly when it was a simulation.
            "tool": session.get("restore_tool") or issuer.tool,
            "station_software": issuer.tool,
            "started": session["restore_started_at"],
            "completed": session["restore_finished_at"],
            "attempts": session["attempts"],
            "firmware": {"build": session["ipsw_build"], "ios": session["ios_after"],
                         "sha256": session["ipsw_sha256"]},
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


def latest_for(conn: sqlite3.Connection, serial: str) -> str | None:
    """The stored text of the newest certificate of a serial number.

    The ``serial`` and ``issued_at`` columns are an index outside the signature: the
    document itself must name the serial and the record, or ``NotItsCertificate``.
    """
    row = conn.execute("SELECT session_id, document FROM certificates WHERE serial = ? "
                       "ORDER BY issued_at DESC, session_id DESC LIMIT 1", (serial,)).fetchone()
    if row is None:
        return None
    problem = mismatch(row[1], row[0], serial)
    if problem:
        raise NotItsCertificate(f"the certificate stored for serial {serial} {problem} (edited?)")
    return row[1]


def mismatch(document: str, session_id: int, serial: str) -> str:
    """How a stored document differs from the row it is filed under; "" when it does not."""
    try:
        parsed = json.loads(document)
        media, record = parsed["media"], parsed["record_id"]
    except (ValueError, KeyError, TypeError):
        return "is not a certificate"
    if record != session_id:
        return f"is record #{record}'s, filed under record #{session_id}"
    if not isinstance(media, dict) or media.get("serial") != serial:
        return f"names serial {media.get('serial') if isinstance(media, dict) else '?'}, filed under {serial}"
    return ""
