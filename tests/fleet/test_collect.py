"""The collector's judgement, record by record, without a broker: the station's own records as
the outbox publishes them (``payloads.record``), fed to ``Collector`` in various orders."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet.conftest import STATION_ID, make_records

from station.fleet import payloads
from station.fleet.collect import Collector, KeyConflict
from station.records import chain, db, keys


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Six sealed records (restores with certificates, locked phones) as published."""
    state = tmp_path_factory.mktemp("station") / "state"
    make_records(state, 6)
    key = keys.load_or_create(state, may_create=False)
    conn = db.connect(db.path_in(state))
    try:
        ids = [row[0] for row in conn.execute("SELECT id FROM sessions WHERE seq IS NOT NULL ORDER BY seq")]
        published = [payloads.record(conn, session_id, key) for session_id in ids]
        # The collector's hash is the station's: the same content, rebuilt from the message.
        assert [payloads.digest_of(r["session"], r["transitions"], r["certificate"]) for r in published] == \
            [chain.record_hash(conn, session_id) for session_id in ids]
    finally:
        conn.close()
    assert sum(record["certificate"] is not None for record in published) == 4
    return [payloads.encode(record) for record in published]


def test_in_order_each_once_whatever_comes_twice_or_early(records, tmp_path: Path, caplog):
    collector = Collector(tmp_path / "fleet.sqlite3")
    outcomes = [collector.record(STATION_ID, records[i]) for i in (0, 1, 1, 3, 2, 3, 0, 4, 5)]
    assert outcomes == ["stored", "stored", "duplicate", "refused", "stored", "stored", "duplicate",
                        "stored", "stored"]
    assert "records at chain positions 3..3 have not arrived" in caplog.text
    assert [s["records"] for s in collector.stations()] == [6]
    collector.close()


def test_a_collector_that_starts_late_anchors_the_chain_where_it_joins(records, tmp_path: Path, caplog):
    collector = Collector(tmp_path / "fleet.sqlite3")
    with caplog.at_level(logging.WARNING):
        assert [collector.record(STATION_ID, record) for record in records[3:]] == ["stored"] * 3
    assert "its chain starts here at position 4" in caplog.text
    collector.close()


def test_a_pinned_key_refuses_the_station_s_records_signed_by_another(records, tmp_path: Path):
    other = Ed25519PrivateKey.generate().public_key()
    collector = Collector(tmp_path / "fleet.sqlite3", {STATION_ID: other})
    assert collector.record(STATION_ID, records[0]) == "refused"
    assert collector.tally.refused == 1 and collector.stations()[0]["records"] == 0
    collector.close()
    with pytest.raises(KeyConflict, match="has pinned"):  # the database remembers its pin
        Collector(tmp_path / "fleet.sqlite3", {STATION_ID: Ed25519PrivateKey.generate().public_key()})


def test_a_record_on_another_station_s_topic_is_refused(records, tmp_path: Path):
    collector = Collector(tmp_path / "fleet.sqlite3")
    assert collector.record("bench-2", records[0]) == "refused"
    assert collector.stations() == []  # nothing pinned from a record that was refused
    collector.close()
