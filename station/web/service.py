"""The station's web side, assembled: listeners on the station, the app, its server and the
IPSW cache view; started and stopped with the station (``station.app``)."""
from __future__ import annotations

import asyncio

from station.config import Config
from station.core import Station
from station.ipsw.cache import IpswCache
from station.lag import LagMonitor
from station.records.recorder import Recorder
from station.web import views
from station.web.auth import Access
from station.web.ipsw_view import CacheView
from station.web.metrics import StationMetrics
from station.web.routes import WebContext, create_app
from station.web.server import WebServer


class WebService:
    def __init__(self, config: Config, station: Station, cache: IpswCache, recorder: Recorder,
                 lag: LagMonitor) -> None:
        self.station = station
        self.metrics = StationMetrics()
        self.cache = CacheView(cache, self.metrics.note_cache)
        lock_methods = views.LockMethods()
        station.listeners += (self.metrics, lock_methods, self.cache)
        lag.observers.append(self.metrics.lag.observe)
        self.context = WebContext(station=station, station_id=config.station.id,
                                  state_dir=config.station.state_dir, access=Access(config.web.token),
                                  metrics=self.metrics, lock_methods=lock_methods, cache=self.cache,
                                  backlog=recorder.backlog)
        self.feed = self.context.feed
        self.server = WebServer(create_app(self.context), self.feed, config.web.listen, config.web.port, station.set_fault)
        self._cache_task: asyncio.Task[None] | None = None

    def on_change(self) -> None:
        """After every change of the station, on the loop: the live pages and the bytes count."""
        self.metrics.observe_ports(list(self.station.ports.values()))
        self.feed.changed()

    def start(self) -> None:
        self._cache_task = asyncio.get_running_loop().create_task(self.cache.run(), name="web-ipsw")
        self.server.start()

    async def stop(self) -> None:
        await self.server.stop()
        if self._cache_task is not None:
            self._cache_task.cancel()
            await asyncio.gather(self._cache_task, return_exceptions=True)
