"""Usage counters: all-time sums of LiteLLM's daily spend rollup tables.

Each counter equals ``sum(column)`` over its daily table, grouped by the family's labels. So
that neither a poll nor a resync costs more as the history grows, every table is cut in three
by date, and each part is read as often as it can change:

* the window, from the date of (now minus ``late_margin``): today's rows, and yesterday's for
  a while after midnight. Summed again by PostgreSQL on every poll that finds something
  committed (``db.CommitWatch``); a poll with nothing committed reads no table at all.
* the look-back, the ``look_back`` days before the window: days that are over but may still
  get a late flush or a retried batch. Summed again at every resync (``resync_interval``,
  hourly), and when the window moves on at midnight; read through the ``date`` index.
* the old part, every date before that: summed once by a full read, at start-up, on a reload
  and on a slow schedule of its own (``full_resync_interval``, daily). As the look-back moves
  on, the day leaving it is added to the old part. A row that changes there is counted at the
  next full read, or, where an index on ``updated_at`` exists, at the next resync, which then
  reads that table in full.

Every read, and each resync, is aligned to the wall clock so that replicas do it together.

A capped family shows the top ``max_series`` entities by all-time spend, ties by id; the rest
are summed into one ``__other__`` entity. A full read ranks them in SQL (a pass of one measure,
grouped by entity) before the pass that sums everything, folded by the entities shown; a resync
ranks them again from the old totals of the contenders the engine keeps (``ranking``), plus
what the look-back and the window add. An entity that enters the shown set has its old rows
summed by id (through the entity's index) and taken out of ``__other__``.

All sums are grouped in SQL by the labels the families publish, so that what reaches Python
is about one row per series, never one per daily row, and only the top of each ranking.

Where this LiteLLM has no daily table for an entity (or one without request counts), or the
configuration asks for it, the same cuts are applied to LiteLLM_SpendLogs, on ``startTime``,
the window starting ``spend_logs_late_margin`` before each resync.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql

from ... import catalog
from ...cardinality import OTHER, OVERFLOW_LABEL, CapReport, membership_digest
from ...catalog import SPEND_LOGS
from ...config import Config, UsageConfig
from ...db import CommitWatch, Database, SnapshotUnavailable
from ...families import Family, build
from ..base import Collector
from .queries import (
    OLD,
    RECENT,
    WINDOW,
    Reading,
    View,
    daily_reading,
    decode_folded,
    entity_sums_query,
    folded_query,
    old_totals_query,
    other_group,
    rank_delta_query,
    rank_query,
    spend_log_reading,
)
from .ranking import Entry, Ranking, contenders, ranked, rerank, top
from .tables import ACTIVITY_SOURCES, ALL_SOURCES, ENTITY_SOURCES, SUMS_TYPE, USER_SOURCE, Group, Source, Sums

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# Where the labels of ids come from: aliases and a key's team.
_METADATA_TABLES = (
    "LiteLLM_VerificationToken",
    "LiteLLM_DeletedVerificationToken",
    "LiteLLM_TeamTable",
    "LiteLLM_DeletedTeamTable",
    "LiteLLM_OrganizationTable",
)

# Per entity: the labels its id becomes where it is not the id's logical name.
_ID_LABELS = {
    "key": ("key_hash", "key_alias", "team_id"),
    "team": ("team_id", "team_alias"),
    "organization": ("organization_id", "organization_alias"),
}
_DESCRIBED = {
    "key": " by virtual key",
    "user": " by internal user",
    "team": " by team",
    "organization": " by organization",
    "end_user": " by end user (the caller's customer id)",
    "tag": " by request tag",
    "agent": " by agent",
    "task": " by task type",
    "tool": " by tool",
    "guardrail": " by guardrail",
    "policy": " by policy",
}


@dataclass(frozen=True)
class Membership:
    """The entities a capped view shows: None shows every entity (there are no more than the
    cap), with how many entities are left out and the overflow series' identity."""

    members: frozenset[str] | None = None
    over: int = 0

    @property
    def digest(self) -> str:
        return membership_digest(self.members) if self.members is not None else ""


@dataclass(frozen=True)
class Cuts:
    """Where a source's rows are cut (dates, or spend-log times): rows before ``old_end`` are
    the old part, rows on or after ``start`` the window, those between the look-back."""

    old_end: str
    start: str

    def params(self) -> dict[str, object]:
        return {"old_end": self.old_end, "start": self.start}


@dataclass(frozen=True)
class SourceState:
    """What the engine keeps per source: sums per series, and one total per ranked entity,
    never rows. Each sums array holds one value per measure, then the rows summed."""

    reading: Reading
    views: tuple[View, ...]
    memberships: tuple[Membership, ...]
    cuts: Cuts
    old: tuple[dict[Group, Sums], ...]
    recent: tuple[dict[Group, Sums], ...]
    window: tuple[dict[Group, Sums], ...]
    # Capped views: how their entities rank (None: not capped).
    rankings: tuple[Ranking | None, ...]
    # The window's query, composed once per resync.
    window_query: sql.Composed
    window_params: dict[str, object]
    # The newest updated_at at the last look, where an index on it makes looking cheap.
    updated_seen: datetime | None = None
    latest_update: float | None = None

    def totals(self, index: int) -> dict[Group, Sums]:
        totals = {group: array(SUMS_TYPE, values) for group, values in self.old[index].items()}
        for part in (self.recent[index], self.window[index]):
            for group, values in part.items():
                current = totals.get(group)
                if current is None:
                    totals[group] = array(SUMS_TYPE, values)
                else:
                    for k, value in enumerate(values):
                        current[k] += value
        return totals

    def kept(self) -> int:
        """Sums held, in all parts: what the engine's memory follows."""
        return sum(len(d) for part in (self.old, self.recent, self.window) for d in part)


class _Progress:
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

    def text(self) -> str:
        return f"{self.done} of {self.tables} tables read ({self.rows:,} rows), {time.monotonic() - self.started:.1f}s"


# A full read that lasts longer than this says how far it is, in the log, this often.
PROGRESS_EVERY = 10.0


# Per series (family, labels): the values published, one per measure.
Published = dict[tuple[str, tuple[str, ...]], Sums]


@dataclass(frozen=True)
class _Built:
    """One view's families as last built: what they were built from (its membership, base and
    window sums, and aliases), them, and the values they published."""

    membership: Membership
    old: dict[Group, Sums]
    recent: dict[Group, Sums]
    window: dict[Group, Sums]
    metadata: dict[str, Any] | None
    families: list[Family]
    published: Published

    def built_from(self, state: SourceState, index: int, metadata: object) -> bool:
        # The old and recent parts only change at a resync (new dicts), so identity says they
        # are the same; the window and the aliases are compared by value (a few thousand
        # entries at most).
        return (
            self.membership == state.memberships[index]
            and self.old is state.old[index]
            and self.recent is state.recent[index]
            and self.window == state.window[index]
            and self.metadata == metadata
        )


def _add(target: dict[Group, Sums], group: Group, values: Sums, sign: int = 1) -> None:
    """Add (or take away) ``values`` into ``target[group]``, never changing an array another
    state may hold; a group left with no rows is dropped."""
    current = target.get(group)
    merged = array(SUMS_TYPE, current) if current is not None else array(SUMS_TYPE, [0] * len(values))
    for k, value in enumerate(values):
        merged[k] += sign * value
    if merged[-1] <= 0:  # the row count: nothing is left of the group
        target.pop(group, None)
    else:
        target[group] = merged


def _entity_totals(
    parts: tuple[list[dict[Group, Sums]], ...], index: int, rank: int
) -> tuple[dict[str, int], dict[str, int]]:
    """A view's ranking measure per entity, from its unfolded sums: in the old part, and in
    the look-back and the window together."""
    old: dict[str, int] = {}
    later: dict[str, int] = {}
    for part, sums in enumerate(parts):
        target = old if part == OLD else later
        for group, values in sums[index].items():
            target[group[0]] = target.get(group[0], 0) + values[rank]
    return old, later


def _hash_aggregates(conn: psycopg.Connection) -> None:
    """Aggregate by hashing for the rest of the transaction. The planner cannot tell how few
    groups the folded sums have (it multiplies the columns' distinct counts), and sorts the rows
    (on disk, for a full read) where a hash of a few thousand groups does it in a third of the
    time, measured; a hash that outgrows its memory spills to disk by itself."""
    conn.execute("SELECT set_config('enable_sort', 'off', true)")


def _raw(views: tuple[View, ...]) -> set[str]:
    """The columns some view groups by as they are: extras, and the ids of views without a cap.
    A capped id among them is folded in Python, not in SQL."""
    return {x for v in views for x in v.extras} | {v.id for v in views if v.cap is None}


def _fold(view: View, groups: dict[Group, Sums], shown: frozenset[str]) -> dict[Group, Sums]:
    """A view's groups with the entities outside ``shown`` summed as ``__other__``."""
    folded: dict[Group, Sums] = {}
    for group, values in groups.items():
        _add(folded, group if group[0] in shown else other_group(view, group), values)
    return folded


class UsageCollector(Collector):
    name = "usage"

    def __init__(self, config: UsageConfig, *, clock: Clock = utc_now, caps: CapReport | None = None) -> None:
        self._config = config
        self._caps = caps or CapReport()
        self.interval = config.interval
        self._clock = clock
        self._states: dict[str, SourceState] = {}
        self._resync_slot: int | None = None
        self._full_slot: int | None = None
        # While no transaction has committed since the last poll, every sum is what it was.
        self._commits: CommitWatch[None] = CommitWatch()
        self._published: Published = {}
        self._missing_logged: set[str] = set()
        self._key_meta: dict[str, tuple[str, str]] = {}
        self._team_alias: dict[str, str] = {}
        self._org_alias: dict[str, str] = {}
        # Per family: what its families were built from, and them; most polls change nothing.
        self._built: dict[str, _Built] = {}
        self._progress: _Progress | None = None
        self._share = True  # whether full reads may share their snapshot with helper connections
        # What the database was asked, by kind of read, since start: what tests and the
        # status page look at to tell a resync from a full read.
        self.reads: Counter[str] = Counter()
        self._reads_lock = threading.Lock()

    def _count(self, kind: str) -> None:
        with self._reads_lock:  # helper connections count too
            self.reads[kind] += 1

    # -- what is read ------------------------------------------------------------------

    def _views(self, source: Source) -> tuple[View, ...]:
        views = []
        for spec in source.views:
            if spec.entity is None:
                views.append(View(spec.family, spec.id, spec.extras, self._config.global_max_series, None, spec.key))
                continue
            settings = self._config.entity(spec.entity)
            if not settings.enabled:
                continue
            by_model_group = settings.model_group and "model_group" in source.logical and spec.id != "model_group"
            extras = spec.extras + (("model_group",) if by_model_group else ())
            views.append(View(spec.family, spec.id, extras, settings.max_series, spec.entity, spec.key))
        return tuple(views)

    def _sources(self) -> list[Source]:
        return [s for s in ALL_SOURCES if s is USER_SOURCE or self._views(s)]

    def state(self, table: str) -> SourceState | None:
        return self._states.get(table)

    @property
    def progress(self) -> str | None:
        progress = self._progress
        return f"full read: {progress.text()}" if progress is not None else None

    def cuts(self, reading: Reading, now: datetime) -> Cuts:
        now = now.astimezone(timezone.utc)
        if reading.table == SPEND_LOGS:
            start = now - timedelta(seconds=self._config.spend_logs_late_margin)
            old_end = start - timedelta(seconds=self._config.look_back)
            return Cuts(old_end.strftime("%Y-%m-%d %H:%M:%S.%f"), start.strftime("%Y-%m-%d %H:%M:%S.%f"))
        first = (now - timedelta(seconds=self._config.late_margin)).date()
        days = math.ceil(self._config.look_back / 86400)
        return Cuts((first - timedelta(days=days)).isoformat(), first.isoformat())

    def _slot(self, now: datetime, interval: float) -> int:
        # Aligned to the Unix epoch, so that every replica reads in the same poll interval.
        return int(now.timestamp() // interval)

    def _resync_due(self, now: datetime) -> bool:
        if self._resync_slot is None or self._slot(now, self._config.resync_interval) != self._resync_slot:
            return True
        # A daily window whose first date has passed out of the late margin: shrink it.
        return any(
            state.reading.table != SPEND_LOGS and state.cuts.start != self.cuts(state.reading, now).start
            for state in self._states.values()
        )

    def reconfigure(self, config: Config) -> None:
        self._config = config.usage
        self.interval = self._config.interval
        # A reload (SIGHUP, /-/reload) reads everything again: what an operator asks for when
        # something was changed by hand, and what a change of cuts or caps needs.
        self.request_resync()
        self._caps.forget(f"litellm_{name}" for name, entity in self._config.entities.items() if not entity.enabled)

    def request_resync(self, *, full: bool = True) -> None:
        """Make the next poll read every table in full (or, not ``full``, resync: read the
        look-back), and choose every shown entity again."""
        if full:
            self._full_slot = None
        self._resync_slot = None
        self._commits.forget()

    # -- polling -----------------------------------------------------------------------

    def poll(self, db: Database) -> list[Family]:
        try:
            return self._poll(db)
        except SnapshotUnavailable as exc:
            # Said once: from now on full reads use the poll's connection alone.
            self._share = False
            log.info("usage: this server does not share snapshots (%s): full reads use one connection", exc)
            return self._poll(db)

    def _poll(self, db: Database) -> list[Family]:
        now = self._clock()
        full_slot = self._slot(now, self._config.full_resync_interval)
        full = self._full_slot != full_slot
        resync = full or self._resync_due(now)
        states: dict[str, SourceState] = {}
        with db.snapshot() as conn:
            if self._commits.unchanged(conn) and not resync and self._states:
                return self._families()
            _hash_aggregates(conn)
            sources = self._sources()
            in_full: list[Source] = []
            for source in sources:
                previous = self._states.get(source.table)
                state: SourceState | None = None
                if full or previous is None:
                    in_full.append(source)
                    continue
                state = self._look_back(conn, previous, now) if resync else self._read_window(conn, previous)
                if state is None:
                    in_full.append(source)  # what the look-back found needs a full read
                else:
                    states[source.table] = state
            # A table missing at the last look (the proxy may not have migrated yet) costs a
            # catalogue query per poll until it appears, then one full read.
            states.update(self._read_in_full(db, conn, in_full, now, side_by_side=full))
            metadata = self._read_metadata(conn, states)
        # State changes only after every read succeeded: a failed poll leaves it untouched.
        self._log_missing(sources, states)
        if resync:
            self._report_memberships(states)
            self._resync_slot = self._slot(now, self._config.resync_interval)
        if full:
            self._full_slot = full_slot
        self._states = states
        self._commits.polled()
        self._key_meta, self._team_alias, self._org_alias = metadata
        return self._families()

    def _reading(self, conn: psycopg.Connection, source: Source, views: tuple[View, ...]) -> Reading | None:
        """The daily table where it is there and complete, else LiteLLM_SpendLogs, as configured."""
        found = catalog.columns(conn, [source.table, SPEND_LOGS])
        reading = None
        # `source` chooses how spend is counted; the other tables (errors, gateway, tools, ...)
        # have nothing in the spend logs to stand in for them, and are always read.
        from_table = self._config.source in ("auto", "daily_tables") or source in ACTIVITY_SOURCES
        if from_table and source.table in found:
            per_entity_only = all(view.entity is not None for view in views)
            reading = daily_reading(source, found[source.table], per_entity_only=per_entity_only)
        if reading is None and self._config.source in ("auto", "spend_logs") and SPEND_LOGS in found:
            reading = spend_log_reading(source, found[SPEND_LOGS])
        return reading

    def _log_missing(self, sources: list[Source], states: dict[str, SourceState]) -> None:
        """One line for the tables this poll found missing that were there (or unseen) before,
        one more for those of newer LiteLLM versions: not a line per table."""
        if not states:
            return  # none at all: not LiteLLM's database, which the database collector names
        missing = [s for s in sources if s.table not in states]
        new = [s for s in missing if s.table not in self._missing_logged]
        counted = [s.table for s in new if s.spend_log_columns is not None]
        newer = [s.table for s in new if s.spend_log_columns is None]
        if counted:
            what = ", ".join(counted)
            log.warning("no usable %s (nor a way to derive them): their usage counters are not exported", what)
        if newer:
            # Tables of newer LiteLLM versions: an older schema simply has none of their families.
            log.info("not in this LiteLLM's schema: %s: their families are not exported", ", ".join(newer))
        self._missing_logged = {s.table for s in missing}

    # -- full reads --------------------------------------------------------------------

    def _read_in_full(
        self, db: Database, conn: psycopg.Connection, sources: list[Source], now: datetime, *, side_by_side: bool
    ) -> dict[str, SourceState]:
        """Read ``sources`` in full: side by side on up to ``read_connections`` connections
        sharing this transaction's snapshot, where it can be shared, else one after another."""
        if not sources:
            return {}
        queue = list(reversed(sources))
        states: dict[str, SourceState] = {}
        progress = _Progress(len(sources))
        self._progress = progress

        def work(c: psycopg.Connection) -> None:
            while True:
                try:
                    source = queue.pop()  # atomic: list.pop holds the GIL
                except IndexError:
                    return
                state, rows = self._read_full(c, source, now)
                if state is not None:
                    states[source.table] = state
                if c is not conn:
                    self._count("helper")  # a table a helper connection read
                progress.table_read(rows)

        helpers = min(self._config.read_connections, len(sources)) - 1 if side_by_side and self._share else 0
        snapshot = db.export_snapshot(conn) if helpers > 0 else None
        try:
            if snapshot is None:
                work(conn)
            else:
                with ThreadPoolExecutor(helpers, thread_name_prefix="usage-read") as pool:
                    futures = [pool.submit(self._help, db, snapshot, work) for _ in range(helpers)]
                    try:
                        work(conn)
                    finally:
                        queue.clear()  # on a failure here, the helpers stop after their table
                        errors = [f.exception() for f in futures]
                    for error in errors:
                        if error is not None:
                            raise error
        finally:
            self._progress = None
        if side_by_side and states:
            log.info(
                "usage: %d tables read in full (%s rows) in %.1fs",
                len(states),
                f"{progress.rows:,}",
                time.monotonic() - progress.started,
            )
        return states

    def _help(self, db: Database, snapshot: str, work: Callable[[psycopg.Connection], None]) -> None:
        """A helper connection's share of a full read, in the poll's snapshot."""
        try:
            with db.in_snapshot(snapshot) as conn:
                _hash_aggregates(conn)  # as the poll's own transaction does
                work(conn)
        except SnapshotUnavailable as exc:
            # The poll's own connection reads what this one would have.
            log.debug("usage: a helper connection could not share the snapshot: %s", exc)

    def _read_full(self, conn: psycopg.Connection, source: Source, now: datetime) -> tuple[SourceState | None, int]:
        """One source read in full: each capped view's entities ranked (one measure, grouped by
        entity), then every view's sums in one pass, folded by the entities shown. Returns the
        state and the rows read."""
        views = self._views(source)
        reading = self._reading(conn, source, views)
        if reading is None:
            return None, 0
        cuts = self.cuts(reading, now)
        params = cuts.params()
        # A capped view is ranked before the pass that sums, so that the pass can fold its
        # entities in SQL, unless its column is grouped by as it is anyway (model_group), or
        # the planner's statistics say it has no more entities than the cap: those are ranked
        # from the sums.
        raw = _raw(views)
        first = [
            i
            for i, v in enumerate(views)
            if v.cap is not None and v.id not in raw and not self._few(conn, source, reading, v)
        ]
        rankings: list[Ranking | None] = [None for _ in views]
        members: list[frozenset[str] | None] = [None for _ in views]
        if first:
            keep = tuple(contenders(views[i].cap or 0) for i in first)
            entries: dict[int, list[Entry]] = {i: [] for i in first}
            counts: dict[int, int] = {}
            for j, entity, old, total, count in conn.execute(
                rank_query(reading, tuple(views[i] for i in first), keep), params
            ):
                entries[first[j]].append((sys.intern(entity), old, total))
                counts[first[j]] = count
            self._count("rank")
            for i in first:
                best = top(entries[i], len(entries[i]))
                rankings[i], members[i] = ranked(best, counts.get(i, 0), views[i].cap or 0)
        query, extra = self._folded(reading, views, tuple(members), None)
        rows = conn.execute(query, {**params, **extra}).fetchall()
        parts, latest = decode_folded(rows, views, tuple(members), len(reading.measures))
        self._count("full")
        for i, view in enumerate(views):
            if view.cap is None or i in first:
                continue
            olds, later = _entity_totals(parts, i, reading.rank)
            ids = olds.keys() | later.keys()
            candidates = ((e, olds.get(e, 0), olds.get(e, 0) + later.get(e, 0)) for e in ids)
            rankings[i], shown = ranked(top(candidates, contenders(view.cap) + 1), len(ids), view.cap)
            members[i] = shown
            if shown is not None:
                for part in parts:
                    part[i] = _fold(view, part[i], shown)
        memberships = tuple(
            Membership(m, r.entities - (v.cap or 0)) if m is not None and r is not None else Membership()
            for v, m, r in zip(views, members, rankings, strict=True)
        )
        seen = None
        if reading.updated is not None and catalog.leading_index(conn, reading.table, "updated_at"):
            query = sql.SQL("SELECT max(updated_at) FROM {}").format(sql.Identifier(reading.table))
            seen = conn.execute(query).fetchone()
        state = SourceState(
            reading,
            views,
            memberships,
            cuts,
            tuple(parts[OLD]),
            tuple(parts[RECENT]),
            tuple(parts[WINDOW]),
            tuple(rankings),
            *self._window_query(reading, views, memberships, cuts),
            updated_seen=seen[0] if seen else None,
            latest_update=latest,
        )
        return state, sum(row[-2] for row in rows)

    def _few(self, conn: psycopg.Connection, source: Source, reading: Reading, view: View) -> bool:
        """Whether the planner's statistics say a view's table has no more entities than its cap."""
        column = dict(source.columns).get(view.id)
        if reading.table != source.table or column is None or view.cap is None:
            return False
        row = conn.execute(
            "SELECT CASE WHEN s.n_distinct >= 0 THEN s.n_distinct ELSE -s.n_distinct * c.reltuples END"
            " FROM pg_stats s JOIN pg_class c ON c.oid = to_regclass(quote_ident(s.tablename))"
            " WHERE s.schemaname = current_schema() AND s.tablename = %s AND s.attname = %s",
            (source.table, column),
        ).fetchone()
        return row is not None and row[0] is not None and 0 <= row[0] <= view.cap

    def _folded(
        self, reading: Reading, views: tuple[View, ...], members: tuple[frozenset[str] | None, ...], lo: str | None
    ) -> tuple[sql.Composed, dict[str, object]]:
        """The folded sums of the rows on or after the parameter ``lo`` (None: all), by the shown
        entities: those of a column no view groups by as it is are folded in SQL."""
        raw = _raw(views)
        folded = frozenset(v.id for v, m in zip(views, members, strict=True) if m is not None and v.id not in raw)
        return folded_query(reading, views, members, folded, lo=lo)

    def _window_query(
        self, reading: Reading, views: tuple[View, ...], memberships: tuple[Membership, ...], cuts: Cuts
    ) -> tuple[sql.Composed, dict[str, object]]:
        query, params = self._folded(reading, views, tuple(m.members for m in memberships), "start")
        return query, {**params, **cuts.params()}

    def _read_window(self, conn: psycopg.Connection, previous: SourceState) -> SourceState:
        rows = conn.execute(previous.window_query, previous.window_params).fetchall()
        members = tuple(m.members for m in previous.memberships)
        parts, latest = decode_folded(rows, previous.views, members, len(previous.reading.measures))
        if latest is None or (previous.latest_update is not None and previous.latest_update > latest):
            latest = previous.latest_update
        return dataclasses.replace(previous, window=tuple(parts[WINDOW]), latest_update=latest)

    # -- resyncs -----------------------------------------------------------------------

    def _look_back(self, conn: psycopg.Connection, previous: SourceState, now: datetime) -> SourceState | None:
        """A resync of one source that reads only the look-back and the window (and the days
        that leave the look-back for the old part); None where only a full read will do.

        In order: the ranking measure of every active entity (what decides who is shown), the
        old part refolded for the entities that enter or leave the shown set, then one pass
        over the rows since the last look-back's start, split into what joins the old part,
        the look-back and the window."""
        reading, views = previous.reading, previous.views
        cuts = self.cuts(reading, now)
        if cuts.old_end < previous.cuts.old_end or cuts.start < previous.cuts.start:
            return None  # the clock went back
        seen = previous.updated_seen
        if seen is not None:
            # Through the index: only the rows written since the last look.
            query = sql.SQL(
                "SELECT max(updated_at), coalesce(bool_or(date < %(old_end)s), false) FROM {}"
                " WHERE updated_at > %(seen)s"
            ).format(sql.Identifier(reading.table))
            row = conn.execute(query, {"seen": seen, "old_end": cuts.old_end}).fetchone()
            self._count("updated_at")
            if row is not None and row[1]:
                log.info("usage: rows of %s older than the look-back changed: reading it in full", reading.table)
                return None
            if row is not None and row[0] is not None:
                seen = row[0]
        params = {**cuts.params(), "lo": previous.cuts.old_end}
        members = [m.members for m in previous.memberships]
        old = list(previous.old)
        rankings = list(previous.rankings)
        memberships = list(previous.memberships)
        capped = [i for i, v in enumerate(views) if v.cap is not None and rankings[i] is not None]
        # A view folded in SQL is ranked first, from the look-back's totals per entity; one whose
        # entities the pass below returns apart (all shown, or a column grouped by as it is) is
        # ranked from that pass itself.
        raw = _raw(views)
        first = [i for i in capped if members[i] is not None and views[i].id not in raw]
        after = [i for i in capped if i not in first]

        def rerank_view(i: int, moved: dict[str, int], added: dict[str, int]) -> bool:
            """Choose view i's shown entities again and refold its old part; False where only a
            full read can."""
            view, ranking = views[i], rankings[i]
            assert view.cap is not None and ranking is not None

            def lookup(ids: list[str]) -> dict[str, int]:
                self._count("lookup")
                query = old_totals_query(reading, view, "" in ids)
                return dict(conn.execute(query, {"ids": ids, "old_end": cuts.old_end}).fetchall())

            result = rerank(ranking, view.cap, moved, added, lookup)
            if result is None:
                log.info("usage: the ranking of %s is a tie at its cap: reading %s in full", view.key, reading.table)
                return False
            kept, shown = result
            rankings[i] = kept
            if shown != members[i]:
                if shown is None:
                    return False  # fewer entities than the cap: every one's own sums are needed
                # The old part as it stands (before ``lo``); what joins it now is folded by the
                # new shown set.
                old[i] = self._refold(conn, reading, view, old[i], members[i], shown, params)
            members[i] = shown
            memberships[i] = Membership(shown, max(0, kept.entities - view.cap)) if shown else Membership()
            return True

        if first:
            moved: dict[int, dict[str, int]] = {i: {} for i in first}
            added: dict[int, dict[str, int]] = {i: {} for i in first}
            query = rank_delta_query(reading, tuple(views[i] for i in first))
            for j, entity, before, later in conn.execute(query, params):
                if before:
                    moved[first[j]][entity] = before
                added[first[j]][entity] = later
            self._count("rank")
            if not all(rerank_view(i, moved[i], added[i]) for i in first):
                return None
        unfolded = tuple(None if i in after else m for i, m in enumerate(members))
        query, extra = self._folded(reading, views, unfolded, "lo")
        rows = conn.execute(query, {**params, **extra}).fetchall()
        parts, latest = decode_folded(rows, views, unfolded, len(reading.measures))
        self._count("look_back")
        for i in after:
            if not rerank_view(i, *_entity_totals(parts, i, reading.rank)):
                return None
            shown = members[i]
            if shown is not None:
                for part in parts:
                    part[i] = _fold(views[i], part[i], shown)
        for i, joining in enumerate(parts[OLD]):
            if joining:
                # The days leaving the look-back join the old part, counted as they are now.
                self._count("shift")
                old[i] = dict(old[i])
                for group, values in joining.items():
                    _add(old[i], group, values)
        if latest is None or (previous.latest_update is not None and previous.latest_update > latest):
            latest = previous.latest_update
        window_query, window_params = self._window_query(reading, views, tuple(memberships), cuts)
        return dataclasses.replace(
            previous,
            memberships=tuple(memberships),
            cuts=cuts,
            old=tuple(old),
            recent=tuple(parts[RECENT]),
            window=tuple(parts[WINDOW]),
            rankings=tuple(rankings),
            window_query=window_query,
            window_params=window_params,
            updated_seen=seen,
            latest_update=latest,
        )

    def _refold(
        self,
        conn: psycopg.Connection,
        reading: Reading,
        view: View,
        old: dict[Group, Sums],
        before: frozenset[str] | None,
        after: frozenset[str],
        params: dict[str, object],
    ) -> dict[Group, Sums]:
        """The old part of a view whose shown entities changed from ``before`` (None: all) to
        ``after``: an entity that leaves is added to ``__other__``; one that enters has its old
        rows summed by id, and taken out of ``__other__``."""
        result: dict[Group, Sums] = {}
        for group, values in old.items():
            if group[0] == OTHER or group[0] in after:
                result[group] = values
        for group, values in old.items():
            if group[0] != OTHER and group[0] not in after:
                _add(result, other_group(view, group), values)
        entering = sorted(after - before) if before is not None else []
        if entering:
            query = entity_sums_query(reading, view, "" in entering)
            rows = conn.execute(query, {**params, "ids": entering}).fetchall()
            self._count("entering")
            for row in rows:
                group = tuple(map(sys.intern, row[: view.width]))
                values = array(SUMS_TYPE, row[view.width :])
                _add(result, group, values)
                _add(result, other_group(view, group), values, -1)
        return result

    def _report_memberships(self, states: dict[str, SourceState]) -> None:
        for table, state in states.items():
            old = self._states.get(table)
            for index, view in enumerate(state.views):
                if view.cap is None:
                    continue
                membership = state.memberships[index]
                self._caps.over_cap(view.key, membership.over)
                if old is not None and view in old.views:
                    before = old.memberships[old.views.index(view)]
                    if before.members != membership.members:
                        self._caps.membership_changed(view.key)

    def _read_metadata(
        self, conn: psycopg.Connection, states: dict[str, SourceState]
    ) -> tuple[dict[str, tuple[str, str]], dict[str, str], dict[str, str]]:
        """Aliases and a key's team, for the entities shown only."""

        def shown(entity: str) -> list[str]:
            ids: set[str] = set()
            for state in states.values():
                for index, view in enumerate(state.views):
                    if view.entity == entity:
                        ids.update(
                            g[0] for d in (state.old[index], state.recent[index], state.window[index]) for g in d
                        )
            ids.discard(OTHER)
            return sorted(ids)

        found = catalog.columns(conn, _METADATA_TABLES)

        def rows(table: str, select: str, where: str, ids: list[str], order: str = "") -> Iterable[tuple[Any, ...]]:
            if table not in found or not ids:
                return []
            query = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s){}").format(
                sql.SQL(select), sql.Identifier(table), sql.Identifier(where), sql.SQL(order)
            )
            return conn.execute(query, (ids,)).fetchall()

        key_meta: dict[str, tuple[str, str]] = {}
        keys = shown("key")
        # Deleted keys first, oldest first, so that the newest and a live key win.
        key_columns = "token, coalesce(key_alias, ''), coalesce(team_id, '')"
        for table in ("LiteLLM_DeletedVerificationToken", "LiteLLM_VerificationToken"):
            order = " ORDER BY deleted_at" if table.startswith("LiteLLM_Deleted") else ""
            for token, alias, team in rows(table, key_columns, "token", keys, order):
                key_meta[token] = (alias, team)
        team_alias: dict[str, str] = {}
        teams = shown("team")
        for table in ("LiteLLM_DeletedTeamTable", "LiteLLM_TeamTable"):
            order = " ORDER BY deleted_at" if table.startswith("LiteLLM_Deleted") else ""
            for team_id, alias in rows(table, "team_id, coalesce(team_alias, '')", "team_id", teams, order):
                team_alias[team_id] = alias
        org_alias: dict[str, str] = {}
        org_columns = "organization_id, coalesce(organization_alias, '')"
        orgs = shown("organization")
        for org_id, alias in rows("LiteLLM_OrganizationTable", org_columns, "organization_id", orgs):
            org_alias[org_id] = alias
        return key_meta, team_alias, org_alias

    # -- publishing --------------------------------------------------------------------

    def _families(self) -> list[Family]:
        families: list[Family] = []
        published: Published = {}
        for source in ALL_SOURCES:
            state = self._states.get(source.table)
            if state is None:
                continue
            for index, view in enumerate(state.views):
                families += self._view_families(state, index, view, published)
        self._published = published
        return [*families, self._source_info(), self._latest_updates()]

    def _latest_updates(self) -> Family:
        return build(
            "litellm_daily_spend_latest_update_timestamp_seconds",
            "The newest updated_at among a daily spend table's recent rows, as a Unix time.",
            "gauge",
            ("table",),
            [
                ((table,), state.latest_update)
                for table, state in sorted(self._states.items())
                if state.latest_update is not None and state.reading.table == table
            ],
        )

    def _source_info(self) -> Family:
        """Which table each usage family is read from, or "none" where this schema has none."""
        samples = []
        by_family = {"litellm": USER_SOURCE, "litellm_key": USER_SOURCE, "litellm_user": USER_SOURCE}
        by_family.update({f"litellm_{entity}": source for entity, source in ENTITY_SOURCES.items()})
        for family, source in by_family.items():
            entity = family.removeprefix("litellm_")
            if entity != "litellm" and not self._config.entity(entity).enabled:
                continue
            state = self._states.get(source.table)
            samples.append(((family, state.reading.table if state else "none"), 1.0))
        return build(
            "litellm_exporter_source_info",
            "The table each usage family is read from: a daily rollup table, LiteLLM_SpendLogs, or none.",
            "gauge",
            ("family", "source"),
            samples,
        )

    def _id_labels(self, kind: str | None, entity: str) -> tuple[str, ...]:
        if kind == "key":
            alias, team = self._key_meta.get(entity, ("", ""))
            return (sys.intern(entity[:12]), alias, team)
        if kind == "team":
            return (entity, self._team_alias.get(entity, ""))
        if kind == "organization":
            return (entity, self._org_alias.get(entity, ""))
        return (entity,)

    def _metadata_for(self, kind: str | None) -> object:
        return {"key": self._key_meta, "team": self._team_alias, "organization": self._org_alias}.get(kind or "")

    def _view_families(self, state: SourceState, index: int, view: View, published: Published) -> list[Family]:
        metadata = self._metadata_for(view.entity)
        built = self._built.get(view.key)
        if built is not None and built.built_from(state, index, metadata):
            published.update(built.published)
            return built.families
        families, mine = self._build_view_families(state, index, view)
        published.update(mine)
        self._built[view.key] = _Built(
            state.memberships[index],
            state.old[index],
            state.recent[index],
            state.window[index],
            dict(metadata) if isinstance(metadata, dict) else None,
            families,
            mine,
        )
        return families

    def _build_view_families(self, state: SourceState, index: int, view: View) -> tuple[list[Family], Published]:
        """The view's families, and the values they publish per series."""
        published: Published = {}
        id_labels = _ID_LABELS.get(view.entity or "", (view.id,))
        describe = _DESCRIBED.get(view.entity or "", "")
        labels = id_labels + view.extras + (OVERFLOW_LABEL,)
        digest = state.memberships[index].digest
        series: dict[tuple[str, ...], Sums] = {}
        for group, values in state.totals(index).items():
            entity, extras = group[0], group[1:]
            if entity == OTHER:
                key = (OTHER,) + ("",) * (len(id_labels) - 1) + extras + (digest,)
            else:
                key = self._id_labels(view.entity, entity) + extras + ("",)
            current = series.get(key)
            if current is None:
                series[key] = values
            else:  # two keys whose hashes share their first 12 characters: one series
                for k, value in enumerate(values):
                    current[k] += value
        # A counter must never go down; the tables only shrink when rows are deleted by hand or
        # by the tag table's optional retention, and that is not negative usage.
        previous = self._published
        ordered = []
        for key, values in sorted(series.items()):
            before = previous.get((view.key, key))
            kept = array(SUMS_TYPE, map(max, values, before)) if before is not None else values
            published[(view.key, key)] = kept
            ordered.append((key, kept))
        families = []
        for k, measure in enumerate(state.reading.measures):
            if view.entity is not None and not measure.per_entity:
                continue
            families.append(
                build(
                    f"{view.family}_{measure.name}",
                    f"{measure.documentation}{describe}, summed over {state.reading.table} (all time).",
                    "counter",
                    labels,
                    [(key, values[k] / measure.units * measure.scale) for key, values in ordered],
                    omit_empty=(OVERFLOW_LABEL,),
                )
            )
        return families, published
