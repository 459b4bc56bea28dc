"""LiteLLM-shaped traffic for the benchmark, written in bulk by SQL.

A deployment is a number of keys used by fewer users in fewer teams and organisations, end
users tied to keys, six model groups and zero to two of eight tags per request. Requests are
generated in a temporary table, then written the way the proxy writes them: one spend-log row
each, and the daily tables upserted with increments on their unique key (every key column
set, as the proxy sets them, so one group's flushes merge into one row).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from exporter.demo.writer import DAILY_KEY, DAILY_MEASURES, DAILY_TABLES, increments

MODEL_GROUPS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "claude-haiku", "gemini-flash", "llama-70b")
PROVIDERS = ("openai", "openai", "anthropic", "anthropic", "vertex_ai", "bedrock")


@dataclass(frozen=True)
class Shape:
    name: str
    keys: int
    users: int
    teams: int
    organizations: int
    end_users: int
    requests_per_day: int


# The shape the issue tracker describes for a mid-sized proxy: 11k requests a day.
REALISTIC = Shape("realistic", keys=500, users=200, teams=20, organizations=3, end_users=300, requests_per_day=11_111)
# A busy deployment: 200k requests a day.
BUSY = Shape("busy", keys=5000, users=2000, teams=200, organizations=10, end_users=3000, requests_per_day=200_000)
# The largest shape: ten times the busy one's entities, 4M requests over 30 days.
HUGE = Shape(
    "huge", keys=50_000, users=20_000, teams=2000, organizations=50, end_users=20_000, requests_per_day=133_333
)
HUGE_DAYS = 30

# The spend tables written here (their entity column is the writer's DAILY_TABLES'), each with
# the request's value for its entity and the condition for a row.
REQUEST_ENTITY = {
    "LiteLLM_DailyUserSpend": ("r.user_id", "TRUE"),
    "LiteLLM_DailyTeamSpend": ("r.team_id", "TRUE"),
    "LiteLLM_DailyOrganizationSpend": ("r.organization_id", "r.organization_id IS NOT NULL"),
    "LiteLLM_DailyEndUserSpend": ("r.end_user", "r.end_user IS NOT NULL"),
    "LiteLLM_DailyTagSpend": ("t.tag", "TRUE"),
}


def create_entities(conn: psycopg.Connection, shape: Shape) -> None:
    statements = """
        INSERT INTO "LiteLLM_BudgetTable" (budget_id, max_budget, soft_budget, created_by, updated_by)
        SELECT 'budget-' || o, 100000, 80000, 'bench', 'bench' FROM generate_series(0, %(orgs)s - 1) o;
        INSERT INTO "LiteLLM_OrganizationTable" (organization_id, organization_alias, budget_id, created_by, updated_by)
        SELECT 'org-' || o, 'Org ' || o, 'budget-' || o, 'bench', 'bench' FROM generate_series(0, %(orgs)s - 1) o;
        INSERT INTO "LiteLLM_TeamTable" (team_id, team_alias, organization_id, max_budget, soft_budget,
                                         budget_reset_at, updated_at)
        SELECT 'team-' || t, 'Team ' || t, 'org-' || (t %% %(orgs)s), CASE WHEN t %% 2 = 0 THEN 5000 END,
               CASE WHEN t %% 2 = 0 THEN 4000 END, now() + interval '10 days', now()
        FROM generate_series(0, %(teams)s - 1) t;
        INSERT INTO "LiteLLM_UserTable" (user_id) SELECT 'user-' || u FROM generate_series(0, %(users)s - 1) u;
        INSERT INTO "LiteLLM_VerificationToken" (token, key_alias, team_id, user_id, max_budget, budget_reset_at)
        SELECT md5('key-' || k), 'key ' || k, 'team-' || (k %% %(users)s %% %(teams)s), 'user-' || (k %% %(users)s),
               CASE WHEN k %% 4 = 0 THEN 500 END, now() + interval '7 days'
        FROM generate_series(0, %(keys)s - 1) k;
        INSERT INTO "LiteLLM_EndUserTable" (user_id, spend) SELECT 'customer-' || e, 0
        FROM generate_series(0, %(end_users)s - 1) e
        """
    params = {
        "orgs": shape.organizations,
        "teams": shape.teams,
        "users": shape.users,
        "keys": shape.keys,
        "end_users": shape.end_users,
    }
    for statement in statements.split(";"):
        conn.execute(statement, params)


def write_requests(
    conn: psycopg.Connection,
    shape: Shape,
    *,
    days: int = 1,
    per_day: int | None = None,
    spread_seconds: float = 86400.0,
    spend_logs_until_now: bool = True,
    seed: float = 0.42,
    day_offset: int = 0,
) -> int:
    """Requests for each of the ``days`` days up to today (UTC), ``per_day`` of them a day,
    spread over ``spread_seconds`` from the day's start (today's included: the daily tables
    hold a whole day for today, the end-of-day worst case for the exporter's window), or, with
    ``spread_seconds`` 0, all at now. Spend-log rows are written only up to now."""
    per_day = per_day or shape.requests_per_day
    conn.execute("SELECT setseed(%s)", (seed,))
    conn.execute("DROP TABLE IF EXISTS bench_requests")
    conn.execute(
        """
        CREATE TEMP TABLE bench_requests AS
        WITH r AS (
            SELECT d, i, random() AS a, random() AS b, random() AS c, random() AS e, random() AS f, random() AS g,
                   random() AS h, random() AS s
            FROM generate_series(%(offset)s, %(offset)s + %(days)s - 1) d, generate_series(1, %(per_day)s) i
        ), k AS (
            SELECT *, floor(%(keys)s * a * a)::int AS key_n, least(5, floor(6 * power(b, 1.5)))::int AS mg FROM r
        )
        SELECT 'req-' || gen_random_uuid() AS request_id,
               CASE WHEN %(spread)s > 0
                    THEN date_trunc('day', now() AT TIME ZONE 'UTC') - d * interval '1 day'
                         + s * %(spread)s * interval '1 second'
                    ELSE now() AT TIME ZONE 'UTC' END AS ts,
               md5('key-' || key_n) AS api_key,
               'user-' || (key_n %% %(users)s) AS user_id,
               'team-' || (key_n %% %(users)s %% %(teams)s) AS team_id,
               'org-' || (key_n %% %(users)s %% %(teams)s %% %(orgs)s) AS organization_id,
               CASE WHEN c < 0.5 THEN 'customer-' || ((key_n * 7 + floor(e * 3)::int) %% %(end_users)s) END AS end_user,
               (ARRAY%(groups)s)[mg + 1] AS model_group,
               (ARRAY%(groups)s)[mg + 1] || '-2026' AS model,
               (ARRAY%(providers)s)[mg + 1] AS provider,
               CASE WHEN f < 0.34 THEN ARRAY[]::text[]
                    WHEN f < 0.67 THEN ARRAY['tag-' || floor(g * 8)::int]
                    ELSE ARRAY['tag-' || floor(g * 8)::int,
                               'tag-' || ((floor(g * 8)::int + 1 + floor(e * 7)::int) %% 8)]
               END AS tags,
               100 + floor(h * 3000)::int AS prompt_tokens,
               floor(e * 800)::int AS completion_tokens,
               h > 0.03 AS ok,
               round(((100 + floor(h * 3000)) * 2.5e-6 + floor(e * 800) * 1e-5)::numeric, 8)::float8 AS spend
        FROM k
        """.replace("%(groups)s", _array(MODEL_GROUPS)).replace("%(providers)s", _array(PROVIDERS)),
        {
            "days": days,
            "per_day": per_day,
            "keys": shape.keys,
            "users": shape.users,
            "teams": shape.teams,
            "orgs": shape.organizations,
            "end_users": shape.end_users,
            "spread": spread_seconds,
            "offset": day_offset,
        },
    )
    until_now = "WHERE ts <= now() AT TIME ZONE 'UTC'" if spend_logs_until_now else ""
    conn.execute(
        f"""
        INSERT INTO "LiteLLM_SpendLogs" (request_id, call_type, api_key, spend, total_tokens, prompt_tokens,
            completion_tokens, "startTime", "endTime", "completionStartTime", model, model_group, custom_llm_provider,
            "user", team_id, organization_id, end_user, request_tags, status, request_duration_ms, created_at,
            updated_at)
        SELECT request_id, 'acompletion', api_key, spend, prompt_tokens + completion_tokens, prompt_tokens,
               completion_tokens, ts, ts + interval '2 seconds', ts + interval '300 milliseconds', model, model_group,
               provider, user_id, team_id, organization_id, end_user, to_jsonb(tags),
               CASE WHEN ok THEN 'success' ELSE 'failure' END, 2000, ts, ts
        FROM bench_requests {until_now}
        """
    )
    for table, (value, condition) in REQUEST_ENTITY.items():
        column = DAILY_TABLES[table]
        source = "bench_requests r" + (" CROSS JOIN unnest(r.tags) AS t(tag)" if value == "t.tag" else "")
        conn.execute(
            increments(
                table,
                (
                    "id",
                    column,
                    "date",
                    "api_key",
                    "model",
                    "model_group",
                    "custom_llm_provider",
                    "mcp_namespaced_tool_name",
                    "endpoint",
                    *DAILY_MEASURES,
                ),
                (column, *DAILY_KEY),
                DAILY_MEASURES,
                sql.SQL(
                    "SELECT gen_random_uuid()::text, " + value + ", to_char(r.ts, 'YYYY-MM-DD'), r.api_key, r.model,"
                    " r.model_group, r.provider, '', '/chat/completions', sum(r.spend), sum(r.prompt_tokens),"
                    " sum(r.completion_tokens), 0, 0, count(*), count(*) FILTER (WHERE r.ok),"
                    " count(*) FILTER (WHERE NOT r.ok), 0, 0, 0, now(), now()"
                    " FROM " + source + " WHERE " + condition + " GROUP BY 2, 3, 4, 5, 6, 7"
                ),
            )
        )
    for table, columns, key, select in ACTIVITY:
        conn.execute(increments(table, columns, key, columns[len(key) :], sql.SQL(select)))
    return days * per_day


# The rollups a 1.110 proxy keeps beside the spend tables, upserted with increments on their
# primary keys: failures by status code, every answered request by route, model usage by task.
# Each: the table, its columns (its key's first, then its measures), its key, and the rows.
_STATUS = "CASE WHEN r.prompt_tokens % 10 < 5 THEN 429 WHEN r.prompt_tokens % 10 < 8 THEN 500 ELSE 400 END"
_DAY = "to_char(r.ts, 'YYYY-MM-DD')"
ACTIVITY = (
    (
        "LiteLLM_DailyRequestErrors",
        ("date", "api_key", "team_id", "user_id", "model_group", "status_code", "failed_requests"),
        ("date", "api_key", "team_id", "user_id", "model_group", "status_code"),
        f"SELECT {_DAY}, r.api_key, r.team_id, r.user_id, r.model_group, {_STATUS}, count(*), now(), now()"
        " FROM bench_requests r WHERE NOT r.ok GROUP BY 1, 2, 3, 4, 5, 6",
    ),
    (
        "LiteLLM_DailyGatewayRequests",
        ("date", "category", "route", "successful_requests", "failed_requests"),
        ("date", "category", "route"),
        f"SELECT {_DAY}, 'llm', '/chat/completions', count(*) FILTER (WHERE r.ok), count(*) FILTER (WHERE NOT r.ok),"
        " now(), now() FROM bench_requests r GROUP BY 1",
    ),
    (
        "LiteLLM_DailyGatewayFailedRequests",
        ("date", "category", "route", "status_code", "failed_requests"),
        ("date", "category", "route", "status_code"),
        f"SELECT {_DAY}, 'llm', '/chat/completions', {_STATUS}, count(*), now(), now()"
        " FROM bench_requests r WHERE NOT r.ok GROUP BY 1, 4",
    ),
    (
        "LiteLLM_DailyModelUsage",
        (
            "date",
            "model_group",
            "model",
            "custom_llm_provider",
            "task_type",
            "spend",
            "prompt_tokens",
            "completion_tokens",
            "request_count",
            "successful_requests",
            "failed_requests",
        ),
        ("date", "model_group", "model", "custom_llm_provider", "task_type"),
        f"SELECT {_DAY}, r.model_group, r.model, r.provider, 'uncategorized', sum(r.spend), sum(r.prompt_tokens),"
        " sum(r.completion_tokens), count(*), count(*) FILTER (WHERE r.ok), count(*) FILTER (WHERE NOT r.ok),"
        " now(), now() FROM bench_requests r GROUP BY 1, 2, 3, 4",
    ),
)


def _array(values: tuple[str, ...]) -> str:
    return "[" + ", ".join("'" + v + "'" for v in values) + "]"


def daily_rows(conn: psycopg.Connection) -> dict[str, int]:
    return {
        table: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]  # type: ignore[index]
        for table in REQUEST_ENTITY
    }
