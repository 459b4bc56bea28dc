"""Days of LiteLLM-shaped traffic, flushed as the proxy flushes it."""

from __future__ import annotations

import random
from datetime import timedelta

from exporter.demo.traffic import World, random_requests
from exporter.demo.writer import SpendWriter

from .exporters import FakeClock


def load_history(writer: SpendWriter, rng: random.Random, world: World, clock: FakeClock, days: int = 20) -> None:
    """``days`` days of traffic up to the clock's now, flushed in proxy-sized batches."""
    start = clock.now - timedelta(days=days)
    requests = random_requests(rng, world, 1500, start, clock.now)
    requests.sort(key=lambda r: r.start_time)
    for i in range(0, len(requests), 50):
        writer.record(*requests[i : i + 50])
        writer.flush(requests[min(i + 49, len(requests) - 1)].start_time)


def flush_recent(
    writer: SpendWriter, rng: random.Random, world: World, clock: FakeClock, count: int, since: timedelta
) -> None:
    """One proxy flush, at the clock's now, of ``count`` requests that started within ``since``."""
    writer.record(*random_requests(rng, world, count, clock.now - since, clock.now))
    writer.flush(clock.now)
