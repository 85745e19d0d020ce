"""A station publishes to a real broker; `fleet collect` and `fleet watch` read it."""
from __future__ import annotations

import json
import subprocess
import time

from fleet.conftest import STATION_ID, Bench, Collecting

from station.records import chain


def test_every_record_reaches_the_collector_once_in_chain_order(bench: Bench, collector: Collecting):
    for _ in range(2):
        result = bench.run()
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    stored = collector.wait_for(8)
    assert [seq for seq, _, _ in stored] == list(range(1, 9))
    prev = chain.GENESIS
    for _, digest, prev_hash in stored:  # each links to the one before: nothing lost in between
        assert prev_hash == prev
        prev = digest
    assert collector.stop().endswith(f"8 stored, 0 duplicates, 0 refused ({collector.db})\n")


def test_watch_shows_the_station_s_ports_from_the_retained_topics(bench: Bench):
    result = bench.run()
    assert result.returncode == 0, result.stderr
    watched = subprocess.run(bench.command("fleet", "watch", "--once", "--json", "--wait", "1"),
                             capture_output=True, text=True, timeout=30)
    assert watched.returncode == 0, watched.stderr
    ports = json.loads(watched.stdout)
    assert [(port["station_id"], port["slot"]) for port in ports] == [(STATION_ID, slot) for slot in (1, 2, 3, 4)]
    assert {port["state"] for port in ports} == {"locked"}  # as the run left them
    assert {port["short"] for port in ports} == {"LOCKED"}
    assert ports[0]["device"]["serial"] == "G6TZK2P4FLT1"
    assert {port["station_status"] for port in ports} == {"offline"}  # said as it stopped
