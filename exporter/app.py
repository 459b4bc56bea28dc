"""Wires the database, the collectors, the runner and the HTTP server together."""

from __future__ import annotations

import signal
import threading

from . import webconfig
from .cardinality import SeriesCap
from .collectors.base import Collector
from .collectors.budgets import BudgetsCollector
from .collectors.database import DatabaseCollector
from .collectors.latency import LatencyCollector
from .collectors.proxy import ProxyCollector
from .collectors.usage import Clock, UsageCollector, utc_now
from .config import Config
from .db import Database
from .exposition import Exposition
from .runner import Runner
from .web import ExporterHTTPServer
from .webconfig import WebSecurity


def build_collectors(config: Config, cap: SeriesCap, *, clock: Clock = utc_now) -> list[Collector]:
    collectors: list[Collector] = [
        DatabaseCollector(config.database_probe),
        UsageCollector(config.usage, clock=clock, cap=cap),
        BudgetsCollector(config.budgets, cap=cap),
    ]
    if config.latency.enabled:
        collectors.append(LatencyCollector(config.latency, clock=clock))
    if config.proxy.targets:
        collectors.append(ProxyCollector(config.proxy))
    return collectors


class Exporter:
    def __init__(self, config: Config, *, clock: Clock = utc_now) -> None:
        self.config = config
        self.db = Database(config.database)
        cap = SeriesCap()
        self.runner = Runner(
            self.db,
            build_collectors(config, cap, clock=clock),
            max_gauge_age=config.max_gauge_age,
            self_metrics=cap.families,
        )
        # Read here, so that a bad web config file fails before anything starts.
        self.security = webconfig.load(config.web.config_file) if config.web.config_file else WebSecurity()
        self.exposition = Exposition(self.runner)
        self.registry = self.exposition.registry
        self._server: ExporterHTTPServer | None = None

    @property
    def port(self) -> int:
        """The port actually bound (differs from the configured one when that is 0)."""
        assert self._server is not None
        return self._server.server_address[1]

    def start(self) -> None:
        """Open the pool (waiting for it when the database is required), then serve and poll."""
        self.db.open(wait=self.config.database.is_required)
        try:
            self._server = ExporterHTTPServer(
                (self.config.web.host, self.config.web.port), self.exposition, self.runner, self.security
            )
        except OSError:
            self.db.close()
            raise
        self._server.serve_in_background()
        self.runner.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.runner.stop()
        self.db.close()


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for a clean shutdown."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
