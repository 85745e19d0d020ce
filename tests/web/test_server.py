"""The server as a part of the station: a port in use never stops or changes a simulation (one
log line, a fault on the display), and stopping the station ends the live streams at once."""
from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from fastapi import FastAPI
from PIL import Image

from station.web import server
from station.web.feed import Feed
from test_cli_devices import LOCKED
from ui.glyphs import shows
from web.running import STAY_UP, TOKEN, free_port, start_station, write_station


def test_a_port_in_use_is_a_fault_and_the_station_runs_on(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config, scenario = write_station(tmp_path, LOCKED, port)
        result = subprocess.run([sys.executable, "-m", "station.cli", "run", "--sim", str(scenario), "--speed", "50",
                                 "--config", str(config), "--log-level", "info"],
                                capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # the scenario ended as it expects
    assert result.stdout.startswith("slot 2: LOCKED")
    # Why, once (not at each retry), and the display's fault as the station logs every fault.
    assert result.stderr.count(f"web: port {port} on 127.0.0.1 is in use") == 1, result.stderr
    assert result.stderr.count(f"web: WEB: port {port} in use") == 1
    assert "Traceback" not in result.stderr
    frames = [Image.open(path) for path in sorted((tmp_path / "frames").glob("*.png"))]
    assert any(shows(frame, f"! WEB: port {port} in use", "small", inverse=True) for frame in frames)


def test_stopping_the_station_ends_a_live_stream_at_once(tmp_path):
    running = start_station(tmp_path, LOCKED + STAY_UP, speed=50)
    running.wait_for("the phone locked", lambda s: s["ports"][1]["state"] == "locked")
    leaving = urllib.request.urlopen(urllib.request.Request(running.base + "/api/events"), timeout=10)
    assert leaving.readline() == b"event: status\n"
    leaving.close()  # a page closed: its stream is dropped
    request = urllib.request.Request(running.base + "/api/events", headers={"Authorization": f"Bearer {TOKEN}"})
    stream = urllib.request.urlopen(request, timeout=10)
    assert stream.headers.get_content_type() == "text/event-stream"
    assert stream.readline() == b"event: status\n"
    assert b'"serial":"G6TZK2P4Q1MN"' in stream.readline()  # with the token
    running.wait_for("the closed page dropped", lambda s: "left the live page" in running.log())
    started = time.monotonic()
    assert running.stop() == 130  # stopped before its scenario (the late press) ended
    assert time.monotonic() - started < 5
    assert stream.read() in (b"", b"\n")  # the stream ended with the station, not cut mid-event
    log = running.log()
    assert log.count("left the live page") == 2 and "Traceback" not in log
    assert "did not stop" not in log


def test_with_no_token_configured_no_action_and_no_serial_is_served(tmp_path):
    running = start_station(tmp_path, LOCKED + STAY_UP, speed=50, token="")
    try:
        running.wait_for("the phone locked", lambda s: s["ports"][1]["state"] == "locked", token=None)
        assert running.status(token=None)["ports"][1]["serial"] is None
        for path in ("/api/ports/2/abort", "/api/ports/2/retry"):
            code, answer = running.call(path, "POST", token="anything")
            assert code == 403 and "[web] token is empty" in answer["error"], answer
        code, answer = running.call("/api/certificates/1")
        assert code == 403 and "[web] token is empty" in answer["error"], answer
        code, answer = running.call("/api/status", token="")
        assert code == 403, answer
        # The page, its script and the API's description are served by the station itself.
        code, page = running.call("/")
        assert code == 200 and '<script src="/static/page.js"' in page
        assert running.call("/static/page.js")[0] == 200
        code, described = running.call("/api/openapi.json")
        assert code == 200 and "/api/ports/{slot}/{action}" in described["paths"]
        assert not any("confirm" in path for path in described["paths"])
    finally:
        running.stop()


async def test_the_page_comes_up_once_its_port_is_free_and_the_fault_clears(monkeypatch):
    """In-process on this test's loop: the port taken, then let go; the server takes it at its next try."""
    monkeypatch.setattr(server, "RETRY_S", 0.1)
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    faults: list[str | None] = []
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    web = server.WebServer(app, Feed(lambda reveal: {}), "127.0.0.1", port, lambda source, fault: faults.append(fault))
    web.start()
    try:
        while not faults:
            await asyncio.sleep(0.05)
        assert faults == [f"WEB: port {port} in use"]
        taken.close()
        answer = None
        for _ in range(100):
            try:
                answer = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).read())
                break
            except OSError:
                await asyncio.sleep(0.05)
        assert answer == b'{"ok":true}'
        assert faults[-1] is None  # cleared
    finally:
        taken.close()
        await web.stop()
    with socket.socket() as again:  # the server let go of its socket: nobody listens there now
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()


def test_web_serves_a_simulation_at_the_configs_address_and_a_plain_one_serves_nothing(tmp_path):
    """`make run` plays the demo with --web: its page at the config's [web] address. Without the
    flag (or a [config.web] table in the scenario) a simulation opens no port."""
    answers = {}
    for flag in ((), ("--web",)):
        folder = tmp_path / ("web" if flag else "plain")
        folder.mkdir()
        port = free_port()
        config, scenario = write_station(folder, LOCKED + STAY_UP, port)
        scenario.write_text(LOCKED + STAY_UP)  # no [config.web]: only the flag may serve
        process = subprocess.Popen([sys.executable, "-m", "station.cli", "run", "--sim", str(scenario),
                                    "--speed", "20", "--config", str(config), *flag],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder)
        try:
            # 5 s: at 20x the phone is LOCKED within about 2 s, and a page would answer by then
            answers[flag] = locked_phone_seen(f"http://127.0.0.1:{port}/api/ports/2", process,
                                              within_s=15.0 if flag else 5.0)
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)
    assert answers == {(): None, ("--web",): "Find My is on"}


def locked_phone_seen(url: str, process: subprocess.Popen[str], within_s: float = 15.0) -> str | None:
    """The lock reason the page gives for the locked phone once it is LOCKED; None when nothing
    answered on the port for ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                port = json.loads(response.read())
            if port["state"] == "locked":
                return port["lock_reason"]
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    return None
