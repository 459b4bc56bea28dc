"""The prometheus-client side: a registry whose collector serves the runner's snapshots."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.registry import Collector as RegistryCollector

from .runner import Runner


class SnapshotCollector(RegistryCollector):
    """Builds fresh metric families from the latest snapshots on every collect()."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def collect(self) -> Iterator[Metric]:
        for family in self._runner.families():
            yield family.to_metric()

    def describe(self) -> list[Metric]:
        # Nothing to describe up front: the families depend on what the database holds.
        return []


def make_registry(runner: Runner) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(runner))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
