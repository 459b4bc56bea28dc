"""Usage counters: all-time sums of LiteLLM's daily spend rollup tables.

Each counter equals ``sum(column)`` over its daily table, grouped by the family's labels. To
keep a poll's cost independent of the history, every table is split at a window start:

* rows before it (the base) are summed once, at start-up and at each resync; LiteLLM only ever
  increments rows, and days that are over stop changing;
* rows on or after it (the window) are summed again by PostgreSQL on every poll. The window
  starts at the date of (resync time minus ``late_margin``): today, and yesterday for a while
  after midnight, when late flushes still land on it. When that date moves on, the next poll
  resyncs, so the window never holds more than it must.

Both sums are grouped in SQL by the labels the families publish, so memory and CPU follow
the series served, not the rows read. A resync, aligned to the wall clock so that replicas do
it together, also decides which entities each capped family shows: the top ``max_series``
by all-time spend, ties by id; the rest are summed into one ``__other__`` entity. A poll that
finds nothing committed since the last (``db.CommitWatch``) reads no table at all.

Where this LiteLLM has no daily table for an entity (or one without request counts), or the
configuration asks for it, the same split is applied to LiteLLM_SpendLogs, cut on
``startTime`` at the resync time minus ``spend_logs_late_margin``.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql

from ... import catalog
from ...cardinality import OTHER, OVERFLOW_LABEL, CapReport, membership_digest
from ...catalog import SPEND_LOGS
from ...config import Config, UsageConfig
from ...db import CommitWatch, Database
from ...families import Family, build
from ..base import Collector
from .queries import Reading, View, daily_reading, decode_sums, rank_query, spend_log_reading, sums_query
from .tables import ACTIVITY_SOURCES, ALL_SOURCES, ENTITY_SOURCES, USER_SOURCE, Group, Source, Sums

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
class SourceState:
    """What the engine keeps per source: sums per series, never rows."""

    reading: Reading
    views: tuple[View, ...]
    memberships: tuple[Membership, ...]
    start: str
    base: tuple[dict[Group, Sums], ...]
    window: tuple[dict[Group, Sums], ...]
    # The window's query, composed once per resync.
    window_query: sql.Composed
    window_params: dict[str, object]
    latest_update: float | None = None

    def totals(self, index: int) -> dict[Group, Sums]:
        totals = {group: array("d", values) for group, values in self.base[index].items()}
        for group, values in self.window[index].items():
            current = totals.get(group)
            if current is None:
                totals[group] = array("d", values)
            else:
                for k, value in enumerate(values):
                    current[k] += value
        return totals

    def kept(self) -> int:
        """Sums held, base and window: what the engine's memory follows."""
        return sum(len(d) for d in self.base) + sum(len(d) for d in self.window)


# Per series (family, labels): the values published, one per measure.
Published = dict[tuple[str, tuple[str, ...]], Sums]


@dataclass(frozen=True)
class _Built:
    """One view's families as last built: what they were built from (its membership, base and
    window sums, and aliases), them, and the values they published."""

    membership: Membership
    base: dict[Group, Sums]
    window: dict[Group, Sums]
    metadata: dict[str, Any] | None
    families: list[Family]
    published: Published

    def built_from(self, state: SourceState, index: int, metadata: object) -> bool:
        # The base only changes at a resync (a new dict), so identity says it is the same; the
        # window and the aliases are compared by value (a few thousand entries at most).
        return (
            self.membership == state.memberships[index]
            and self.base is state.base[index]
            and self.window == state.window[index]
            and self.metadata == metadata
        )


def _plan(config: UsageConfig) -> tuple[object, ...]:
    """What decides how rows are split and grouped: a change means a resync."""
    entities = tuple(sorted((name, e.enabled, e.model_group, e.max_series) for name, e in config.entities.items()))
    return config.late_margin, config.source, config.spend_logs_late_margin, config.global_max_series, entities


class UsageCollector(Collector):
    name = "usage"

    def __init__(self, config: UsageConfig, *, clock: Clock = utc_now, caps: CapReport | None = None) -> None:
        self._config = config
        self._caps = caps or CapReport()
        self.interval = config.interval
        self._clock = clock
        self._states: dict[str, SourceState] = {}
        self._resync_slot: int | None = None
        # While no transaction has committed since the last poll, every sum is what it was.
        self._commits: CommitWatch[None] = CommitWatch()
        self._published: Published = {}
        self._missing_logged: set[str] = set()
        self._key_meta: dict[str, tuple[str, str]] = {}
        self._team_alias: dict[str, str] = {}
        self._org_alias: dict[str, str] = {}
        # Per family: what its families were built from, and them; most polls change nothing.
        self._built: dict[str, _Built] = {}

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

    def window_start(self, reading: Reading, now: datetime) -> str:
        if reading.table == SPEND_LOGS:
            lower = now.astimezone(timezone.utc) - timedelta(seconds=self._config.spend_logs_late_margin)
            return lower.strftime("%Y-%m-%d %H:%M:%S.%f")
        return (now.astimezone(timezone.utc) - timedelta(seconds=self._config.late_margin)).date().isoformat()

    def _slot(self, now: datetime) -> int:
        # Aligned to the Unix epoch, so that every replica resyncs in the same poll interval.
        return int(now.timestamp() // self._config.resync_interval)

    def _resync_due(self, now: datetime) -> bool:
        if self._resync_slot is None or self._slot(now) != self._resync_slot:
            return True
        # A daily window whose first date has passed out of the late margin: shrink it.
        return any(
            state.reading.table != SPEND_LOGS and state.start != self.window_start(state.reading, now)
            for state in self._states.values()
        )

    def reconfigure(self, config: Config) -> None:
        old, self._config = self._config, config.usage
        self.interval = self._config.interval
        if _plan(old) != _plan(self._config):
            # Rows between an old and a new window start would be in the base and the window.
            self.request_resync()
        self._caps.forget(f"litellm_{name}" for name, entity in self._config.entities.items() if not entity.enabled)

    def request_resync(self) -> None:
        """Make the next poll recompute every sum, and every membership, from the tables."""
        self._resync_slot = None
        self._commits.forget()

    # -- polling -----------------------------------------------------------------------

    def poll(self, db: Database) -> list[Family]:
        now = self._clock()
        resync = self._resync_due(now)
        states: dict[str, SourceState] = {}
        with db.snapshot() as conn:
            if self._commits.unchanged(conn) and not resync and self._states:
                return self._families()
            sources = self._sources()
            for source in sources:
                previous = self._states.get(source.table)
                if resync or previous is None:
                    # A table missing at the last look (the proxy may not have migrated yet) costs
                    # a catalogue query per poll until it appears, then one full read.
                    state = self._read_full(conn, source, now)
                else:
                    state = self._read_window(conn, previous)
                if state is not None:
                    states[source.table] = state
            metadata = self._read_metadata(conn, states)
        # State changes only after every read succeeded: a failed poll leaves it untouched.
        self._log_missing(sources, states)
        if resync:
            self._report_memberships(states)
            self._resync_slot = self._slot(now)
        self._states = states
        self._commits.polled()
        self._key_meta, self._team_alias, self._org_alias = metadata
        return self._families()

    def _reading(self, conn: psycopg.Connection, source: Source) -> Reading | None:
        """The daily table where it is there and complete, else LiteLLM_SpendLogs, as configured."""
        found = catalog.columns(conn, [source.table, SPEND_LOGS])
        reading = None
        # `source` chooses how spend is counted; the other tables (errors, gateway, tools, ...)
        # have nothing in the spend logs to stand in for them, and are always read.
        from_table = self._config.source in ("auto", "daily_tables") or source in ACTIVITY_SOURCES
        if from_table and source.table in found:
            reading = daily_reading(source, found[source.table])
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

    def _read_full(self, conn: psycopg.Connection, source: Source, now: datetime) -> SourceState | None:
        reading = self._reading(conn, source)
        if reading is None:
            return None
        views = self._views(source)
        memberships = [Membership() for _ in views]
        if any(v.cap is not None for v in views):
            query, by_mask = rank_query(reading, views)
            top: dict[int, list[str]] = {}
            counts: dict[int, int] = {}
            for mask, entity, count in conn.execute(query):
                top.setdefault(by_mask[mask], []).append(entity)
                counts[by_mask[mask]] = count
            for index, view in enumerate(views):
                if view.cap is not None and counts.get(index, 0) > view.cap:
                    memberships[index] = Membership(frozenset(top[index]), counts[index] - view.cap)
        start = self.window_start(reading, now)
        members = tuple(m.members for m in memberships)
        query, params = sums_query(reading, views, members, window=False)
        params["start"] = start
        base, _ = decode_sums(conn.execute(query, params).fetchall(), views, len(reading.measures))
        window_query, window_params = sums_query(reading, views, members, window=True)
        window_params["start"] = start
        state = SourceState(reading, views, tuple(memberships), start, tuple(base), (), window_query, window_params)
        return self._read_window(conn, state)

    def _read_window(self, conn: psycopg.Connection, previous: SourceState) -> SourceState:
        rows = conn.execute(previous.window_query, previous.window_params).fetchall()
        window, latest = decode_sums(rows, previous.views, len(previous.reading.measures))
        if latest is None or (previous.latest_update is not None and previous.latest_update > latest):
            latest = previous.latest_update
        return dataclasses.replace(previous, window=tuple(window), latest_update=latest)

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
                        ids.update(g[0] for d in (state.base[index], state.window[index]) for g in d)
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
            state.base[index],
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
            kept = array("d", map(max, values, before)) if before is not None else values
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
                    [(key, values[k] * measure.scale) for key, values in ordered],
                    omit_empty=(OVERFLOW_LABEL,),
                )
            )
        return families, published
