"""Safety over the network: actions need the token, serials and certificates too, and a held
phone (lock unknown) is never confirmed by any request, with or without the token.

One station plays a bench on the timed engine, line mode, one restore at a time:
slot 1 a DFU phone held for a long press (never given), slot 4 a restore that fails (no
retries), slot 5 a DFU phone confirmed by the long press whose restore fails, slot 2 a restore under way and slot 3 queued behind it (each comes once the one
before has been checked; the fixture still asks which runs). The tests run in this order.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from station.cli import main
from web.running import STAY_UP, TOKEN, Running, free_port, start_station

BENCH = """
[scenario]
description = "held, failed, restoring, queued"
engine = "timed"

[config.station]
stop_grace_s = 0              # SIGTERM at the end: the restore still running is not waited for

[config.restore]
mode = "line"
unknown_lock = "hold"
max_parallel_restores = 1
retries = 0

[[phone]]
name = "held"
slot = 1
model = "iPhone13,2"
ios = "17.5.1"
mode = "dfu"
attach = 0

[[phone]]
name = "fails"
slot = 4
model = "iPhone14,7"
ios = "17.5.1"
serial = "F4ILSONCE001"
attach = 0
fail = { phase = "enter_recovery", percent = 10, times = 1, kind = "usb" }

[[phone]]
name = "held-then-failed"
slot = 5
model = "iPhone13,2"
ios = "17.5.1"
mode = "dfu"
attach = 0
fail = { phase = "send_ibss", percent = 10, times = 1, kind = "usb" }

[[press]]
at = 30
slot = 5
button = "ok"
long = true

[[phone]]
name = "long"
slot = 2
model = "iPhone14,7"
ios = "17.5.1"
serial = "L0NGRESTORE2"
attach = 120

[[phone]]
name = "queued"
slot = 3
model = "iPhone14,5"
ios = "17.5.1"
serial = "QUEUEDPHONE3"
attach = 160
"""
SERIALS = ("F4ILSONCE001", "L0NGRESTORE2", "QUEUEDPHONE3")
FORGED = [("/api/ports/1/confirm", b""), ("/api/ports/1/start", b""), ("/api/ports/1/retry", b""),
          ("/api/ports/1/retry", json.dumps({"long": True}).encode()),
          ("/api/ports/1/confirm?long=true", json.dumps({"long": True}).encode())]


@dataclass
class Bench:
    station: Running
    restoring: int  # the slot (2 or 3) whose restore runs
    queued: int  # the other, queued behind it


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    running = start_station(tmp_path_factory.mktemp("bench"), BENCH + STAY_UP, speed=20)
    ready = running.wait_for("the bench ready", lambda s: sorted(p["state"] for p in s["ports"]) ==
                             ["failed", "failed", "needs_confirm", "queued", "restoring"]
                             and s["ports"][3]["state"] == "failed" and s["ports"][4]["state"] == "failed")
    restoring = next(p["slot"] for p in ready["ports"] if p["state"] == "restoring")
    yield Bench(running, restoring, 5 - restoring)
    assert running.stop() in (0, 130), running.log()[-3000:]
    assert "Traceback" not in running.log()


def states(running: Running) -> list[str]:
    return [p["state"] for p in running.status()["ports"]]


def test_a_held_phone_is_never_confirmed_over_the_network(bench: Bench):
    station = bench.station
    assert station.port(1)["held"] and station.port(1)["label"] == "HOLD OK"
    for token in (None, "wrong", TOKEN):
        for path, body in FORGED:
            code, answer = station.call(path, "POST", token=token, body=body)
            assert code in (401, 403, 404), (path, token, code, answer)
            if token == TOKEN:
                assert "long press of OK on the station" in answer["error"], answer
    port = station.port(1)
    assert port["state"] == "needs_confirm" and port["held"], port
    assert "retry" not in port["actions"] and port["actions"] == []
    queued = [line for line in station.log().splitlines() if "NEEDS_CONFIRM -> QUEUED" in line]
    assert queued and all("slot 5 [" in line for line in queued)  # slot 1 never, by any request


def test_a_failed_restore_of_a_held_phone_is_retried_only_at_the_station(bench: Bench):
    station = bench.station
    port = station.port(5)
    assert port["state"] == "failed" and port["held"] and port["actions"] == [], port
    code, answer = station.call("/api/ports/5/retry", "POST", token=TOKEN)
    assert code == 403 and "only the station's OK starts its restore again" in answer["error"], answer
    assert station.port(5)["state"] == "failed"


def test_actions_without_the_right_token_change_nothing(bench: Bench):
    station = bench.station
    before = states(station)
    for slot, action in ((bench.queued, "cancel"), (4, "retry"), (bench.restoring, "abort")):
        code, answer = station.call(f"/api/ports/{slot}/{action}", "POST")
        assert code == 401 and "needs the token" in answer["error"], answer
        code, answer = station.call(f"/api/ports/{slot}/{action}", "POST", token="not-the-token")
        assert code == 403 and answer["error"] == "wrong token", answer
    assert states(station) == before


def test_serials_and_certificates_need_the_token(bench: Bench):
    station = bench.station
    public = station.status(token=None)
    assert not public["sensitive_shown"]
    for port in public["ports"]:
        assert port["serial"] is None and port["ecid"] is None and port["udid"] is None and port["imei"] is None
        assert not any(serial in line for line in port["detail"] for serial in SERIALS)
    code, records = station.call("/api/records")
    assert code == 200 and records and all(r["serial"] is None and r["imei"] is None for r in records)
    assert station.port(2)["serial"] == "L0NGRESTORE2"  # with the token
    for path in ("/api/certificates/1", "/certificates/1"):
        code, answer = station.call(path)
        assert code == 401, answer
        code, answer = station.call(path, token="wrong")
        assert code == 403, answer
    code, answer = station.call("/api/status", token="wrong")
    assert code == 403 and answer["error"] == "wrong token"


def test_cancel_retry_and_abort_with_the_token(bench: Bench):
    station, queued, restoring = bench.station, bench.queued, bench.restoring
    # Cancel: the queued phone waits for a decision again; starting it is the counter's OK, not ours.
    code, port = station.call(f"/api/ports/{queued}/cancel", "POST", token=TOKEN)
    assert code == 200 and port["state"] == "needs_confirm" and not port["held"], port
    code, answer = station.call(f"/api/ports/{queued}/retry", "POST", token=TOKEN)
    assert code == 409 and "only a failed restore can be retried" in answer["error"]
    assert station.port(queued)["state"] == "needs_confirm"
    # Retry the failed one: queued behind the running restore.
    code, port = station.call("/api/ports/4/retry", "POST", token=TOKEN)
    assert code == 200 and port["state"] == "queued", port
    # Abort the running one: it fails, and the retried one starts.
    code, port = station.call(f"/api/ports/{restoring}/abort", "POST", token=TOKEN)
    assert code == 200 and port["state"] == "failed" and port["reason"] == "aborted by operator", port
    station.wait_for("the retried restore started", lambda s: s["ports"][3]["state"] == "restoring")
    code, answer = station.call(f"/api/ports/{restoring}/abort", "POST", token=TOKEN)
    assert code == 409 and "only a running restore can be aborted" in answer["error"]
    code, answer = station.call("/api/ports/9/abort", "POST", token=TOKEN)
    assert code == 404 and "no slot 9" in answer["error"]
    log = station.log()
    assert f"web: cancel on slot {queued} by 127.0.0.1" in log and f"web: abort on slot {restoring} by 127.0.0.1" in log
    assert station.port(1)["state"] == "needs_confirm" and station.port(1)["held"]


def test_station_status_reads_the_running_station(bench: Bench, capsys: pytest.CaptureFixture[str]):
    """`station status` asks the station at its config's [web] address, with its token."""
    assert main(["status", "--config", str(bench.station.config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("station station-1")
    assert lines[1].startswith("slot 1: NEEDS CONFIRM") and "HOLD OK" in lines[1]
    assert "L0NGRESTORE2" in lines[2] and lines[-1].startswith("today: ")


def test_station_status_without_a_station_names_the_address(tmp_path, capsys: pytest.CaptureFixture[str]):
    port = free_port()
    config = tmp_path / "station.toml"
    config.write_text(f'[station]\nstate_dir = "state"\n[web]\nport = {port}\n')
    assert main(["status", "--json", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"station: no station answers at http://127.0.0.1:{port}/api/status: Connection refused\n"
