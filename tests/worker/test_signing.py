"""Apple's signing server (TSS) as the worker meets it: refusals are final, network failures retryable,
and a request never outlives its bound.

pymobiledevice3's own TSS code posts to a loopback server that answers in TSS's format
(``STATUS=<n>&MESSAGE=<text>[&REQUEST_STRING=<plist>]``, see libtatsu tss.c tss_request_send).
"""
from __future__ import annotations

import asyncio
import plistlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from pymobiledevice3.restore import tss
from pymobiledevice3.restore.tss import TSSRequest

from hw.sim import Mode, SimPhone
from hw.worker import real
from hw.worker.classify import classify
from hw.worker.messages import Failed, Kind, WorkerFailure
from hw.worker.request import RestoreRequest

NOT_ELIGIBLE = b"STATUS=94&MESSAGE=This device isn't eligible for the requested build."
TICKET = b"0\x82 signed ticket"


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    trickle: bool = False  # send the body a byte every 0.1 s, never finishing: no read ever times out


@dataclass
class TssServer:
    url: str
    answer: Answer = field(default_factory=Answer)
    posts: list[bytes] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        state: TssServer = self.server.state
        state.posts.append(self.rfile.read(int(self.headers["Content-Length"])))
        answer = state.answer
        self.send_response(answer.status)
        self.send_header("Content-Length", str(10**6 if answer.trickle else len(answer.body)))
        self.end_headers()
        if not answer.trickle:
            self.wfile.write(answer.body)
            return
        while not state.stop.wait(0.1):
            self.wfile.write(b"S")
            self.wfile.flush()


@pytest.fixture
def tss_server(monkeypatch: pytest.MonkeyPatch, pmd3_patched: None) -> Iterator[TssServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    state = httpd.state = TssServer(  # type: ignore[attr-defined]
        f"http://127.0.0.1:{httpd.server_address[1]}/TSS/controller?action=2")
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    monkeypatch.setattr(tss, "TSS_CONTROLLER_ACTION_URL", state.url)
    yield state
    state.stop.set()
    httpd.shutdown()
    httpd.server_close()


def success(ticket: bytes) -> bytes:
    return b"STATUS=0&MESSAGE=SUCCESS&REQUEST_STRING=" + plistlib.dumps({"ApImg4Ticket": ticket})


async def test_a_refusal_to_sign_is_final_and_names_the_build(tss_server, bench_with, manifest_ipsw, pipe,
                                                                  tmp_path):
    """The real worker on a recovery-mode phone (simulated USB) up to its first TSS request."""
    phone = SimPhone(ecid=0x5A, serial="F170000005A", product_type="iPhone14,3", mode=Mode.RECOVERY)
    bench_with(phone)
    tss_server.answer = Answer(body=NOT_ELIGIBLE)
    request = RestoreRequest("slot1", str(tmp_path), mode=Mode.RECOVERY, ecid=phone.ecid, ipsw=str(manifest_ipsw),
                             signing_url=tss_server.url)  # [restore] signing_url reaches pymobiledevice3

    with pytest.raises(WorkerFailure) as caught:
        await real.run(request, pipe.reporter)

    assert caught.value.failed == Failed(
        "NOT SIGNED 19E258: Apple no longer signs it; add a signed IPSW for iPhone14,3 (station ipsw add)",
        Kind.DEVICE_REJECTED, False)
    assert len(tss_server.posts) == 1  # libtatsu stops at any STATUS: asking again cannot change the answer


async def test_a_signed_ticket_comes_back(tss_server, reporting_restore, pipe):
    tss_server.answer = Answer(body=success(TICKET))
    real._adapt_pymobiledevice3(pipe.reporter, usb_timeout=5, signing_url=tss.TSS_CONTROLLER_ACTION_URL)

    response = await reporting_restore.recovery.fetch_tss_record()

    assert response.ap_img4_ticket == TICKET
    assert b"<key>ApECID</key>" in tss_server.posts[0]


@pytest.mark.parametrize("answer", [Answer(503, b"<html>Service Unavailable</html>"), Answer(200, b"")])
async def test_an_answer_without_a_tss_status_is_a_retryable_network_failure(tss_server, pipe, answer):
    # libtatsu retries these (no STATUS= in the body); pymobiledevice3 would fail on an IndexError.
    tss_server.answer = answer
    real._adapt_pymobiledevice3(pipe.reporter, usb_timeout=5, signing_url=tss.TSS_CONTROLLER_ACTION_URL)

    with pytest.raises(requests.exceptions.RequestException) as caught:
        await TSSRequest().send_receive()

    failed = classify(caught.value)
    assert (failed.kind, failed.retryable) == (Kind.NETWORK, True)
    assert f"HTTP {answer.status}" in failed.reason


@pytest.mark.parametrize("answer", [Answer(trickle=True), None], ids=["trickles", "never-answers"])
def test_the_whole_tss_request_is_bounded(tss_server, pipe, monkeypatch, answer):
    silent = socket.create_server(("127.0.0.1", 0), backlog=4)  # accepts (in the kernel) and never answers
    if answer is None:
        monkeypatch.setattr(tss, "TSS_CONTROLLER_ACTION_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/")
    else:
        tss_server.answer = answer
    real._adapt_pymobiledevice3(pipe.reporter, usb_timeout=5, signing_url=tss.TSS_CONTROLLER_ACTION_URL)
    monkeypatch.setattr(real, "NETWORK_TIMEOUT", 0.5)
    started = time.monotonic()
    outcome: list[BaseException] = []

    def post() -> None:  # pymobiledevice3 posts from a thread pool it waits for: guard the test itself
        try:
            asyncio.run(TSSRequest().send_receive())
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=post, daemon=True)
    worker.start()
    worker.join(5)
    silent.close()

    assert outcome, "the TSS request was still running after 5 s"
    assert time.monotonic() - started < 0.5 + 2  # slack for a busy machine
    failed = classify(outcome[0])
    assert (failed.kind, failed.retryable) == (Kind.NETWORK, True)
    assert failed.reason == "cannot reach Apple: Timeout: no complete answer from 127.0.0.1 within 0.5 s"


def test_a_request_ended_by_its_own_read_timeout_gives_the_same_reason(monkeypatch):
    # Each read is bounded by the same NETWORK_TIMEOUT as the whole request: on a busy machine the
    # read's bound can end it first (CI, 2026-12-03: "ReadTimeout: HTTPConnectionPool(...)"). Here
    # the read's bound is made the shorter one, so it always comes first.
    silent = socket.create_server(("127.0.0.1", 0), backlog=4)
    monkeypatch.setattr(real, "NETWORK_TIMEOUT", 0.5)
    try:
        with pytest.raises(requests.exceptions.Timeout) as caught:
            real._bounded(requests.post, f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout=0.1)
    finally:
        silent.close()
    assert classify(caught.value).reason == "cannot reach Apple: Timeout: no complete answer from 127.0.0.1 within 0.5 s"
