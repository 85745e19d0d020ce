"""Checks the records as an auditor would: the chain, its signed heads, every row and certificate.

What it proves, with only the station's public key: every sealed record is the
one the station sealed (content, order, none missing between the first and the
signed head); every certificate is signed by the station, belongs to the row it
is filed under, and names a chain head that is in the records; no closed row sits
outside the chain; every open row was opened by the station. With the head file
(``records.head``) beside the database it also catches a database rolled back to
an older copy. What it cannot prove locally: that someone holding the private
key (root on the station) did not rewrite everything and re-sign it, or roll
back both the database and the head file. Certificates held elsewhere witness
that: ``--against CERT...`` checks the records against each of them.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from station.records import certificate, chain, db, headfile, keys


@dataclass(frozen=True)
class Verdict:
    records: int  # sealed records checked
    certificates: int
    open: int  # sessions not closed yet: not in the chain until they are
    witnesses: int = 0  # certificates held elsewhere that the records agree with
    problem: str | None = None  # the first thing wrong; None when all is well


@dataclass(frozen=True)
class Witness:
    """A certificate held outside the station (a customer's copy), by the name it came from."""

    name: str
    document: Any


class _Problem(Exception):
    pass


def verify(conn: sqlite3.Connection, public: Ed25519PublicKey, head: headfile.Head | None = None,
           witnesses: Sequence[Witness] = ()) -> Verdict:
    counts = {"records": 0, "certificates": 0}
    try:
        _chain(conn, public, counts)
        _head(conn, public, counts["records"])
        if head is not None:
            _head_file(conn, public, head, counts["records"])
        _unchained(conn, public)
        _certificates(conn, public, counts)
        for witness in witnesses:
            _witness(conn, public, witness, counts["records"])
        problem = None
    except _Problem as found:
        problem = str(found)
    opened = conn.execute("SELECT count(*) FROM sessions WHERE ended_at IS NULL").fetchone()[0]
    return Verdict(counts["records"], counts["certificates"], opened,
                   len(witnesses) if problem is None else 0, problem)


def _chain(conn: sqlite3.Connection, public: Ed25519PublicKey, counts: dict[str, int]) -> None:
    prev_id, prev_hash = None, chain.GENESIS
    rows = conn.execute("SELECT id, seq, prev_id, prev_hash, hash, slot, serial FROM sessions "
                        "WHERE seq IS NOT NULL ORDER BY seq").fetchall()
    for row in rows:
        name, position = _name(row), counts["records"] + 1
        if row["seq"] != position:
            raise _Problem(f"record #{row['prev_id']} is missing (deleted?): chain position "
                           f"{position} is empty, {name} is at {row['seq']}")
        if row["prev_id"] != prev_id or row["prev_hash"] != prev_hash:
            raise _Problem(f"{name}: does not follow record #{prev_id} (chain broken)")
        text = db.certificate_text(conn, row["id"])
        if text is not None and not _signed(text, public):
            raise _Problem(f"{name}: certificate signature invalid")
        if chain.record_hash(conn, row["id"]) != row["hash"]:
            raise _Problem(f"{name}: content does not match its hash (edited)")
        counts["records"] = position
        prev_id, prev_hash = row["id"], row["hash"]


def _head(conn: sqlite3.Connection, public: Ed25519PublicKey, records: int) -> None:
    head, signature = db.get_meta(conn, "head"), db.get_meta(conn, "head_signature")
    if head is None:
        if records:
            raise _Problem(f"chain head is missing: {records} records are sealed")
        return
    if signature is None or not keys.is_valid(public, head.encode("ascii"), signature):
        raise _Problem("chain head signature invalid: the chain was rewritten")
    seq, head_id, head_hash = chain.parse_head(head)
    last = _at(conn, records)
    if seq > records:
        raise _Problem(f"record #{head_id} is missing (deleted?): the chain ends at position "
                       f"{records}, its head at {seq}")
    if (seq, head_id, head_hash) != (records, last[0], last[1]):
        raise _Problem(f"record #{last[0]}: does not match the signed chain head (record #{head_id})")


def _head_file(conn: sqlite3.Connection, public: Ed25519PublicKey, head: headfile.Head,
               records: int) -> None:
    if not head.signed_by(public):
        raise _Problem(f"{headfile.HEAD_FILE}: signature invalid")
    if head.seq > records:
        raise _Problem(f"records after position {records} are missing (rolled back?): the station "
                       f"sealed record #{head.session_id} at position {head.seq} ({headfile.HEAD_FILE})")
    if _at(conn, head.seq) != (head.session_id, head.digest):
        raise _Problem(f"chain position {head.seq} is not the record #{head.session_id} the station "
                       f"sealed there ({headfile.HEAD_FILE}): the chain was rewritten")


def _unchained(conn: sqlite3.Connection, public: Ed25519PublicKey) -> None:
    """Rows outside the chain: only sessions still open, each opened by the station."""
    for row in conn.execute("SELECT * FROM sessions WHERE seq IS NULL ORDER BY id"):
        session = dict(row)
        if session["ended_at"] is not None or session["hash"] is not None:
            raise _Problem(f"{_name(row)}: closed but not in the chain (inserted?)")
        if not chain.opened_by_station(conn, public, session):
            raise _Problem(f"{_name(row)}: open, but the station did not open it (inserted or edited?)")


def _certificates(conn: sqlite3.Connection, public: Ed25519PublicKey, counts: dict[str, int]) -> None:
    rows = conn.execute("SELECT c.session_id, c.serial, c.issued_at, c.document, s.id, s.slot, "
                        "s.result, s.result_at, s.serial AS session_serial FROM certificates c "
                        "LEFT JOIN sessions s ON s.id = c.session_id ORDER BY c.session_id")
    for row in rows:
        if row["id"] is None:
            raise _Problem(f"certificate of record #{row['session_id']}: there is no such record")
        name = f"record #{row['id']} (slot {row['slot']}, {row['session_serial']})"
        document = _parsed(row["document"])
        if document is None or not _signed(row["document"], public):
            raise _Problem(f"{name}: certificate signature invalid")
        problem = certificate.mismatch(row["document"], row["id"], row["session_serial"])
        if problem:
            raise _Problem(f"{name}: its certificate {problem}")
        if (row["serial"], row["issued_at"]) != (row["session_serial"], document.get("date")):
            raise _Problem(f"{name}: certificate filed under serial {row['serial']} at "
                           f"{row['issued_at']}, but issued for {row['session_serial']} at "
                           f"{document.get('date')} (edited)")
        if row["result"] != "done" or row["result_at"] != document.get("date"):
            raise _Problem(f"{name}: has a certificate but its result is {row['result']}")
        _names_a_head_in_the_records(conn, document, name)
        counts["certificates"] += 1


def _witness(conn: sqlite3.Connection, public: Ed25519PublicKey, witness: Witness, records: int) -> None:
    document = witness.document
    if not isinstance(document, dict) or not certificate.is_signed_by(document, public):
        raise _Problem(f"{witness.name}: not a certificate signed by {keys.fingerprint(public)}")
    record = document.get("record_id")
    stored = db.certificate_text(conn, record) if isinstance(record, int) else None
    if stored is None:
        raise _Problem(f"{witness.name}: its record #{record} is missing from the records (deleted?)")
    if stored != chain.canonical(document).decode("utf-8"):
        raise _Problem(f"{witness.name}: record #{record}'s stored certificate differs from it")
    _names_a_head_in_the_records(conn, document, witness.name)


def _names_a_head_in_the_records(conn: sqlite3.Connection, document: dict[str, Any], name: str) -> None:
    """The chain head a certificate was issued at must be in the records, unchanged."""
    head = document.get("records")
    if head is None:  # certificates of format 1 carried no head
        return
    position = head.get("chain_position") if isinstance(head, dict) else None
    if not isinstance(position, int) or position < 0:
        raise _Problem(f"{name}: its certificate names no chain position")
    if position == 0:
        return
    if _at(conn, position) != (head.get("chain_record"), head.get("chain_hash")):
        raise _Problem(f"{name}: issued when the chain ended at record #{head.get('chain_record')} "
                       f"(position {position}), which the records no longer hold (rolled back?)")


def _at(conn: sqlite3.Connection, seq: int) -> tuple[int | None, str]:
    row = conn.execute("SELECT id, hash FROM sessions WHERE seq = ?", (seq,)).fetchone()
    return (row["id"], row["hash"]) if row else (None, chain.GENESIS)


def _signed(document: str, public: Ed25519PublicKey) -> bool:
    parsed = _parsed(document)
    return parsed is not None and certificate.is_signed_by(parsed, public)


def _parsed(document: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(document)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _name(row: sqlite3.Row) -> str:
    serial = f", {row['serial']}" if row["serial"] else ""
    return f"record #{row['id']} (slot {row['slot']}{serial})"
