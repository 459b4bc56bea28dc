"""Writes LiteLLM-shaped traffic into a LiteLLM database, as the proxy's spend writer does.

Used by the tests (as the source of truth the counters are checked against) and by the
demo. It does what LiteLLM's DBSpendUpdateWriter does on each flush, in one transaction:
insert one ``LiteLLM_SpendLogs`` row per request, increment ``spend`` on the key, user,
team, team member, organisation, end user and tags, and upsert the daily rollup rows
with increments on every measure; and the rollups a 1.110 proxy keeps beside them (errors by
status code, requests at the edge, model usage, tools, guardrails, policies). Rows are dated
by the request's start time, so a flush can land rows for an earlier day. The daily upsert's
conflict target holds nullable columns; like the proxy, the writer fills every one (`''` for no
MCP tool, the route as endpoint), so a group's flushes merge into one row, and a request given
no endpoint adds a row each time, as it would in LiteLLM.

The benchmark writes millions of requests in bulk SQL instead, through the same upserts
(``increments``, ``DAILY_KEY``, ``DAILY_TABLES``). This module writes; the exporter itself never
imports it.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg import sql

from .traffic import Request

DAILY_MEASURES = (
    "spend",
    "prompt_tokens",
    "completion_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "api_requests",
    "successful_requests",
    "failed_requests",
    "total_response_time_ms",
    "timed_requests",
    "prompt_caching_savings_spend",
)
# The double precision columns the writer fills; every other measure is a bigint.
_FLOAT_COLUMNS = {"spend", "prompt_caching_savings_spend", "cost"}

# Daily table, its entity column, and how a request names that entity ('' means none).
DAILY_TABLES = {
    "LiteLLM_DailyUserSpend": "user_id",
    "LiteLLM_DailyTeamSpend": "team_id",
    "LiteLLM_DailyOrganizationSpend": "organization_id",
    "LiteLLM_DailyEndUserSpend": "end_user_id",
    "LiteLLM_DailyTagSpend": "tag",
    "LiteLLM_DailyAgentSpend": "agent_id",
}


def naive_utc(moment: datetime) -> datetime:
    # LiteLLM's timestamp(3) columns hold UTC without a zone.
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


# The daily spend tables' unique key beside their entity column: nullable columns, which the
# proxy (and this writer) always fills, so that a group's flushes merge into one row.
DAILY_KEY = ("date", "api_key", "model", "custom_llm_provider", "mcp_namespaced_tool_name", "endpoint")


def increments(
    table: str, columns: Sequence[str], key: Sequence[str], measures: Sequence[str], source: sql.Composable
) -> sql.Composed:
    """How the proxy writes a rollup row: ``columns`` then created_at and updated_at, from
    ``source`` (a VALUES list or a SELECT, in that order); where a row with the same ``key``
    is there, each of ``measures`` is added to its own. The writer's flushes and the
    benchmark's bulk writes both use it."""
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


def _values(count: int) -> sql.Composed:
    return sql.SQL("VALUES ({})").format(sql.SQL(", ").join(sql.Placeholder() * count))


class SpendWriter:
    """Buffers requests and flushes them the way the proxy does."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn
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
        now = naive_utc(now or datetime.now(timezone.utc))
        batch, self._buffer = self._buffer, []
        rejected, self._rejected = self._rejected, []
        if not batch and not rejected:
            return 0
        with self._conn.transaction():
            if batch:
                self._insert_spend_logs(batch, now)
                self._increment_entities(batch)
                for table, column in DAILY_TABLES.items():
                    self._upsert_daily(table, column, batch, now)
                for table, (keys, measures, rows) in _activity(batch).items():
                    self._upsert(table, keys, measures, rows, now)
            for table, (keys, measures, rows) in _gateway(batch, rejected).items():
                self._upsert(table, keys, measures, rows, now)
        return len(batch)

    def _upsert(
        self,
        table: str,
        keys: tuple[str, ...],
        measures: tuple[str, ...],
        rows: dict[tuple[object, ...], list[float]],
        now: datetime,
    ) -> None:
        """Increment rows keyed by their primary key, one statement per group, as the proxy does."""
        if not rows:
            return
        query = increments(table, (*keys, *measures), keys, measures, _values(len(keys) + len(measures) + 2))
        with self._conn.cursor() as cur:
            cur.executemany(query, [(*key, *_typed(measures, values), now, now) for key, values in rows.items()])

    def _insert_spend_logs(self, batch: list[Request], now: datetime) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(
                'INSERT INTO "LiteLLM_SpendLogs" (request_id, call_type, api_key, spend, total_tokens,'
                ' prompt_tokens, completion_tokens, "startTime", "endTime", "completionStartTime", model,'
                ' model_group, custom_llm_provider, "user", team_id, end_user, organization_id, request_tags,'
                " status, cache_hit, request_duration_ms, created_at, updated_at)"
                " VALUES (%s, 'acompletion', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, 'None', %s, %s, %s)",
                [
                    (
                        r.request_id,
                        r.api_key,
                        r.spend,
                        r.prompt_tokens + r.completion_tokens,
                        r.prompt_tokens,
                        r.completion_tokens,
                        naive_utc(r.start_time),
                        naive_utc(r.start_time) + timedelta(milliseconds=r.duration_ms or 0),
                        naive_utc(r.start_time) + timedelta(milliseconds=(r.duration_ms or 0) // 4),
                        r.model,
                        r.model_group,
                        r.provider,
                        r.user_id or "",
                        r.team_id,
                        r.end_user or "",
                        r.organization_id,
                        json.dumps(list(r.tags)),
                        "success" if r.success else "failure",
                        r.duration_ms,
                        now,
                        now,
                    )
                    for r in batch
                ],
            )

    def _increment_entities(self, batch: list[Request]) -> None:
        increments: dict[tuple[str, str, tuple[str, ...]], float] = defaultdict(float)
        for r in batch:
            increments[("LiteLLM_VerificationToken", "token", (r.api_key,))] += r.spend
            if r.user_id:
                increments[("LiteLLM_UserTable", "user_id", (r.user_id,))] += r.spend
            if r.team_id:
                increments[("LiteLLM_TeamTable", "team_id", (r.team_id,))] += r.spend
                if r.user_id:
                    increments[("LiteLLM_TeamMembership", "team_id,user_id", (r.team_id, r.user_id))] += r.spend
            if r.organization_id:
                increments[("LiteLLM_OrganizationTable", "organization_id", (r.organization_id,))] += r.spend
            if r.end_user:
                increments[("LiteLLM_EndUserTable", "user_id", (r.end_user,))] += r.spend
            for tag in r.tags:
                increments[("LiteLLM_TagTable", "tag_name", (tag,))] += r.spend
        for (table, columns, ids), amount in increments.items():
            names = columns.split(",")
            where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(n)) for n in names)
            extra = sql.SQL(", total_spend = total_spend + %s") if table in _LIFETIME_SPEND else sql.SQL("")
            params: tuple[object, ...] = (amount, amount, *ids) if table in _LIFETIME_SPEND else (amount, *ids)
            updated = self._conn.execute(
                sql.SQL("UPDATE {} SET spend = spend + %s{} WHERE {}").format(sql.Identifier(table), extra, where),
                params,
            ).rowcount
            if not updated and table == "LiteLLM_EndUserTable":
                # The proxy creates end users on first sight.
                self._conn.execute(
                    'INSERT INTO "LiteLLM_EndUserTable" (user_id, spend) VALUES (%s, %s)', (ids[0], amount)
                )

    def _upsert_daily(self, table: str, column: str, batch: list[Request], now: datetime) -> None:
        # Aggregate the batch in memory first, one upsert per group, as the proxy does.
        groups: dict[tuple[object, ...], list[float]] = {}
        for r in batch:
            for entity in r.daily_entities()[table]:
                key = (
                    entity,
                    naive_utc(r.start_time).date().isoformat(),
                    r.api_key,
                    r.model,
                    r.model_group,
                    r.provider,
                    r.endpoint,
                )
                values = groups.setdefault(key, [0.0] * len(DAILY_MEASURES))
                for i, amount in enumerate(_measures(r)):
                    values[i] += amount
        if not groups:
            return
        columns = ("id", column, "date", "api_key", "model", "model_group", "custom_llm_provider", "endpoint")
        query = increments(
            table,
            (*columns, "mcp_namespaced_tool_name", *DAILY_MEASURES),
            (column, *DAILY_KEY),
            DAILY_MEASURES,
            # The proxy files no MCP tool as ''.
            sql.SQL("VALUES ({}, '', {})").format(
                sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                sql.SQL(", ").join(sql.Placeholder() * (len(DAILY_MEASURES) + 2)),
            ),
        )
        with self._conn.cursor() as cur:
            cur.executemany(
                query,
                [
                    (str(uuid.uuid4()), *key[:4], key[4], key[5], key[6], *_typed(DAILY_MEASURES, values), now, now)
                    for key, values in groups.items()
                ],
            )


_LIFETIME_SPEND = {"LiteLLM_VerificationToken", "LiteLLM_TeamMembership"}


def _measures(r: Request) -> tuple[float, ...]:
    # The response time counts successful calls only, as LiteLLM 1.110 records it.
    timed = r.success and r.duration_ms is not None
    return (
        r.spend,
        r.prompt_tokens,
        r.completion_tokens,
        r.cache_read_input_tokens,
        r.cache_creation_input_tokens,
        1,
        1 if r.success else 0,
        0 if r.success else 1,
        (r.duration_ms or 0) if timed else 0,
        1 if timed else 0,
        r.prompt_caching_savings,
    )


def _typed(columns: tuple[str, ...], values: list[float]) -> list[float | int]:
    """Values for their columns: the dollar amounts as they are, counts as integers for bigints."""
    return [v if c in _FLOAT_COLUMNS else int(v) for c, v in zip(columns, values, strict=True)]


_Rows = dict[tuple[object, ...], list[float]]


def _add(rows: _Rows, key: tuple[object, ...], *values: float) -> None:
    current = rows.setdefault(key, [0.0] * len(values))
    for i, value in enumerate(values):
        current[i] += value


def _activity(batch: list[Request]) -> dict[str, tuple[tuple[str, ...], tuple[str, ...], _Rows]]:
    """The rollups of newer LiteLLM versions beside the spend tables, per table: its key
    columns, its measures, and the increments of this batch."""
    errors: _Rows = {}
    models: _Rows = {}
    tools: _Rows = {}
    guardrails: _Rows = {}
    policies: _Rows = {}
    units: _Rows = {}
    for r in batch:
        day = naive_utc(r.start_time).date().isoformat()
        if not r.success:
            _add(errors, (day, r.api_key, r.team_id or "", r.user_id or "", r.model_group, r.status_code), 1)
        _add(
            models,
            (day, r.model_group, r.model, r.provider, r.task_type),
            r.spend,
            r.prompt_tokens,
            r.completion_tokens,
            1,
            1 if r.success else 0,
            0 if r.success else 1,
        )
        for tool in r.tools:
            _add(tools, (day, tool), r.spend, r.prompt_tokens + r.completion_tokens, 1)
        for table, checks in ((guardrails, r.guardrails), (policies, r.policies)):
            for check, outcome in checks:
                _add(table, (check, day), 1, outcome == "passed", outcome == "blocked", outcome == "flagged")
        for guardrail, _ in r.guardrails:
            # A content-moderation provider bills per 1,000 characters; about four to a token.
            characters = r.prompt_tokens * 4
            _add(units, (guardrail, day, r.team_id or "", r.api_key, "characters"), characters, characters * 2.5e-7)
    evaluated = ("requests_evaluated", "passed_count", "blocked_count", "flagged_count")
    return {
        "LiteLLM_DailyRequestErrors": (
            ("date", "api_key", "team_id", "user_id", "model_group", "status_code"),
            ("failed_requests",),
            errors,
        ),
        "LiteLLM_DailyModelUsage": (
            ("date", "model_group", "model", "custom_llm_provider", "task_type"),
            ("spend", "prompt_tokens", "completion_tokens", "request_count", "successful_requests", "failed_requests"),
            models,
        ),
        "LiteLLM_DailyToolSpend": (
            ("date", "tool_name"),
            ("spend", "total_tokens", "request_count"),
            tools,
        ),
        "LiteLLM_DailyGuardrailMetrics": (("guardrail_id", "date"), evaluated, guardrails),
        "LiteLLM_DailyPolicyMetrics": (("policy_id", "date"), evaluated, policies),
        "LiteLLM_DailyGuardrailUsageUnits": (
            ("guardrail_id", "date", "team_id", "api_key", "usage_unit"),
            ("units", "cost"),
            units,
        ),
    }


def _gateway(
    batch: list[Request], rejected: list[tuple[datetime, str, int]]
) -> dict[str, tuple[tuple[str, ...], tuple[str, ...], _Rows]]:
    """Every request the proxy answered, by route: those that became spend logs and those it
    refused at the edge."""
    answered: _Rows = {}
    failed: _Rows = {}
    outcomes = [(naive_utc(r.start_time), r.endpoint or "", r.success, r.status_code) for r in batch]
    outcomes += [(when, route, False, code) for when, route, code in rejected]
    for when, route, success, code in outcomes:
        day = when.date().isoformat()
        _add(answered, (day, "llm", route), 1 if success else 0, 0 if success else 1)
        if not success:
            _add(failed, (day, "llm", route, code), 1)
    return {
        "LiteLLM_DailyGatewayRequests": (
            ("date", "category", "route"),
            ("successful_requests", "failed_requests"),
            answered,
        ),
        "LiteLLM_DailyGatewayFailedRequests": (
            ("date", "category", "route", "status_code"),
            ("failed_requests",),
            failed,
        ),
    }
