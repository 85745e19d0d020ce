"""What goes wrong between a station and its broker: one log line, a station fault where the
operator must know, never a traceback or a hang, and restores and start-up never wait for it.
Every record stays in the outbox until a broker takes it."""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fleet.conftest import (Bench, Collecting, assert_one_chain, make_certificates, make_records,
                            outbox_rows)

from station.config import MqttSection
from station.fleet import link
from station.records import db


def _side_by_side(*benches: Bench) -> list[tuple[subprocess.CompletedProcess[str], float]]:
    """Each bench's run and its seconds, all started at once: a loaded machine slows them alike
    (one after the other, a burst of load from the rest of the suite landed on one of them)."""
    started = time.monotonic()

    def timed(bench: Bench) -> tuple[subprocess.CompletedProcess[str], float]:
        result = bench.run()
        return result, time.monotonic() - started

    with ThreadPoolExecutor(len(benches)) as pool:
        return list(pool.map(timed, benches))


def _mqtt(bench: Bench, **settings: object) -> None:
    """Set [mqtt] keys in the bench's config ([mqtt] is its last table)."""
    lines = bench.config.read_text().splitlines()
    for name, value in settings.items():
        rendered = f'"{value}"' if isinstance(value, str | Path) else str(value).lower()
        lines = [line for line in lines if not line.startswith(f"{name} = ")] + [f"{name} = {rendered}"]
    bench.config.write_text("\n".join(lines) + "\n")


def test_a_broker_down_at_start_delays_nothing_and_gets_the_records_once_it_is_up(
        bench: Bench, collector: Collecting):
    bench.broker.stop()
    alone = Bench(bench.dir.parent / "alone", bench.broker)  # the same station with no fleet at all
    alone.dir.mkdir()
    shutil.copy(bench.scenario, alone.scenario)
    shutil.copy(bench.config, alone.config)
    _mqtt(alone, enabled=False)
    (result, down), (without_fleet, without) = _side_by_side(bench, alone)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    said = [line for line in result.stderr.splitlines() if "mqtt" in line or "paho" in line]
    assert len(said) == 1 and "cannot connect: [Errno 111] Connection refused" in said[0]  # not one per try
    assert "fleet: NO BROKER" in result.stderr
    assert outbox_rows(bench.state_dir) == 4  # sealed, kept, waiting
    assert without_fleet.returncode == 0, without_fleet.stderr
    # paho's thread ends within its 1 s sleep between tries: nothing else waits for the broker.
    assert down < without + 3.0, f"{down:.1f} s with the broker down, {without:.1f} s without a fleet"
    _mqtt(bench, enabled=False)
    assert bench.run().returncode == 0
    bench.broker.start()
    _mqtt(bench, enabled=True)
    assert bench.run().returncode == 0
    # The run with the fleet off queued its records too: a station that enables [mqtt] sends them all.
    assert_one_chain(collector.wait_for(12), 12)
    assert outbox_rows(bench.state_dir) == 0


def test_refused_credentials_are_one_line_and_a_fault(bench: Bench, tmp_path: Path):
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "bench", "right"], check=True,
                   capture_output=True)
    bench.broker.stop()
    bench.broker.anonymous = False
    bench.broker.extra = f"password_file {passwords}\n"
    bench.broker.start()
    _mqtt(bench, username="bench", password="wrong")
    result = bench.run()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    refusals = [line for line in result.stderr.splitlines() if "refused the connection" in line]
    assert len(refusals) == 1 and ("Not authorized" in refusals[0] or "Bad user name or password" in refusals[0])
    assert "fleet: BROKER REFUSED" in result.stderr
    assert outbox_rows(bench.state_dir) == 4


def test_tls_against_a_plain_broker_is_one_line_and_a_fault(bench: Bench):
    _mqtt(bench, tls=True)
    result = bench.run()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "TLS failed" in line]) == 1, result.stderr
    assert "fleet: BROKER TLS" in result.stderr


def test_records_go_over_tls_to_a_broker_the_ca_file_vouches_for(bench: Bench, tmp_path: Path):
    tls = make_certificates(tmp_path)
    bench.broker.stop()
    bench.broker.listener = f"cafile {tls.ca}\ncertfile {tls.cert}\nkeyfile {tls.key}\n"
    bench.broker.start()
    _mqtt(bench, tls=True, ca_file=tls.other_ca)  # a CA that did not sign the broker's certificate
    refused = bench.run()
    assert refused.returncode == 0, refused.stderr
    assert "Traceback" not in refused.stderr
    assert len([line for line in refused.stderr.splitlines() if "TLS failed" in line]) == 1, refused.stderr
    assert "certificate verify failed" in refused.stderr and "fleet: BROKER TLS" in refused.stderr
    assert outbox_rows(bench.state_dir) == 4
    _mqtt(bench, ca_file=tls.ca)
    trusted = bench.run()
    assert trusted.returncode == 0, trusted.stderr
    assert "connected" in trusted.stderr and "TLS failed" not in trusted.stderr
    assert outbox_rows(bench.state_dir) == 0  # all eight acknowledged over TLS


def test_a_missing_ca_file_is_one_line_and_a_fault(bench: Bench):
    _mqtt(bench, tls=True, ca_file=bench.dir / "no-such-ca.pem")
    result = bench.run()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "no-such-ca.pem" in result.stderr and "fleet: BROKER TLS" in result.stderr


def test_a_record_the_broker_does_not_take_stays_queued_until_it_does(bench: Bench, collector: Collecting,
                                                                       tmp_path: Path):
    """MQTT v5: a PUBACK whose reason is an error (here: not authorized) is no acknowledgement."""
    acl = tmp_path / "acl"
    allowed = "".join(f"topic readwrite station/+/{topic}\n" for topic in ("status", "key", "ports/#", "events"))
    acl.write_text(allowed + "topic read station/+/records\n")
    bench.broker.stop()
    bench.broker.extra = f"acl_file {acl}\n"
    bench.broker.start()
    result = bench.run()
    assert result.returncode == 0, result.stderr
    assert "record #1: the broker did not take it (Not authorized)" in result.stderr
    assert outbox_rows(bench.state_dir) == 4
    assert collector.stored() == []
    acl.write_text(allowed + "topic readwrite station/+/records\n")
    bench.broker.reload()
    assert bench.run().returncode == 0
    assert_one_chain(collector.wait_for(8), 8)
    assert outbox_rows(bench.state_dir) == 0


def test_records_sealed_before_the_outbox_existed_are_queued_when_the_database_is_upgraded(tmp_path: Path):
    state = tmp_path / "state"
    make_records(state, 3)
    conn = db.connect(db.path_in(state))
    with db.transaction(conn):  # what a v4 station left behind
        conn.execute("DROP TABLE outbox")
        db.set_meta(conn, "schema_version", "4")
    conn.close()
    conn = db.open_store(state)
    try:
        assert db.get_meta(conn, "schema_version") == db.SCHEMA_VERSION == "5"
        queued = conn.execute("SELECT o.seq, s.seq FROM outbox o JOIN sessions s ON s.id = o.session_id "
                              "ORDER BY o.seq").fetchall()
        assert [tuple(row) for row in queued] == [(1, 1), (2, 2), (3, 3)]
    finally:
        conn.close()


def test_something_that_is_not_a_broker_is_one_line_and_a_fault(caplog):
    """A web server (or a transparent proxy) where the broker should be: it takes the connection
    and answers something that is not MQTT. paho retries; the station says it once."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def answer_http() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    answering = threading.Thread(target=answer_http, daemon=True)
    answering.start()
    config = MqttSection(host="127.0.0.1", port=server.getsockname()[1])
    faults: list[str | None] = []
    client = link.client(config, "not-a-broker-test")
    link.Health("test", on_change=faults.append).watch(client)
    try:
        link.connect(client, config)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and caplog.text.count("no MQTT answer") < 1:
            time.sleep(0.05)
        time.sleep(2.5)  # a second and a third try (1 s, then 2 s later): not said again
    finally:
        client.loop_stop()
        stop.set()
        answering.join()
        server.close()
    assert caplog.text.count("no MQTT answer") == 1
    assert faults == ["NO BROKER"]


def test_an_outbox_of_the_first_v5_commits_is_rebuilt_with_every_record_queued(tmp_path: Path):
    state = tmp_path / "state"
    make_records(state, 3)
    conn = db.connect(db.path_in(state))
    with db.transaction(conn):  # the outbox as eed6944 made it: no chain position, one row left
        conn.execute("DROP TABLE outbox")
        conn.execute("CREATE TABLE outbox (session_id INTEGER PRIMARY KEY REFERENCES sessions (id))")
        conn.execute("INSERT INTO outbox VALUES (3)")
    conn.close()
    conn = db.open_store(state)
    try:
        assert [tuple(row) for row in conn.execute("SELECT seq FROM outbox ORDER BY seq")] == [(1,), (2,), (3,)]
    finally:
        conn.close()


def test_watch_once_without_a_broker_is_one_line_and_exit_1(bench: Bench):
    bench.broker.stop()
    watched = subprocess.run(bench.command("fleet", "watch", "--once", "--json", "--wait", "0.5"),
                             capture_output=True, text=True, timeout=30)
    assert watched.returncode == 1
    assert watched.stdout == ""
    assert watched.stderr.strip().splitlines()[-1] == f"station: no connection to 127.0.0.1:{bench.broker.port}"
    assert "Traceback" not in watched.stderr
