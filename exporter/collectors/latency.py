"""Request-duration and time-to-first-token histograms by model group, from LiteLLM_SpendLogs.

Each poll reads only the rows whose ``startTime`` is within ``late_margin`` of now, an index
range scan on ``startTime``, and remembers their ``request_id``s until they fall out of that
margin: a row that lands late (a long stream, a delayed or Redis-buffered flush) is counted
once, when it appears. A row that lands more than ``late_margin`` after it started is not
counted; the margin is the trade between that and the rows re-read on every poll.

Unlike the usage counters, these histograms count in this process from its start: spend
logs are subject to retention and cannot give an all-time total.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone

from .. import catalog
from ..catalog import SPEND_LOGS
from ..config import Config, LatencyConfig
from ..db import CommitWatch, Database
from ..errors import SchemaMismatch
from ..families import Family, Histogram, build
from .base import Collector

_QUERY = """
SELECT
    request_id,
    extract(epoch FROM "startTime")::float8,
    coalesce(model_group, ''),
    {duration}::float8,
    CASE
        WHEN "completionStartTime" IS NOT NULL AND "completionStartTime" < "endTime"
        THEN extract(epoch FROM ("completionStartTime" - "startTime"))::float8
    END
FROM "LiteLLM_SpendLogs"
WHERE "startTime" >= %s
"""


_ELAPSED = 'extract(epoch FROM ("endTime" - "startTime"))'


class _Buckets:
    """One histogram per label value, with fixed upper bounds."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(sorted(bounds))
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe(self, label: str, value: float) -> None:
        counts = self._counts.setdefault(label, [0] * (len(self._bounds) + 1))
        counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sums[label] = self._sums.get(label, 0.0) + value

    def samples(self) -> list[tuple[tuple[str, ...], Histogram]]:
        result: list[tuple[tuple[str, ...], Histogram]] = []
        for label, counts in sorted(self._counts.items()):
            cumulative, running = [], 0
            for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
                running += count
                cumulative.append((bound, float(running)))
            result.append(((label,), Histogram(tuple(cumulative), self._sums[label])))
        return result


class LatencyCollector(Collector):
    name = "latency"

    def __init__(self, config: LatencyConfig, *, clock: Callable[[], datetime]) -> None:
        self._config = config
        self.interval = config.interval
        self._clock = clock
        self._durations = _Buckets(config.buckets)
        self._ttft = _Buckets(config.ttft_buckets)
        self._seen: dict[str, float] = {}
        self._commits: CommitWatch[list[Family]] = CommitWatch()

    @property
    def enabled(self) -> bool:
        return self._config.enabled

    def reconfigure(self, config: Config) -> None:
        old, self._config = self._config, config.latency
        self.interval = self._config.interval
        # New bounds are new series; counts kept under the old ones would not fit them.
        if old.buckets != self._config.buckets:
            self._durations = _Buckets(self._config.buckets)
        if old.ttft_buckets != self._config.ttft_buckets:
            self._ttft = _Buckets(self._config.ttft_buckets)
        self._commits.forget()

    def poll(self, db: Database) -> list[Family]:
        lower = self._clock().astimezone(timezone.utc) - timedelta(seconds=self._config.late_margin)
        with db.snapshot() as conn:
            if self._commits.unchanged(conn) and self._commits.result is not None:
                return self._commits.result  # no new rows can have landed
            columns = catalog.columns(conn, [SPEND_LOGS]).get(SPEND_LOGS)
            if columns is None:
                raise SchemaMismatch(f"table {SPEND_LOGS} not found")
            # request_duration_ms came in 2025; before it, endTime - startTime is all there is.
            duration_sql = _ELAPSED
            if "request_duration_ms" in columns:
                duration_sql = f"coalesce(request_duration_ms / 1000.0, {_ELAPSED})"
            rows = conn.execute(_QUERY.format(duration=duration_sql), (lower.replace(tzinfo=None),)).fetchall()
        for request_id, started, model_group, duration, ttft in rows:
            if request_id in self._seen:
                continue
            self._seen[request_id] = started
            self._durations.observe(model_group, max(0.0, duration))
            if ttft is not None:
                self._ttft.observe(model_group, max(0.0, ttft))
        cutoff = lower.timestamp()
        self._seen = {rid: started for rid, started in self._seen.items() if started >= cutoff}
        families = [
            build(
                "litellm_request_duration_seconds",
                "Duration of LiteLLM requests by model group, from LiteLLM_SpendLogs, counted since the exporter "
                "started.",
                "histogram",
                ("model_group",),
                self._durations.samples(),
            ),
            build(
                "litellm_time_to_first_token_seconds",
                "Time to the first token of streamed LiteLLM requests by model group, from LiteLLM_SpendLogs, "
                "counted since the exporter started.",
                "histogram",
                ("model_group",),
                self._ttft.samples(),
            ),
        ]
        self._commits.polled(families)
        return families
