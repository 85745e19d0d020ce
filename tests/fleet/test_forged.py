"""The collector refuses what does not verify, one log line each, and stores none of it.

The forgeries are published by the test, on the station's own records topic, as anyone who may
publish there could: an edited record, a record whose signature is not the station's, one signed
by another key, one signed by the station key but off the chain, and a message that is no record.
"""
from __future__ import annotations

import json
import sqlite3

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet.conftest import STATION_ID, Bench, Collecting, assert_one_chain
from paho.mqtt.enums import CallbackAPIVersion

from station.fleet import payloads
from station.records import chain, keys


def _stored_record(collector: Collecting, seq: int) -> dict:
    conn = sqlite3.connect(collector.db)
    try:
        return json.loads(conn.execute("SELECT record FROM records WHERE seq = ?", (seq,)).fetchone()[0])
    finally:
        conn.close()


def _next_record(last: dict, key: Ed25519PrivateKey, prev_hash: str | None = None) -> dict:
    """A record that would follow ``last``: its content rehashed, its head signed by ``key``."""
    record = json.loads(json.dumps(last))
    session = record["session"]
    session.update(id=session["id"] + 1, seq=session["seq"] + 1, serial="FORGED0001",
                   prev_id=session["id"], prev_hash=prev_hash or session["hash"])
    session["hash"] = payloads.digest_of(session, record["transitions"], record["certificate"])
    head = chain.head_message(session["seq"], session["id"], session["hash"])
    record.update(head=head.decode("ascii"), signature=keys.sign(key, head))
    return record


def _publish(port: int, *messages: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for message in messages:
        client.publish(f"station/{STATION_ID}/records", message, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_forged_records_are_refused_logged_and_not_stored(bench: Bench, collector: Collecting):
    assert bench.run().returncode == 0
    assert_one_chain(collector.wait_for(4), 4)
    last = _stored_record(collector, 4)
    station_key = keys.load_or_create(bench.state_dir, may_create=False)

    edited = json.loads(json.dumps(last))
    edited["session"]["serial"] = "EDITED0001"  # the hash no longer matches
    resigned_elsewhere = _next_record(last, Ed25519PrivateKey.generate())
    other_key = _next_record(last, Ed25519PrivateKey.generate())
    other_key["key"] = keys.public_pem(Ed25519PrivateKey.generate().public_key())  # claims its own key
    unsigned = _next_record(last, station_key)
    unsigned["signature"] = last["signature"]  # the previous record's signature, not this one's
    off_chain = _next_record(last, station_key, prev_hash="ab" * 32)  # the station's key, a broken link
    _publish(bench.broker.port, *(payloads.encode(forged) for forged in
                                  (edited, resigned_elsewhere, other_key, unsigned, off_chain)),
             b"not json")

    assert bench.run().returncode == 0  # the station's own next records still follow on
    assert_one_chain(collector.wait_for(8), 8)
    err = collector.stop()
    refused = [line for line in err.splitlines() if line.startswith(f"station {STATION_ID}: refused ")]
    assert len(refused) == 6, err
    assert "record #4 (chain position 4): content does not match its hash (edited)" in refused[0]
    assert all("signature invalid" in line for line in refused[1:4])
    assert "record #5 (chain position 5): does not follow chain position 4 (chain broken)" in refused[4]
    assert "not JSON" in refused[5]
    assert "Traceback" not in err
    assert err.endswith(f"8 stored, 0 duplicates, 6 refused ({collector.db})\n")
    assert "FORGED0001" not in json.dumps([_stored_record(collector, seq) for seq in range(1, 9)])
