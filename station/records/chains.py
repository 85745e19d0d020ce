"""Starting a new chain on purpose: ``station records new-chain --reason TEXT``.

When the key is lost, or the records are (a dead card, a lost WAL), the station
refuses to go on as if nothing happened: a fresh key or an empty database would
make every old record look forged, or make lost records look like none. The way
on is this command, run by a person: it moves the current records (database,
WAL, head file) into ``archive/<time>/``, never deleting anything, and starts
a new database that says why and where the old chain went (``meta
previous_chain``). The key stays if there is one, so old certificates still
verify; if it was lost, the next start creates a new one.
"""
from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from station.records import db, headfile
from station.records.statedir import RecordsUnavailable, lock, prepare

ARCHIVE_DIR = "archive"


def start_new(state_dir: Path, reason: str) -> Path:
    """Archive the current records and open an empty chain that records ``reason``."""
    if not reason.strip():
        raise RecordsUnavailable("--reason must say why")
    fd = lock(prepare(state_dir))  # never under a running station
    try:
        moving = [path for path in (db.path_in(state_dir), state_dir / f"{db.DB_FILE}-wal",
                                    state_dir / f"{db.DB_FILE}-shm", headfile.path_in(state_dir))
                  if path.exists()]
        if not moving:
            raise RecordsUnavailable(f"no records in {state_dir}: a new chain starts by itself")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        archive = state_dir / ARCHIVE_DIR / stamp
        archive.mkdir(mode=0o700, parents=True)
        for path in moving:
            os.replace(path, archive / path.name)
        conn = db.open_store(state_dir)
        try:
            with db.transaction(conn):
                db.set_meta(conn, "previous_chain", json.dumps({
                    "archived": str(archive.relative_to(state_dir)), "reason": reason,
                    "at": db.iso(time.time())}, ensure_ascii=False))
        finally:
            conn.close()
        return archive
    finally:
        os.close(fd)
