"""The models the station has had on its slots lately, from its records: what prefetch keeps ready."""
from __future__ import annotations

from pathlib import Path

from station.config import PRODUCT_TYPE
from station.records import db
from station.records.statedir import RecordsUnavailable

DAY_S = 86400


def models_seen(state_dir: Path, days: int, now: float) -> tuple[str, ...]:
    """ProductTypes of the phones whose sessions started in the ``days`` days before ``now`` (epoch
    seconds), the most recent first; none when there are no records (yet) to read."""
    if days <= 0:
        return ()
    try:
        with db.reading(state_dir) as conn:  # read-only: the station's writer is not disturbed
            rows = conn.execute("SELECT model, max(started_at) AS last FROM sessions WHERE started_at >= ? "
                                "GROUP BY model ORDER BY last DESC", (db.iso(now - days * DAY_S),)).fetchall()
    except RecordsUnavailable:  # no records yet, or no sessions table yet
        return ()
    # A phone in DFU that was never identified has no ProductType: nothing to prefetch for it.
    return tuple(row[0] for row in rows if PRODUCT_TYPE.fullmatch(row[0] or ""))
