"""Checks the records as an auditor would: the chain, its signed head and every certificate."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from station.records import certificate, chain, db, keys


@dataclass(frozen=True)
class Verdict:
    records: int  # sealed records checked
    certificates: int
    open: int  # sessions not closed yet: not in the chain until they are
    problem: str | None = None  # the first bad record; None when all is well


def verify(conn: sqlite3.Connection, public: Ed25519PublicKey) -> Verdict:
    records = certificates = 0
    prev_id, prev_hash = None, chain.GENESIS

    def verdict(problem: str | None = None) -> Verdict:
        opened = conn.execute("SELECT count(*) FROM sessions WHERE ended_at IS NULL").fetchone()[0]
        return Verdict(records, certificates, opened, problem)

    rows = conn.execute("SELECT id, seq, prev_id, prev_hash, hash, slot, serial FROM sessions "
                        "WHERE seq IS NOT NULL ORDER BY seq").fetchall()
    for row in rows:
        name = _name(row)
        if row["seq"] != records + 1:
            return verdict(f"record #{row['prev_id']} is missing (deleted?): chain position "
                           f"{records + 1} is empty, {name} is at {row['seq']}")
        if row["prev_id"] != prev_id or row["prev_hash"] != prev_hash:
            return verdict(f"{name}: does not follow record #{prev_id} (chain broken)")
        document = db.certificate_text(conn, row["id"])
        if document is not None:
            if not _signed(document, public):
                return verdict(f"{name}: certificate signature invalid")
            certificates += 1
        if chain.record_hash(conn, row["id"]) != row["hash"]:
            return verdict(f"{name}: content does not match its hash (edited)")
        records += 1
        prev_id, prev_hash = row["id"], row["hash"]
    problem = _check_head(conn, public, records, prev_id, prev_hash)
    if problem:
        return verdict(problem)
    for row in conn.execute("SELECT s.id, s.slot, s.serial, c.document FROM certificates c "
                            "JOIN sessions s ON s.id = c.session_id WHERE s.seq IS NULL ORDER BY s.id"):
        if not _signed(row["document"], public):
            return verdict(f"{_name(row)}: certificate signature invalid")
        certificates += 1
    return verdict()


def _check_head(conn: sqlite3.Connection, public: Ed25519PublicKey, records: int,
                last_id: int | None, last_hash: str) -> str | None:
    head, signature = db.get_meta(conn, "head"), db.get_meta(conn, "head_signature")
    if head is None:
        return f"record #{last_id}: chain head is missing" if records else None
    if signature is None or not keys.is_valid(public, head.encode("ascii"), signature):
        return "chain head signature invalid: the chain was rewritten"
    seq, head_id, head_hash = chain.parse_head(head)
    if seq > records:
        return f"record #{head_id} is missing (deleted?): the chain ends at position {records}, its head at {seq}"
    if (seq, head_id, head_hash) != (records, last_id, last_hash):
        return f"record #{last_id}: does not match the signed chain head (record #{head_id})"
    return None


def _signed(document: str, public: Ed25519PublicKey) -> bool:
    try:
        parsed = json.loads(document)
    except ValueError:
        return False
    return isinstance(parsed, dict) and certificate.is_signed_by(parsed, public)


def _name(row: sqlite3.Row) -> str:
    serial = f", {row['serial']}" if row["serial"] else ""
    return f"record #{row['id']} (slot {row['slot']}{serial})"
