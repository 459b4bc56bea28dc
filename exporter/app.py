"""Wires the database, the collectors, the runner and the HTTP server together."""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable
from typing import Any

from . import listen, status, webconfig
from .cardinality import CapReport
from .collectors.base import Collector
from .collectors.budgets import BudgetsCollector
from .collectors.database import DatabaseCollector
from .collectors.latency import LatencyCollector
from .collectors.proxy import ProxyCollector
from .collectors.proxy_state import ProxyStateCollector
from .collectors.usage import Clock, UsageCollector, utc_now
from .config import Config, ConfigError
from .db import Database
from .exposition import Exposition
from .otlp.push import Pusher
from .runner import Runner
from .supervise import Supervisor
from .web import WebServer
from .webconfig import WebSecurity


def build_collectors(config: Config, caps: CapReport, *, clock: Clock = utc_now) -> list[Collector]:
    # Every collector exists; a disabled one (latency off, no proxy targets) is not polled, and
    # a reload can turn it on.
    return [
        DatabaseCollector(config.database_probe),
        UsageCollector(config.usage, clock=clock, caps=caps),
        BudgetsCollector(config.budgets, caps=caps),
        LatencyCollector(config.latency, clock=clock),
        ProxyCollector(config.proxy),
        ProxyStateCollector(config.proxy_state, caps=caps),
    ]


class Exporter:
    def __init__(self, config: Config, *, clock: Clock = utc_now) -> None:
        self.config = config
        self.db = Database(config.database)
        caps = CapReport()
        self.supervisor = Supervisor()
        _require_otlp(config)
        # Pushes what /metrics serves; its thread waits while no endpoint is configured.
        self.pusher = Pusher(config.otlp, lambda: self.runner.families())
        self.runner = Runner(
            self.db,
            build_collectors(config, caps, clock=clock),
            max_gauge_age=config.max_gauge_age,
            self_metrics=[caps.families, self.pusher.families],
            supervisor=self.supervisor,
        )
        self._stop = threading.Event()
        # Read here, so that a bad web config file fails before anything starts.
        self.security = _security(config)
        self._reload: Callable[[], tuple[bool, str]] | None = None
        self.exposition = Exposition(self.runner)
        self._server: WebServer | None = None
        self._reload_lock = threading.Lock()

    @property
    def port(self) -> int:
        """The port actually bound (differs from the configured one when that is 0)."""
        assert self._server is not None
        return self._server.port

    def start(self, reload: Callable[[], tuple[bool, str]] | None = None) -> None:
        """Bind the listening address, open the pool (waiting for it when the database is
        required), then serve and poll. Raises ``listen.ListenError`` when the address cannot be
        served, and ``psycopg_pool.PoolTimeout`` when a required database cannot be reached.

        ``reload`` is what ``POST /-/reload`` calls while ``web.enable_lifecycle`` is true."""
        self._reload = reload
        sockets = listen.bind(self.config.web.host, self.config.web.port)
        try:
            self.db.open(wait=self.config.database.is_required)
        except BaseException:
            listen.close_all(sockets)
            raise
        self._server = WebServer(
            sockets,
            self.exposition,
            self.runner,
            self.security,
            reload if self.config.web.enable_lifecycle else None,
            status=self.status,
            supervisor=self.supervisor,
            max_connections=self.config.web.max_connections,
            request_timeout=self.config.web.request_timeout,
        )
        self._server.start()
        self.runner.start()
        self.supervisor.start("otlp-push", lambda: self.pusher.run(self._stop), self._stop)

    def status(self) -> dict[str, Any]:
        """What the landing page and /status show."""
        otlp = self.pusher.status() if self.pusher.active else None
        return status.collect(self.runner, self.db.display_dsn, otlp)

    def reload(self, config: Config) -> tuple[bool, str]:
        """Apply a reloaded configuration without losing counter state or a scrape.

        The database connection and the listening address are fixed for the life of the
        process; a change to them is reported and left for a restart.
        """
        with self._reload_lock:
            try:
                security = _security(config)
                _require_otlp(config)
            except ConfigError as exc:
                return False, "; ".join(exc.problems)
            self.runner.reconfigure(config)
            self.pusher.reconfigure(config.otlp)
            self.security = security
            if self._server is not None:
                self._server.set_security(security)
                self._server.reload = self._reload if config.web.enable_lifecycle else None
            kept = []
            if config.database != self.config.database:
                kept.append("database")
            if (config.web.host, config.web.port) != (self.config.web.host, self.config.web.port):
                kept.append("web.listen")
            self.config = dataclasses.replace(
                config,
                database=self.config.database,
                web=dataclasses.replace(config.web, host=self.config.web.host, port=self.config.web.port),
            )
        if kept:
            return True, f"configuration reloaded; {' and '.join(kept)} changes need a restart"
        return True, "configuration reloaded"

    def stop(self) -> None:
        self._stop.set()
        self.pusher.interrupt()
        if self._server is not None:
            self._server.stop()
        self.runner.stop()
        self.db.close()


def _require_otlp(config: Config) -> None:
    """A push is configured only where its encoding is installed: said at start, not at the first push."""
    if not config.otlp.enabled:
        return
    try:
        from .otlp import encode  # noqa: F401
    except ImportError:
        raise ConfigError(
            ["otlp.endpoint: the OTLP push needs the otlp extra (pip install 'litellm-exporter[otlp]')"]
        ) from None


def _security(config: Config) -> WebSecurity:
    return webconfig.load(config.web.config_file) if config.web.config_file else WebSecurity()


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for a clean shutdown."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
