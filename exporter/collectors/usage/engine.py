"""What every read of the usage engine shares: the configuration's views of each table, where
a table is cut, how it is read (its daily table or the spend logs), the count of reads by kind,
and the SQL session settings and compositions the full read, the look-back and the poll use."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg import sql

from ... import catalog
from ...catalog import SPEND_LOGS
from ...config import UsageConfig
from .queries import Reading, View, daily_reading, decode_folded, folded_query, spend_log_reading
from .state import Cuts, Membership, SourceState, raw
from .tables import ACTIVITY_SOURCES, ALL_SOURCES, USER_SOURCE, Source

log = logging.getLogger(__name__)


class Reader:
    """The engine's reading side, as configured: which views each table has, where its rows are
    cut, and what the database was asked, by kind of read (``reads``: what tests and the status
    page look at to tell a resync from a full read)."""

    def __init__(self, config: UsageConfig) -> None:
        self.config = config
        self.reads: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, kind: str) -> None:
        with self._lock:  # helper connections count too
            self.reads[kind] += 1

    def views(self, source: Source) -> tuple[View, ...]:
        views = []
        for spec in source.views:
            if spec.entity is None:
                views.append(View(spec.family, spec.id, spec.extras, self.config.global_max_series, None, spec.key))
                continue
            settings = self.config.entity(spec.entity)
            if not settings.enabled:
                continue
            by_model_group = settings.model_group and "model_group" in source.logical and spec.id != "model_group"
            extras = spec.extras + (("model_group",) if by_model_group else ())
            views.append(View(spec.family, spec.id, extras, settings.max_series, spec.entity, spec.key))
        return tuple(views)

    def sources(self) -> list[Source]:
        return [s for s in ALL_SOURCES if s is USER_SOURCE or self.views(s)]

    def cuts(self, reading: Reading, now: datetime) -> Cuts:
        now = now.astimezone(timezone.utc)
        if reading.table == SPEND_LOGS:
            start = now - timedelta(seconds=self.config.spend_logs_late_margin)
            old_end = start - timedelta(seconds=self.config.look_back)
            return Cuts(old_end.strftime("%Y-%m-%d %H:%M:%S.%f"), start.strftime("%Y-%m-%d %H:%M:%S.%f"))
        first = (now - timedelta(seconds=self.config.late_margin)).date()
        days = math.ceil(self.config.look_back / 86400)
        return Cuts((first - timedelta(days=days)).isoformat(), first.isoformat())

    def reading(self, conn: psycopg.Connection, source: Source, views: tuple[View, ...]) -> Reading | None:
        """The daily table where it is there and complete, else LiteLLM_SpendLogs, as configured."""
        found = catalog.columns(conn, [source.table, SPEND_LOGS])
        reading = None
        # `source` chooses how spend is counted; the other tables (errors, gateway, tools, ...)
        # have nothing in the spend logs to stand in for them, and are always read.
        from_table = self.config.source in ("auto", "daily_tables") or source in ACTIVITY_SOURCES
        if from_table and source.table in found:
            per_entity_only = all(view.entity is not None for view in views)
            reading = daily_reading(source, found[source.table], per_entity_only=per_entity_only)
        if reading is None and self.config.source in ("auto", "spend_logs") and SPEND_LOGS in found:
            reading = spend_log_reading(source, found[SPEND_LOGS])
        return reading


def hash_aggregates(conn: psycopg.Connection) -> None:
    """Aggregate by hashing for the rest of the transaction. The planner cannot tell how few
    groups the folded sums have (it multiplies the columns' distinct counts), and sorts the rows
    (on disk, for a full read) where a hash of a few thousand groups does it in a third of the
    time, measured; a hash that outgrows its memory spills to disk by itself."""
    conn.execute("SELECT set_config('enable_sort', 'off', true)")


def folded(
    reading: Reading, views: tuple[View, ...], members: tuple[frozenset[str] | None, ...], lo: str | None
) -> tuple[sql.Composed, dict[str, object]]:
    """The folded sums of the rows on or after the parameter ``lo`` (None: all), by the shown
    entities: those of a column no view groups by as it is are folded in SQL."""
    grouped = raw(views)
    ids = frozenset(v.id for v, m in zip(views, members, strict=True) if m is not None and v.id not in grouped)
    return folded_query(reading, views, members, ids, lo=lo)


def window_query(
    reading: Reading, views: tuple[View, ...], memberships: tuple[Membership, ...], cuts: Cuts
) -> tuple[sql.Composed, dict[str, object]]:
    """A poll's query of one source (its window), composed once per resync."""
    query, params = folded(reading, views, tuple(m.members for m in memberships), "start")
    return query, {**params, **cuts.params()}


def read_window(conn: psycopg.Connection, previous: SourceState) -> SourceState:
    """A poll of one source: its window summed again, the rest as it was."""
    rows = conn.execute(previous.window_query, previous.window_params).fetchall()
    members = tuple(m.members for m in previous.memberships)
    found = decode_folded(rows, previous.views, members, len(previous.reading.measures))
    latest = found.latest_update
    if latest is None or (previous.latest_update is not None and previous.latest_update > latest):
        latest = previous.latest_update
    return dataclasses.replace(previous, window=tuple(found.window), latest_update=latest)


class Progress:
    """How far a full read is, for /ready, the status page and the log."""

    def __init__(self, tables: int) -> None:
        self.tables = tables
        self.done = 0
        self.rows = 0
        self.started = time.monotonic()
        self._said = self.started
        self._lock = threading.Lock()

    def table_read(self, rows: int) -> None:
        with self._lock:
            self.done += 1
            self.rows += rows
            now = time.monotonic()
            if now - self._said >= PROGRESS_EVERY and self.done < self.tables:
                self._said = now
                log.info("usage: full read under way: %s", self.text())

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def text(self) -> str:
        return f"{self.done} of {self.tables} tables read ({self.rows:,} rows), {self.elapsed:.1f}s"


# A full read that lasts longer than this says how far it is, in the log, this often.
PROGRESS_EVERY = 10.0
