"""The FastAPI app: the page, the JSON API, the live feed, the actions and /metrics.

Every route runs on the station's loop (``async def``): snapshots are read where they are made,
an action is one ``Station.dispatch`` as a button's is, and the records are read on a thread.
Errors are ``{"error": TEXT}`` with the status that says what kind (401 no token, 403 wrong token
or not allowed, 404 not found, 409 not now). The API is described at /api/openapi.json (no
interactive docs page: it would load its scripts from the internet).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from station.core import Station
from station.machine import Abort, Cancel, Confirm, Event, Port, State
from station.web import certificate, reading, views
from station.web.auth import Access
from station.web.feed import Feed
from station.web.ipsw_view import CacheView
from station.web.metrics import StationMetrics

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
ACTIONS: dict[str, Callable[[], Event]] = {"cancel": Cancel, "retry": lambda: Confirm(long=False),
                                           "abort": Abort}
HELD = ("is held (lock unknown): only a long press of OK on the station confirms it, "
        "never the network")
MAX_RECORDS = 500


@dataclass
class WebContext:
    """What the routes read and act on; all of it lives on the station's loop."""

    station: Station
    station_id: str
    state_dir: Path
    access: Access
    metrics: StationMetrics
    lock_methods: views.LockMethods
    cache: CacheView
    backlog: Callable[[], int]
    feed: Feed = field(init=False)  # the live page's events, made of ``status``

    def __post_init__(self) -> None:
        self.feed = Feed(self.status)

    def status(self, reveal: bool) -> dict[str, Any]:
        return views.status_json(self.station.snapshot(), self.station_id, self.lock_methods.by_slot,
                                 [views.cache_json(entry) for entry in self.cache.entries], reveal)


def create_app(ctx: WebContext) -> FastAPI:
    app = FastAPI(title="station", summary="An iPhone restore station's status and actions",
                  docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    feed = ctx.feed

    @app.exception_handler(StarletteHTTPException)
    async def error_json(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": error.detail}, error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return JSONResponse({"error": where}, 422)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/status", summary="The whole station now: ports, counters, faults, IPSW cache")
    async def status(request: Request) -> dict[str, Any]:
        return ctx.status(ctx.access.trusted(request))

    @app.get("/api/ports", summary="Every port, slot 1 first")
    async def ports(request: Request) -> list[dict[str, Any]]:
        return ctx.status(ctx.access.trusted(request))["ports"]

    @app.get("/api/ports/{slot}", summary="One port")
    async def one_port(slot: int, request: Request) -> dict[str, Any]:
        port = _port(ctx.station, slot)
        return views.port_json(port, ctx.station.clock(), ctx.lock_methods.by_slot.get(slot, ""),
                               ctx.access.trusted(request))

    @app.post("/api/ports/{slot}/{action}", summary="cancel (a queued restore), retry (a failed "
              "one) or abort (a running one); needs the token. There is no confirm: a held phone "
              "is confirmed by a long press of OK on the station only")
    async def act(slot: int, action: str, request: Request) -> dict[str, Any]:
        ctx.access.require(request, "an action")
        port = _port(ctx.station, slot)
        if action not in ACTIONS:
            raise HTTPException(404, f"no action {action!r} (the network may cancel, retry or abort; "
                                     f"confirming a held phone is a long press of OK on the station)")
        if port.state is State.NEEDS_CONFIRM and port.held:
            raise HTTPException(403, f"slot {slot} {HELD}")
        if action == "retry" and port.held:
            raise HTTPException(403, f"slot {slot}'s lock is unknown (it was held for a person): "
                                     "only the station's OK starts its restore again")
        if action not in views.actions(port):
            raise HTTPException(409, f"slot {slot} is {port.state}: {_when(action)}")
        ctx.station.dispatch(slot, ACTIONS[action]())
        after = ctx.station.ports[slot]
        if after.state is port.state:
            raise HTTPException(409, f"slot {slot}: {action} refused by the station (see its log)")
        log.info("web: %s on slot %d by %s", action, slot, _peer(request))
        return views.port_json(after, ctx.station.clock(), ctx.lock_methods.by_slot.get(slot, ""), True)

    @app.get("/api/records", summary="The newest records (sessions), newest first")
    async def records(request: Request, limit: int = Query(50, ge=1, le=MAX_RECORDS)) -> list[dict[str, Any]]:
        reveal = ctx.access.trusted(request)
        return await _read(reading.recent_records, ctx.state_dir, limit, reveal)

    @app.get("/api/certificates/{record_id}", summary="A record's signed erasure certificate; needs the token")
    async def certificate_json(record_id: int, request: Request) -> dict[str, Any]:
        ctx.access.require(request, "a certificate")
        return await _read(reading.certificate_of, ctx.state_dir, record_id)

    @app.get("/certificates/{record_id}", response_class=HTMLResponse,
             summary="The certificate as a printable page; needs the token")
    async def certificate_page(record_id: int, request: Request) -> HTMLResponse:
        ctx.access.require(request, "a certificate")
        document = await _read(reading.certificate_of, ctx.state_dir, record_id)
        return HTMLResponse(certificate.render(document))

    @app.get("/api/ipsw", summary="The IPSW cache: builds, sizes, verification")
    async def ipsw() -> list[dict[str, Any]]:
        return [views.cache_json(entry) for entry in ctx.cache.entries]

    @app.get("/api/events", summary="Server-Sent Events: the status (as /api/status) after each change")
    async def events(request: Request) -> StreamingResponse:
        reveal = ctx.access.trusted(request)
        return StreamingResponse(feed.stream(reveal, _peer(request)), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        snapshot = ctx.station.snapshot()
        ctx.metrics.observe_ports(list(snapshot.ports))
        body = ctx.metrics.exposition(snapshot, ctx.backlog(), feed.clients, dict(ctx.station.faults))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


def _port(station: Station, slot: int) -> Port:
    if slot not in station.ports:
        raise HTTPException(404, f"no slot {slot}: this station has slots 1..{len(station.ports)}")
    return station.ports[slot]


def _when(action: str) -> str:
    return {"cancel": "only a queued restore can be cancelled",
            "retry": "only a failed restore can be retried",
            "abort": "only a running restore can be aborted"}[action]


async def _read(read: Callable[..., Any], *args: Any) -> Any:
    try:
        return await asyncio.to_thread(read, *args)
    except reading.NotFound as missing:
        raise HTTPException(404, str(missing)) from None
    except reading.Unreadable as error:
        log.error("web: %s", error)
        raise HTTPException(503, str(error)) from None


def _peer(request: Request) -> str:
    return request.client.host if request.client else "?"
