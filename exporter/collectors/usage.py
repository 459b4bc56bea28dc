"""Usage counters: all-time sums of LiteLLM's daily spend rollup tables.

Each counter equals ``sum(column)`` over its daily table. To keep the cost of a poll
independent of the size of the history, the collector splits every table at a
cutoff date (today minus ``lookback_days``, in UTC):

* rows dated before the cutoff are summed once per group at start-up and at each
  resync (``base``); LiteLLM only ever increments rows, and old dates stop changing;
* rows dated on or after the cutoff (``window``) are read one by one on every poll
  through the ``date`` index and remembered by primary key, so a row that is
  incremented again, or that lands late for yesterday, is counted exactly once.

When the cutoff moves past a remembered row, its last value moves into ``base``. A
periodic resync recomputes everything inside one snapshot and catches a row written
for a date older than the window.

Where this LiteLLM has no daily table for an entity (or one without request counts), or
the configuration asks for it, the same split is applied to LiteLLM_SpendLogs: one row per
request, split at now minus ``spend_logs_late_margin`` on the ``startTime`` index.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg import sql

from .. import catalog
from ..cardinality import SeriesCap
from ..catalog import SPEND_LOGS
from ..config import Config, UsageConfig
from ..db import Database
from ..families import Family, build
from .base import Collector

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Group = tuple[str, ...]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Measure:
    column: str
    name: str
    documentation: str
    per_entity: bool = True


MEASURES = (
    Measure("spend", "spend_usd", "Spend in US dollars"),
    Measure("api_requests", "requests", "Requests"),
    Measure("failed_requests", "requests_failed", "Failed requests"),
    Measure("prompt_tokens", "input_tokens", "Input (prompt) tokens"),
    Measure("completion_tokens", "output_tokens", "Output (completion) tokens"),
    Measure("cache_read_input_tokens", "cache_read_input_tokens", "Input tokens read from the provider's cache", False),
    Measure(
        "cache_creation_input_tokens",
        "cache_creation_input_tokens",
        "Input tokens written to the provider's cache",
        False,
    ),
)


@dataclass(frozen=True)
class Source:
    """A daily rollup table, the columns its families group by, and the same groups as
    LiteLLM_SpendLogs names them (for schemas or configurations without the daily table)."""

    table: str
    group_columns: tuple[str, ...]
    spend_log_groups: tuple[str, ...]
    # Rows of LiteLLM_SpendLogs whose column is empty have no row in this daily table.
    spend_log_required: str | None = None


USER_SOURCE = Source(
    "LiteLLM_DailyUserSpend",
    ("user_id", "api_key", "model_group", "model", "custom_llm_provider"),
    ("user", "api_key", "model_group", "model", "custom_llm_provider"),
)
ENTITY_SOURCES = {
    "team": Source("LiteLLM_DailyTeamSpend", ("team_id", "model_group"), ("team_id", "model_group")),
    "organization": Source(
        "LiteLLM_DailyOrganizationSpend",
        ("organization_id", "model_group"),
        ("organization_id", "model_group"),
        "organization_id",
    ),
    "end_user": Source(
        "LiteLLM_DailyEndUserSpend", ("end_user_id", "model_group"), ("end_user", "model_group"), "end_user"
    ),
    "tag": Source("LiteLLM_DailyTagSpend", ("tag", "model_group"), ("tag", "model_group")),
}
# Where the labels of ids come from: aliases and a key's team.
_METADATA_TABLES = (
    "LiteLLM_VerificationToken",
    "LiteLLM_DeletedVerificationToken",
    "LiteLLM_TeamTable",
    "LiteLLM_DeletedTeamTable",
    "LiteLLM_OrganizationTable",
)
CORE_MEASURES = ("spend", "api_requests", "failed_requests", "prompt_tokens", "completion_tokens")


@dataclass(frozen=True)
class _Reading:
    """How a source's rows are read: the daily table's rows, or LiteLLM_SpendLogs' rows."""

    table: str
    measures: tuple[str, ...]
    width: int
    rows: sql.Composable  # id, position, updated epoch, groups..., measures...; WHERE position >= %s
    sums: sql.Composable  # groups..., sums...; WHERE position < %s


def _daily_reading(source: Source, columns: set[str]) -> _Reading | None:
    if not set(CORE_MEASURES) <= columns:
        return None  # too old a table (LiteLLM 0.1.0's had no request counts)
    measures = tuple(m.column for m in MEASURES if m.column in columns)
    groups = [
        sql.SQL("coalesce({}, '')").format(sql.Identifier(c)) if c in columns else sql.Literal("")
        for c in source.group_columns
    ]
    table = sql.Identifier(source.table)
    return _Reading(
        source.table,
        measures,
        len(groups),
        sql.SQL("SELECT id, date, extract(epoch FROM updated_at)::float8, {g}, {m} FROM {t} WHERE date >= %s").format(
            g=sql.SQL(", ").join(groups), m=sql.SQL(", ").join(sql.Identifier(c) for c in measures), t=table
        ),
        sql.SQL("SELECT {g}, {s} FROM {t} WHERE date < %s GROUP BY {p}").format(
            g=sql.SQL(", ").join(groups),
            s=sql.SQL(", ").join(sql.SQL("sum({})").format(sql.Identifier(c)) for c in measures),
            t=table,
            p=sql.SQL(", ").join(sql.Literal(i + 1) for i in range(len(groups))),
        ),
    )


def _spend_log_reading(source: Source, columns: set[str]) -> _Reading | None:
    if source.spend_log_required and source.spend_log_required not in columns:
        return None  # e.g. organization_id, which older spend logs do not have
    groups = []
    for column in source.spend_log_groups:
        if column == "tag":
            groups.append(sql.SQL("t.tag"))
        elif column in columns:
            groups.append(sql.SQL("coalesce(s.{}, '')").format(sql.Identifier(column)))
        else:
            groups.append(sql.Literal(""))
    failed = sql.SQL("CASE WHEN s.status = 'failure' THEN 1 ELSE 0 END") if "status" in columns else sql.SQL("0")
    values = [sql.SQL("s.spend"), sql.SQL("1"), failed, sql.SQL("s.prompt_tokens"), sql.SQL("s.completion_tokens")]
    source_sql = sql.SQL('"LiteLLM_SpendLogs" s')
    row_id = sql.SQL("s.request_id")
    if "tag" in source.spend_log_groups:
        # One row per tag of the request, as LiteLLM's daily tag table counts them.
        source_sql = sql.SQL(
            '"LiteLLM_SpendLogs" s CROSS JOIN LATERAL jsonb_array_elements_text(CASE WHEN'
            " jsonb_typeof(s.request_tags) = 'array' THEN s.request_tags ELSE '[]'::jsonb END)"
            " WITH ORDINALITY AS t(tag, n)"
        )
        row_id = sql.SQL("s.request_id || '/' || t.n")
    required = (
        sql.SQL(" AND coalesce(s.{}, '') <> ''").format(sql.Identifier(source.spend_log_required))
        if source.spend_log_required
        else sql.SQL("")
    )
    group_list = sql.SQL(", ").join(groups)
    return _Reading(
        SPEND_LOGS,
        CORE_MEASURES,
        len(groups),
        sql.SQL(
            "SELECT {id}, to_char(s.\"startTime\", 'YYYY-MM-DD HH24:MI:SS.US'),"
            ' extract(epoch FROM s."startTime")::float8, {g}, {v} FROM {src}'
            ' WHERE s."startTime" >= %s::timestamp{req}'
        ).format(id=row_id, g=group_list, v=sql.SQL(", ").join(values), src=source_sql, req=required),
        sql.SQL('SELECT {g}, {s} FROM {src} WHERE s."startTime" < %s::timestamp{req} GROUP BY {p}').format(
            g=group_list,
            s=sql.SQL(", ").join(sql.SQL("sum({})").format(v) for v in values),
            src=source_sql,
            req=required,
            p=sql.SQL(", ").join(sql.Literal(i + 1) for i in range(len(groups))),
        ),
    )


@dataclass(frozen=True)
class _Row:
    date: str
    group: Group
    values: tuple[float, ...]


@dataclass(frozen=True)
class _TableState:
    reading: _Reading
    base: dict[Group, list[float]]
    window: dict[str, _Row]
    # The newest updated_at among the window's rows: stops moving when the proxy stops writing.
    latest_update: float | None = None

    @property
    def measures(self) -> tuple[str, ...]:
        return self.reading.measures

    def totals(self) -> dict[Group, list[float]]:
        totals = {group: list(values) for group, values in self.base.items()}
        for row in self.window.values():
            _add(totals, row.group, row.values)
        return totals


def _split(config: UsageConfig) -> tuple:
    """What decides which rows are summed into the base and which are read each poll."""
    enabled = frozenset(name for name, entity in config.entities.items() if entity.enabled)
    return config.lookback_days, config.source, config.spend_logs_late_margin, enabled


def _add(into: dict[Group, list[float]], group: Group, values: Sequence[float]) -> None:
    current = into.get(group)
    if current is None:
        into[group] = list(values)
    else:
        for i, value in enumerate(values):
            current[i] += value


class UsageCollector(Collector):
    name = "usage"

    def __init__(self, config: UsageConfig, *, clock: Clock = utc_now, cap: SeriesCap | None = None) -> None:
        self._config = config
        self._cap = cap or SeriesCap()
        self.interval = config.interval
        self._clock = clock
        self._tables: dict[str, _TableState] = {}
        self._last_resync: datetime | None = None
        self._published: dict[tuple[str, Group], float] = {}
        self._missing_logged: set[str] = set()
        self._key_meta: dict[str, tuple[str, str]] = {}
        self._team_alias: dict[str, str] = {}
        self._org_alias: dict[str, str] = {}

    # -- reading -----------------------------------------------------------------------

    def _sources(self) -> list[Source]:
        sources = [USER_SOURCE]
        for entity, source in ENTITY_SOURCES.items():
            if self._config.entity(entity).enabled:
                sources.append(source)
        return sources

    def cutoff(self, now: datetime) -> str:
        return (now.astimezone(timezone.utc).date() - timedelta(days=self._config.lookback_days)).isoformat()

    def _resync_due(self, now: datetime) -> bool:
        if self._last_resync is None:
            return True
        return (now - self._last_resync).total_seconds() >= self._config.resync_interval

    def reconfigure(self, config: Config) -> None:
        old, self._config = self._config, config.usage
        self.interval = self._config.interval
        if _split(old) != _split(self._config):
            # Rows between an old and a new cutoff would be in the base and the window at once.
            self.request_resync()

    def request_resync(self) -> None:
        """Make the next poll recompute every sum from the tables."""
        self._last_resync = None

    def poll(self, db: Database) -> list[Family]:
        now = self._clock()
        resync = self._resync_due(now)
        with db.snapshot() as conn:
            if resync:
                tables = {s.table: self._read_full(conn, s, now) for s in self._sources()}
                tables = {name: state for name, state in tables.items() if state is not None}
            else:
                tables = {}
                for source in self._sources():
                    if source.table in self._tables:
                        tables[source.table] = self._read_window(conn, now, self._tables[source.table])
                    else:
                        # Missing at the last look (the proxy may not have migrated yet): a
                        # catalogue query per poll until it appears, then one full read.
                        state = self._read_full(conn, source, now)
                        if state is not None:
                            tables[source.table] = state
            key_meta, team_alias, org_alias = self._read_metadata(conn)
        # State changes only after every read succeeded: a failed poll leaves it untouched.
        self._tables = tables
        self._key_meta, self._team_alias, self._org_alias = key_meta, team_alias, org_alias
        if resync:
            self._last_resync = now
        return self._families()

    def _reading(self, conn: psycopg.Connection, source: Source) -> _Reading | None:
        """The daily table where it is there and complete, else LiteLLM_SpendLogs, as configured."""
        found = catalog.columns(conn, [source.table, SPEND_LOGS])
        reading = None
        if self._config.source in ("auto", "daily_tables") and source.table in found:
            reading = _daily_reading(source, found[source.table])
        if reading is None and self._config.source in ("auto", "spend_logs") and SPEND_LOGS in found:
            reading = _spend_log_reading(source, found[SPEND_LOGS])
        if reading is None and source.table not in self._missing_logged:
            log.warning("no usable %s (nor a way to derive it): its usage counters are not exported", source.table)
            self._missing_logged.add(source.table)
        return reading

    def _cutoff_for(self, reading: _Reading, now: datetime) -> str:
        if reading.table == SPEND_LOGS:
            lower = now.astimezone(timezone.utc) - timedelta(seconds=self._config.spend_logs_late_margin)
            return lower.strftime("%Y-%m-%d %H:%M:%S.%f")
        return self.cutoff(now)

    def _read_full(self, conn: psycopg.Connection, source: Source, now: datetime) -> _TableState | None:
        reading = self._reading(conn, source)
        if reading is None:
            return None
        self._missing_logged.discard(source.table)
        cutoff = self._cutoff_for(reading, now)
        base: dict[Group, list[float]] = {}
        for record in conn.execute(reading.sums, (cutoff,)):
            _add(base, tuple(record[: reading.width]), [float(v or 0) for v in record[reading.width :]])
        return self._read_window(conn, now, _TableState(reading, base, {}))

    def _read_window(self, conn: psycopg.Connection, now: datetime, previous: _TableState) -> _TableState:
        reading = previous.reading
        cutoff = self._cutoff_for(reading, now)
        width = reading.width
        window: dict[str, _Row] = {}
        latest = previous.latest_update
        for record in conn.execute(reading.rows, (cutoff,)):
            window[record[0]] = _Row(
                record[1], tuple(record[3 : 3 + width]), tuple(float(v) for v in record[3 + width :])
            )
            if latest is None or record[2] > latest:
                latest = record[2]
        base = previous.base
        folded = False
        for row_id, row in previous.window.items():
            if row_id in window:
                continue
            if row.date >= cutoff:
                # Gone from the table (LiteLLM never deletes these); keep what was counted.
                window[row_id] = row
                continue
            # The cutoff moved past this row: its last value becomes part of the base.
            if not folded:
                base = {group: list(values) for group, values in base.items()}
                folded = True
            _add(base, row.group, row.values)
        return _TableState(reading, base, window, latest)

    def _read_metadata(
        self, conn: psycopg.Connection
    ) -> tuple[dict[str, tuple[str, str]], dict[str, str], dict[str, str]]:
        key_meta: dict[str, tuple[str, str]] = {}
        team_alias: dict[str, str] = {}
        org_alias: dict[str, str] = {}
        entities = self._config.entities
        found = catalog.columns(conn, _METADATA_TABLES)

        def rows(table: str, query: str) -> Iterable[tuple]:
            return conn.execute(query).fetchall() if table in found else []

        if entities["key"].enabled:
            # Deleted keys first, oldest first, so that the newest and a live key win.
            for table in ("LiteLLM_DeletedVerificationToken", "LiteLLM_VerificationToken"):
                order = " ORDER BY deleted_at" if table.startswith("LiteLLM_Deleted") else ""
                query = f"SELECT token, coalesce(key_alias, ''), coalesce(team_id, '') FROM \"{table}\"{order}"
                for token, alias, team in rows(table, query):
                    key_meta[token] = (alias, team)
        if entities["team"].enabled:
            for table in ("LiteLLM_DeletedTeamTable", "LiteLLM_TeamTable"):
                order = " ORDER BY deleted_at" if table.startswith("LiteLLM_Deleted") else ""
                for team_id, alias in rows(table, f"SELECT team_id, coalesce(team_alias, '') FROM \"{table}\"{order}"):
                    team_alias[team_id] = alias
        if entities["organization"].enabled:
            query = "SELECT organization_id, coalesce(organization_alias, '') FROM \"LiteLLM_OrganizationTable\""
            for org_id, alias in rows("LiteLLM_OrganizationTable", query):
                org_alias[org_id] = alias
        return key_meta, team_alias, org_alias

    # -- publishing --------------------------------------------------------------------

    def _families(self) -> list[Family]:
        families: list[Family] = []
        user = self._tables.get(USER_SOURCE.table)
        if user is not None:
            totals = user.totals()
            families += self._measure_families(
                "litellm",
                "",
                ("model_group", "model", "provider"),
                user.measures,
                totals,
                lambda g: (g[2], g[3], g[4]),
                lambda ids: ids,
                self._config.global_max_series,
                per_entity=False,
            )
            key = self._config.entity("key")
            if key.enabled:
                by_hash = {token[:12]: meta for token, meta in self._key_meta.items()}

                def key_labels(ids: Group) -> Group:
                    alias, team = by_hash.get(ids[0], ("", ""))
                    return (ids[0], alias, team, *ids[1:])

                families += self._measure_families(
                    "litellm_key",
                    " by virtual key",
                    ("key_hash", "key_alias", "team_id") + (("model_group",) if key.model_group else ()),
                    user.measures,
                    totals,
                    (lambda g: (g[1][:12], g[2])) if key.model_group else (lambda g: (g[1][:12],)),
                    key_labels,
                    key.max_series,
                )
            user_config = self._config.entity("user")
            if user_config.enabled:
                families += self._measure_families(
                    "litellm_user",
                    " by internal user",
                    ("user_id",) + (("model_group",) if user_config.model_group else ()),
                    user.measures,
                    totals,
                    (lambda g: (g[0], g[2])) if user_config.model_group else (lambda g: (g[0],)),
                    lambda ids: ids,
                    user_config.max_series,
                )
        families.append(self._source_info())
        families.append(
            build(
                "litellm_daily_spend_latest_update_timestamp_seconds",
                "The newest updated_at among a daily spend table's recent rows, as a Unix time.",
                "gauge",
                ("table",),
                [
                    ((table,), state.latest_update)
                    for table, state in sorted(self._tables.items())
                    if state.latest_update is not None and state.reading.table == table
                ],
            )
        )
        for entity, source in ENTITY_SOURCES.items():
            state = self._tables.get(source.table)
            entity_config = self._config.entity(entity)
            if state is None or not entity_config.enabled:
                continue
            id_label, describe, labeller = self._entity_labels(entity)
            with_group = entity_config.model_group
            families += self._measure_families(
                f"litellm_{entity}",
                describe,
                id_label + (("model_group",) if with_group else ()),
                state.measures,
                state.totals(),
                (lambda g: (g[0], g[1])) if with_group else (lambda g: (g[0],)),
                labeller,
                entity_config.max_series,
            )
        return families

    def _source_info(self) -> Family:
        """Which table each usage family is read from, or "none" where this schema has none."""
        samples = []
        by_family = {"litellm": USER_SOURCE, "litellm_key": USER_SOURCE, "litellm_user": USER_SOURCE}
        by_family.update({f"litellm_{entity}": source for entity, source in ENTITY_SOURCES.items()})
        for family, source in by_family.items():
            entity = family.removeprefix("litellm_")
            if entity != "litellm" and not self._config.entity(entity).enabled:
                continue
            state = self._tables.get(source.table)
            samples.append(((family, state.reading.table if state else "none"), 1.0))
        return build(
            "litellm_exporter_source_info",
            "The table each usage family is read from: a daily rollup table, LiteLLM_SpendLogs, or none.",
            "gauge",
            ("family", "source"),
            samples,
        )

    def _entity_labels(self, entity: str) -> tuple[tuple[str, ...], str, Callable[[Group], Group]]:
        if entity == "team":
            return (
                ("team_id", "team_alias"),
                " by team",
                lambda ids: (ids[0], self._team_alias.get(ids[0], ""), *ids[1:]),
            )
        if entity == "organization":
            return (
                ("organization_id", "organization_alias"),
                " by organization",
                lambda ids: (ids[0], self._org_alias.get(ids[0], ""), *ids[1:]),
            )
        if entity == "end_user":
            return ("end_user",), " by end user (the caller's customer id)", lambda ids: ids
        return ("tag",), " by request tag", lambda ids: ids

    def _measure_families(
        self,
        prefix: str,
        describe: str,
        labels: tuple[str, ...],
        measures: tuple[str, ...],
        totals: dict[Group, list[float]],
        project: Callable[[Group], Group],
        label: Callable[[Group], Group],
        max_series: int | None,
        *,
        per_entity: bool = True,
    ) -> list[Family]:
        projected: dict[Group, list[float]] = {}
        for group, values in totals.items():
            _add(projected, project(group), values)
        spend = measures.index("spend") if "spend" in measures else None
        projected = self._cap.apply(
            prefix, projected, max_series, lambda ids, values: values[spend] if spend is not None else 0.0
        )
        families = []
        for index, column in enumerate(measures):
            measure = next(m for m in MEASURES if m.column == column)
            if per_entity and not measure.per_entity:
                continue
            name = f"{prefix}_{measure.name}"
            samples = []
            for ids, values in sorted(projected.items()):
                value = self._monotonic(name, ids, values[index])
                samples.append((label(ids), value))
            families.append(
                build(
                    name,
                    f"{measure.documentation}{describe}, summed over LiteLLM's daily spend tables (all time).",
                    "counter",
                    labels,
                    samples,
                )
            )
        return families

    def _monotonic(self, family: str, ids: Group, value: float) -> float:
        # A counter must never go down; the tables only shrink when rows are deleted by
        # hand or by the tag table's optional retention, and that is not negative usage.
        key = (family, ids)
        previous = self._published.get(key)
        if previous is not None and value < previous:
            value = previous
        self._published[key] = value
        return value
