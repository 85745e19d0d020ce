"""A station publishes to a real broker; `fleet collect` and `fleet watch` read it."""
from __future__ import annotations

import json
import signal
import subprocess

from fleet.conftest import STATION_ID, Bench, Collecting, Listening

from station.records import chain, keys


def test_every_record_reaches_the_collector_once_in_chain_order(bench: Bench, collector: Collecting):
    listening = Listening(bench.broker.port, f"station/{STATION_ID}/#")
    watching = subprocess.Popen(bench.command("fleet", "watch", "--json"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    for _ in range(2):
        result = bench.run()
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    listening.close()
    _publishes_the_documented_topics(bench, listening.messages)
    stored = collector.wait_for(8)
    assert [seq for seq, _, _ in stored] == list(range(1, 9))
    prev = chain.GENESIS
    for _, digest, prev_hash in stored:  # each links to the one before: nothing lost in between
        assert prev_hash == prev
        prev = digest
    assert collector.stop().endswith(f"8 stored, 0 duplicates, 0 refused ({collector.db})\n")

    watching.send_signal(signal.SIGINT)  # Ctrl-C
    out, err = watching.communicate(timeout=15)
    assert watching.returncode == 130, err
    streamed = [json.loads(line) for line in out.splitlines()]  # JSON Lines: one port per change
    assert {port["slot"] for port in streamed} == {1, 2, 3, 4}
    # Coalesced (at most every 0.5 s): a lock check quicker than that may not show; the end does.
    assert "locked" in {port["state"] for port in streamed}

    once = subprocess.run(bench.command("fleet", "watch", "--once", "--json", "--wait", "1"),
                          capture_output=True, text=True, timeout=30)
    assert once.returncode == 0, once.stderr
    ports = json.loads(once.stdout)  # what the retained topics hold: the ports as the run left them
    assert [(port["station_id"], port["slot"]) for port in ports] == [(STATION_ID, slot) for slot in (1, 2, 3, 4)]
    assert {port["state"] for port in ports} == {"locked"}
    assert {port["short"] for port in ports} == {"LOCKED"}
    assert ports[0]["device"]["serial"] == "G6TZK2P4FLT1"
    assert {port["station_status"] for port in ports} == {"offline"}  # said as it stopped


def _publishes_the_documented_topics(bench: Bench, messages: list[tuple[str, bytes, bool]]) -> None:
    """The README's topic list, as a plain subscriber sees a station's two runs."""
    prefix = f"station/{STATION_ID}/"
    said = [(topic.removeprefix(prefix), payload) for topic, payload, _ in messages]
    assert [payload for topic, payload in said if topic == "status"] == [b"online", b"offline"] * 2
    public = keys.load_public(bench.state_dir)
    assert {payload.decode() for topic, payload in said if topic == "key"} == {keys.public_pem(public)}
    ports = [json.loads(payload) for topic, payload in said if topic.startswith("ports/")]
    assert {port["slot"] for port in ports} == {1, 2, 3, 4}
    assert ports[-1]["state"] == "locked" and ports[-1]["device"]["serial"].startswith("G6TZK2P4FLT")
    events = [json.loads(payload) for topic, payload in said if topic == "events"]
    assert {"slot", "at", "event", "from_state", "to_state", "reason", "detail", "station_id"} == set(events[0])
    assert ("checking_lock", "locked") in {(event["from_state"], event["to_state"]) for event in events}
    records = [json.loads(payload) for topic, payload in said if topic == "records"]
    assert [record["session"]["seq"] for record in records] == list(range(1, 9))
    assert set(records[0]) == {"format", "station_id", "key", "session", "transitions", "certificate",
                               "head", "signature"}
