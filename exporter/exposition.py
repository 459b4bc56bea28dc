"""The runner's snapshots and the process metrics, exposed.

The snapshots only change when a collector polls, so the rendered snapshot is kept until the
runner's snapshot key moves, and then only the families that changed are rendered again
(``render.FamilyRenderer``); the few process metrics are rendered by prometheus-client on
every scrape.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector as RegistryCollector

from .render import FamilyRenderer
from .runner import Runner


def _registry(*collectors: RegistryCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


class Exposition:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._process = _registry(ProcessCollector(registry=None), PlatformCollector(registry=None))
        self._lock = threading.Lock()
        self._cache: dict[bool, tuple[object, list[bytes]]] = {}
        self._renderer = FamilyRenderer()
        # Rendered on the poller's thread as each poll finishes, so that a scrape only joins.
        runner.on_snapshot(self._renderer.warm)

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition in the format the Accept header asks for, and its content type."""
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        key = self._runner.snapshot_key()
        with self._lock:
            cached = self._cache.get(openmetrics)
        if cached is None or cached[0] != key:
            # The process part ends the document (with "# EOF" in OpenMetrics).
            body = self._renderer.render(self._runner.families(), openmetrics=openmetrics)
            cached = (key, body)
            with self._lock:
                self._cache[openmetrics] = cached
        return b"".join([*cached[1], encoder(self._process)]), content_type
