"""Probes of LiteLLM proxy replicas through their unauthenticated health endpoints.

Only ``/health/liveliness`` and ``/health/readiness`` are probed: ``/health`` makes a real call
to every model deployment. Targets are probed concurrently, each within the timeout, so one
slow replica never delays another; scrapes read the last snapshot and never wait at all.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .. import __version__
from ..config import Config, ProxyConfig
from ..db import Database
from ..families import Family, build
from .base import Collector

_MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class _Probe:
    target: str
    up: bool
    ready: bool
    duration: float
    db_connected: bool | None
    version: str | None


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": f"litellm-exporter/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(_MAX_BODY)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(_MAX_BODY)


def probe(target: str, timeout: float) -> _Probe:
    base = target.rstrip("/")
    deadline = time.monotonic() + timeout
    started = time.perf_counter()
    up = ready = False
    db_connected: bool | None = None
    version: str | None = None
    try:
        status, _ = _get(f"{base}/health/liveliness", timeout)
        up = status == 200
        remaining = deadline - time.monotonic()
        if remaining > 0:
            status, body = _get(f"{base}/health/readiness", remaining)
            payload = _json(body)
            # 503 means its own database ping failed; its body still says so.
            ready = status == 200 and payload.get("status") in ("healthy", "connected")
            db = payload.get("db")
            if isinstance(db, str):
                db_connected = db == "connected"
            reported = payload.get("litellm_version")
            if isinstance(reported, str) and reported:
                version = reported
    except (OSError, ValueError):
        # Refused, reset, timed out or not HTTP: whatever was learnt before stands.
        pass
    return _Probe(target, up, ready, time.perf_counter() - started, db_connected, version)


def _json(body: bytes) -> dict[str, object]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _executor(targets: int) -> ThreadPoolExecutor:
    # One thread a target: probes run side by side, so a slow replica delays no other.
    return ThreadPoolExecutor(max_workers=max(1, targets), thread_name_prefix="proxy-probe")


class ProxyCollector(Collector):
    name = "proxy"

    def __init__(self, config: ProxyConfig) -> None:
        self._config = config
        self.interval = config.interval
        self._pool = _executor(len(config.targets))

    @property
    def enabled(self) -> bool:
        return bool(self._config.targets)

    def reconfigure(self, config: Config) -> None:
        if len(config.proxy.targets) > len(self._config.targets):
            old, self._pool = self._pool, _executor(len(config.proxy.targets))
            old.shutdown(wait=False)
        self._config = config.proxy
        self.interval = config.proxy.interval

    def poll(self, db: Database) -> list[Family]:
        probes = list(self._pool.map(lambda t: probe(t, self._config.timeout), self._config.targets))
        return [
            build(
                "litellm_proxy_up",
                "Whether the proxy answered /health/liveliness with 200.",
                "gauge",
                ("target",),
                [((p.target,), float(p.up)) for p in probes],
            ),
            build(
                "litellm_proxy_ready",
                "Whether the proxy answered /health/readiness with 200 and a healthy status.",
                "gauge",
                ("target",),
                [((p.target,), float(p.ready)) for p in probes],
            ),
            build(
                "litellm_proxy_probe_duration_seconds",
                "How long the last probe of the proxy took.",
                "gauge",
                ("target",),
                [((p.target,), p.duration) for p in probes],
            ),
            build(
                "litellm_proxy_db_connected",
                "Whether the proxy reported its database as connected on /health/readiness.",
                "gauge",
                ("target",),
                [((p.target,), float(p.db_connected)) for p in probes if p.db_connected is not None],
            ),
            build(
                "litellm_proxy_info",
                "The LiteLLM version the proxy reports; always 1.",
                "gauge",
                ("target", "version"),
                [((p.target, p.version), 1.0) for p in probes if p.version],
            ),
        ]
