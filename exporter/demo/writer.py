"""Writes LiteLLM-shaped traffic into a LiteLLM database, as the proxy's spend writer does.

The one writer of the demo, the tests (as the source of truth the counters are checked
against) and the benchmark. It does what LiteLLM's DBSpendUpdateWriter does on each flush, in
one transaction: insert one ``LiteLLM_SpendLogs`` row per request, increment ``spend`` on the
key, user, team, team member, organisation, end user and tags, and upsert the daily rollup
rows with increments on every measure; and the rollups a 1.110 proxy keeps beside them (errors
by status code, requests at the edge, model usage, tools, guardrails, policies). Rows are dated
by the request's start time, so a flush can land rows for an earlier day. The daily upsert's
conflict target holds nullable columns; like the proxy, the writer fills every one (`''` for no
MCP tool, the route as endpoint), so a group's flushes merge into one row, and a request given
no endpoint adds a row each time, as it would in LiteLLM.

Every statement reads the flushed requests from a table of ``REQUEST_COLUMNS``, grouped as the
proxy groups them, so that the same SQL writes a flush of a few requests (``SpendWriter``, which
copies them into that table) and the benchmark's millions (``write``, from a table it fills in
SQL). This module writes; the exporter itself never imports it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg
from psycopg import sql

from ..collectors.usage.tables import SPEND_SOURCES
from ..entities import BY_NAME
from .traffic import Request

# What a flush knows of a request, one row each: the table every statement below reads.
REQUEST_COLUMNS = (
    ("request_id", "text"),
    ("start_time", "timestamp(3)"),  # UTC, as LiteLLM's columns hold it
    ("api_key", "text"),
    ("user_id", "text"),
    ("team_id", "text"),
    ("organization_id", "text"),
    ("end_user", "text"),
    ("agent_id", "text"),
    ("model_group", "text"),
    ("model", "text"),
    ("provider", "text"),
    ("endpoint", "text"),
    ("tags", "text[]"),
    ("task_type", "text"),
    ("success", "bool"),
    ("status_code", "int4"),  # a failure's HTTP status code
    ("spend", "float8"),
    ("prompt_tokens", "int8"),
    ("completion_tokens", "int8"),
    ("cache_read_input_tokens", "int8"),
    ("cache_creation_input_tokens", "int8"),
    ("duration_ms", "int8"),
    ("prompt_caching_savings", "float8"),
    ("tools", "text[]"),  # MCP tools called
    ("guardrails", "text[]"),  # guardrails that evaluated it, with the outcome of each beside
    ("guardrail_outcomes", "text[]"),
    ("policies", "text[]"),
    ("policy_outcomes", "text[]"),
)
# Requests refused at the proxy's edge: counted in the gateway tables only, never a spend log.
REJECTION_COLUMNS = (("start_time", "timestamp(3)"), ("endpoint", "text"), ("status_code", "int4"))


def naive_utc(moment: datetime) -> datetime:
    # LiteLLM's timestamp(3) columns hold UTC without a zone.
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def increments(
    table: str, columns: Sequence[str], key: Sequence[str], measures: Sequence[str], source: sql.Composable
) -> sql.Composed:
    """How the proxy writes a rollup row: ``columns`` then created_at and updated_at, from
    ``source`` (a SELECT, in that order); where a row with the same ``key`` is there, each of
    ``measures`` is added to its own."""
    return sql.SQL(
        "INSERT INTO {table} AS d ({columns}, created_at, updated_at) {source}"
        " ON CONFLICT ({key}) DO UPDATE SET {updates}, updated_at = excluded.updated_at"
    ).format(
        table=sql.Identifier(table),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        source=source,
        key=sql.SQL(", ").join(map(sql.Identifier, key)),
        updates=sql.SQL(", ").join(
            sql.SQL("{0} = coalesce(d.{0}, 0) + excluded.{0}").format(sql.Identifier(m)) for m in measures
        ),
    )


_DAY = "to_char(r.start_time, 'YYYY-MM-DD')"
_TAGS = "CROSS JOIN unnest(r.tags) AS t(tag)"


def _checked_by(ids: str, outcomes: str) -> str:
    """One row per check of a request (guardrail or policy): ``g.id``, ``g.outcome``."""
    return f"CROSS JOIN unnest(r.{ids}, r.{outcomes}) AS g(id, outcome)"


@dataclass(frozen=True)
class Rollup:
    """A rollup table the proxy upserts on each flush: its key's columns, each with what it is
    grouped by, and its measures, each with the aggregate added (expressions over the flushed
    requests ``r``); the rows of ``joins`` (one per tag, tool, ...) and of ``where`` only."""

    table: str
    key: tuple[tuple[str, str], ...]
    measures: tuple[tuple[str, str], ...]
    joins: str = ""
    where: str = "TRUE"
    # Columns set once, when the row is created: (column, expression).
    fixed: tuple[tuple[str, str], ...] = ()
    gateway: bool = False  # also counts the requests refused at the edge


def _count(condition: str) -> str:
    return f"count(*) FILTER (WHERE {condition})"


# The daily spend tables' measures: the spend logs' sums, and response times of successful calls
# only, as LiteLLM 1.110 records them.
DAILY_MEASURES = (
    ("spend", "sum(r.spend)"),
    ("prompt_tokens", "sum(r.prompt_tokens)::int8"),
    ("completion_tokens", "sum(r.completion_tokens)::int8"),
    ("cache_read_input_tokens", "sum(r.cache_read_input_tokens)::int8"),
    ("cache_creation_input_tokens", "sum(r.cache_creation_input_tokens)::int8"),
    ("api_requests", "count(*)"),
    ("successful_requests", _count("r.success")),
    ("failed_requests", _count("NOT r.success")),
    ("total_response_time_ms", "coalesce(sum(r.duration_ms) FILTER (WHERE r.success), 0)::int8"),
    ("timed_requests", "count(r.duration_ms) FILTER (WHERE r.success)"),
    ("prompt_caching_savings_spend", "sum(r.prompt_caching_savings)"),
)


def _daily_measures(*columns: str) -> tuple[tuple[str, str], ...]:
    """Some of the daily measures, with their aggregates, for a rollup that keeps them too."""
    aggregates = dict(DAILY_MEASURES)
    return tuple((column, aggregates[column]) for column in columns)


# Per daily spend table of the catalogue, the request's id in its entity column, and which
# requests have a row (the user and team tables file a request without one under '').
_DAILY_ENTITY = {
    "LiteLLM_DailyUserSpend": ("coalesce(r.user_id, '')", "TRUE"),
    "LiteLLM_DailyTeamSpend": ("coalesce(r.team_id, '')", "TRUE"),
    "LiteLLM_DailyOrganizationSpend": ("r.organization_id", "r.organization_id <> ''"),
    "LiteLLM_DailyEndUserSpend": ("r.end_user", "r.end_user <> ''"),
    "LiteLLM_DailyTagSpend": ("t.tag", "TRUE"),
    "LiteLLM_DailyAgentSpend": ("r.agent_id", "r.agent_id <> ''"),
}


def _daily(table: str, column: str) -> Rollup:
    entity, where = _DAILY_ENTITY[table]
    return Rollup(
        table,
        (
            (column, entity),
            ("date", _DAY),
            ("api_key", "r.api_key"),
            ("model", "r.model"),
            ("custom_llm_provider", "r.provider"),
            ("mcp_namespaced_tool_name", "''"),  # the proxy files no MCP tool as ''
            ("endpoint", "r.endpoint"),
        ),
        DAILY_MEASURES,
        _TAGS if entity == "t.tag" else "",
        where,
        (("id", "gen_random_uuid()::text"), ("model_group", "min(r.model_group)")),
    )


def _checks(table: str, id_column: str, ids: str, outcomes: str) -> Rollup:
    return Rollup(
        table,
        ((id_column, "g.id"), ("date", _DAY)),
        (
            ("requests_evaluated", "count(*)"),
            ("passed_count", _count("g.outcome = 'passed'")),
            ("blocked_count", _count("g.outcome = 'blocked'")),
            ("flagged_count", _count("g.outcome = 'flagged'")),
        ),
        _checked_by(ids, outcomes),
    )


ROLLUPS = (
    *(_daily(source.table, source.columns[0][1]) for source in SPEND_SOURCES),
    Rollup(
        "LiteLLM_DailyRequestErrors",
        (
            ("date", _DAY),
            ("api_key", "r.api_key"),
            ("team_id", "coalesce(r.team_id, '')"),
            ("user_id", "coalesce(r.user_id, '')"),
            ("model_group", "r.model_group"),
            ("status_code", "r.status_code"),
        ),
        (("failed_requests", "count(*)"),),
        where="NOT r.success",
    ),
    Rollup(
        "LiteLLM_DailyModelUsage",
        (
            ("date", _DAY),
            ("model_group", "r.model_group"),
            ("model", "r.model"),
            ("custom_llm_provider", "r.provider"),
            ("task_type", "r.task_type"),
        ),
        (
            *_daily_measures("spend", "prompt_tokens", "completion_tokens"),
            ("request_count", "count(*)"),
            *_daily_measures("successful_requests", "failed_requests"),
        ),
    ),
    Rollup(
        "LiteLLM_DailyToolSpend",
        (("date", _DAY), ("tool_name", "t.tool")),
        (
            ("spend", "sum(r.spend)"),
            ("total_tokens", "sum(r.prompt_tokens + r.completion_tokens)::int8"),
            ("request_count", "count(*)"),
        ),
        "CROSS JOIN unnest(r.tools) AS t(tool)",
    ),
    _checks("LiteLLM_DailyGuardrailMetrics", "guardrail_id", "guardrails", "guardrail_outcomes"),
    _checks("LiteLLM_DailyPolicyMetrics", "policy_id", "policies", "policy_outcomes"),
    # A content-moderation provider bills per 1,000 characters; about four to a token.
    Rollup(
        "LiteLLM_DailyGuardrailUsageUnits",
        (
            ("guardrail_id", "g.id"),
            ("date", _DAY),
            ("team_id", "coalesce(r.team_id, '')"),
            ("api_key", "r.api_key"),
            ("usage_unit", "'characters'"),
        ),
        (("units", "sum(r.prompt_tokens * 4)::int8"), ("cost", "sum((r.prompt_tokens * 4)::float8 * 2.5e-7)")),
        _checked_by("guardrails", "guardrail_outcomes"),
    ),
    # Every request the proxy answered, by route: those that became spend logs and those it
    # refused at the edge.
    Rollup(
        "LiteLLM_DailyGatewayRequests",
        (("date", _DAY), ("category", "'llm'"), ("route", "coalesce(r.endpoint, '')")),
        (("successful_requests", _count("r.success")), ("failed_requests", _count("NOT r.success"))),
        gateway=True,
    ),
    Rollup(
        "LiteLLM_DailyGatewayFailedRequests",
        (
            ("date", _DAY),
            ("category", "'llm'"),
            ("route", "coalesce(r.endpoint, '')"),
            ("status_code", "r.status_code"),
        ),
        (("failed_requests", "count(*)"),),
        where="NOT r.success",
        gateway=True,
    ),
)

# Per entity whose row's spend the proxy increments on each flush, the request's value of each
# of its id columns (its table and ids are the entity table's ``Record``).
_SPEND_OF = {
    "key": ("r.api_key",),
    "user": ("r.user_id",),
    "team": ("r.team_id",),
    "team_member": ("r.team_id", "r.user_id"),
    "organization": ("r.organization_id",),
    "end_user": ("r.end_user",),
    "tag": ("t.tag",),
}
# Tables whose rows also keep a lifetime spend beside the budget period's.
_LIFETIME_SPEND = {"LiteLLM_VerificationToken", "LiteLLM_TeamMembership"}
# The proxy creates end users on first sight.
_CREATED_ON_SIGHT = {"LiteLLM_EndUserTable"}


def write(
    conn: psycopg.Connection,
    now: datetime,
    requests: str,
    rejections: str | None = None,
    *,
    spend_logs_until: datetime | None = None,
    without: Collection[str] = (),
) -> None:
    """Write the requests of the table ``requests`` (``REQUEST_COLUMNS``), and the refusals of
    ``rejections`` (``REJECTION_COLUMNS``), as one flush of the proxy: their spend logs (only
    those started by ``spend_logs_until``, if given), the spend of the entities they name, and
    every rollup but those ``without`` (a proxy older than those tables). Run it in a
    transaction, as the proxy does."""
    relation = sql.SQL("{} r").format(sql.Identifier(requests))
    stamp = {"now": naive_utc(now)}
    # Rounded to LiteLLM's milliseconds as the start times were, so that a request started at
    # ``spend_logs_until`` itself is written.
    until = sql.SQL(" WHERE r.start_time <= %(until)s::timestamp(3)" if spend_logs_until else "")
    conn.execute(
        sql.SQL(
            'INSERT INTO "LiteLLM_SpendLogs" (request_id, call_type, api_key, spend, total_tokens, prompt_tokens,'
            ' completion_tokens, "startTime", "endTime", "completionStartTime", model, model_group,'
            ' custom_llm_provider, "user", team_id, end_user, organization_id, request_tags, status, cache_hit,'
            " request_duration_ms, created_at, updated_at)"
            " SELECT r.request_id, 'acompletion', r.api_key, r.spend, r.prompt_tokens + r.completion_tokens,"
            " r.prompt_tokens, r.completion_tokens, r.start_time,"
            " r.start_time + coalesce(r.duration_ms, 0) * interval '1 millisecond',"
            " r.start_time + coalesce(r.duration_ms, 0) / 4 * interval '1 millisecond', r.model, r.model_group,"
            " r.provider, coalesce(r.user_id, ''), r.team_id, coalesce(r.end_user, ''), r.organization_id,"
            " to_jsonb(r.tags), CASE WHEN r.success THEN 'success' ELSE 'failure' END, 'None', r.duration_ms,"
            " %(now)s, %(now)s FROM {}{}"
        ).format(relation, until),
        {**stamp, "until": naive_utc(spend_logs_until) if spend_logs_until else None},
    )
    for name, values in _SPEND_OF.items():
        conn.execute(_spend_increments(name, values, relation))
    gateway = relation
    if rejections is not None:
        gateway = sql.SQL(
            "(SELECT start_time, endpoint, success, status_code FROM {}"
            " UNION ALL SELECT start_time, endpoint, false, status_code FROM {}) r"
        ).format(sql.Identifier(requests), sql.Identifier(rejections))
    for rollup in ROLLUPS:
        if rollup.table not in without:
            conn.execute(_upsert(rollup, gateway if rollup.gateway else relation), stamp)


def _upsert(rollup: Rollup, relation: sql.Composable) -> sql.Composed:
    """One upsert per group of the flush, as the proxy does."""
    key = [column for column, _ in rollup.key]
    measures = [column for column, _ in rollup.measures]
    expressions = [e for _, e in (*rollup.key, *rollup.fixed, *rollup.measures)]
    select = sql.SQL("SELECT {}, %(now)s, %(now)s FROM {} {} WHERE {} GROUP BY {}").format(
        sql.SQL(", ").join(map(sql.SQL, expressions)),
        relation,
        sql.SQL(rollup.joins),
        sql.SQL(rollup.where),
        sql.SQL(", ".join(str(i + 1) for i in range(len(key)))),
    )
    return increments(rollup.table, [*key, *(c for c, _ in rollup.fixed), *measures], key, measures, select)


def _spend_increments(entity: str, values: tuple[str, ...], relation: sql.Composable) -> sql.Composed:
    record = BY_NAME[entity].record
    assert record is not None and len(record.id) == len(values)
    ids = sql.SQL(", ").join(map(sql.Identifier, record.id))
    flushed = sql.SQL("SELECT {}, sum(r.spend) FROM {} {} WHERE {} GROUP BY {}").format(
        sql.SQL(", ").join(map(sql.SQL, values)),
        relation,
        sql.SQL(_TAGS if "t.tag" in values else ""),
        sql.SQL(" AND ".join(f"{v} <> ''" for v in values)),
        sql.SQL(", ".join(str(i + 1) for i in range(len(values)))),
    )
    table = sql.Identifier(record.table)
    if record.table in _CREATED_ON_SIGHT:
        return sql.SQL(
            "INSERT INTO {} AS e ({}, spend) {} ON CONFLICT ({}) DO UPDATE SET spend = e.spend + excluded.spend"
        ).format(table, ids, flushed, ids)
    lifetime = ", total_spend = e.total_spend + i.amount" if record.table in _LIFETIME_SPEND else ""
    return sql.SQL("UPDATE {} e SET spend = e.spend + i.amount{} FROM ({}) i({}, amount) WHERE {}").format(
        table,
        sql.SQL(lifetime),
        flushed,
        ids,
        sql.SQL(" AND ").join(sql.SQL("e.{0} = i.{0}").format(sql.Identifier(c)) for c in record.id),
    )


def flush_table(conn: psycopg.Connection, table: str, columns: tuple[tuple[str, str], ...] = REQUEST_COLUMNS) -> None:
    """A temporary table of ``columns`` to write a flush from, emptied when the transaction
    ends (so that it holds one flush, whichever connection of a pool it is on)."""
    if conn.execute("SELECT to_regclass(%s)", (f"pg_temp.{table}",)).fetchone() == (None,):
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DELETE ROWS").format(
                sql.Identifier(table),
                sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in columns),
            )
        )


def _copy(
    conn: psycopg.Connection, table: str, columns: tuple[tuple[str, str], ...], rows: list[tuple[object, ...]]
) -> None:
    flush_table(conn, table, columns)
    with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))) as copy:
        copy.set_types([t.split("(")[0] for _, t in columns])
        for row in rows:
            copy.write_row(row)


def _row(r: Request) -> tuple[object, ...]:
    return (
        r.request_id,
        naive_utc(r.start_time),
        r.api_key,
        r.user_id,
        r.team_id,
        r.organization_id,
        r.end_user,
        r.agent_id,
        r.model_group,
        r.model,
        r.provider,
        r.endpoint,
        list(r.tags),
        r.task_type,
        r.success,
        r.status_code,
        r.spend,
        r.prompt_tokens,
        r.completion_tokens,
        r.cache_read_input_tokens,
        r.cache_creation_input_tokens,
        r.duration_ms,
        r.prompt_caching_savings,
        list(r.tools),
        [g for g, _ in r.guardrails],
        [o for _, o in r.guardrails],
        [p for p, _ in r.policies],
        [o for _, o in r.policies],
    )


class SpendWriter:
    """Buffers requests and flushes them the way the proxy does."""

    def __init__(self, conn: psycopg.Connection, *, without: Collection[str] = ()) -> None:
        self._conn = conn
        self._without = frozenset(without)  # rollup tables this proxy does not write
        self._buffer: list[Request] = []
        self._rejected: list[tuple[datetime, str, int]] = []

    def record(self, *requests: Request) -> None:
        self._buffer.extend(requests)

    def reject(self, when: datetime, route: str, status_code: int) -> None:
        """A request the proxy refused before any model call (bad key, its own rate limit):
        counted in the gateway tables only, never a spend log."""
        self._rejected.append((naive_utc(when), route, status_code))

    def flush(self, now: datetime | None = None) -> int:
        """Write every buffered request in one transaction; returns how many."""
        batch, self._buffer = self._buffer, []
        rejected, self._rejected = self._rejected, []
        if not batch and not rejected:
            return 0
        with self._conn.transaction():
            _copy(self._conn, "flushed_requests", REQUEST_COLUMNS, [_row(r) for r in batch])
            _copy(self._conn, "flushed_rejections", REJECTION_COLUMNS, list(rejected))
            now = now or datetime.now(timezone.utc)
            write(self._conn, now, "flushed_requests", "flushed_rejections", without=self._without)
        return len(batch)
