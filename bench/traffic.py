"""LiteLLM-shaped traffic for the benchmark, generated in bulk by SQL.

A deployment is a number of keys used by fewer users in fewer teams and organisations, end
users tied to keys, six model groups and zero to two of eight tags per request. Requests are
generated in SQL into the writer's flush table (millions of them would take Python minutes),
then written by the one writer the demo and the tests use (``exporter.demo.writer.write``), as
one flush of the proxy: a spend-log row each, the entities' spend, and every daily rollup.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from exporter.collectors.usage.tables import SPEND_SOURCES
from exporter.demo.writer import REQUEST_COLUMNS, flush_table, write

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
    with conn.transaction():
        # The transaction's own now(), which the requests "at now" are stamped with.
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        conn.execute("SELECT setseed(%s)", (seed,))
        flush_table(conn, "bench_requests")
        conn.execute(
            sql.SQL(
                """
                WITH r AS (
                    SELECT d, i, random() AS a, random() AS b, random() AS c, random() AS e, random() AS f,
                           random() AS g, random() AS h, random() AS s
                    FROM generate_series(%(offset)s, %(offset)s + %(days)s - 1) d, generate_series(1, %(per_day)s) i
                ), k AS (
                    SELECT *, floor(%(keys)s * a * a)::int AS key_n, least(5, floor(6 * power(b, 1.5)))::int AS mg,
                           100 + floor(h * 3000)::int AS prompt_tokens, floor(e * 800)::int AS completion_tokens
                    FROM r
                )
                INSERT INTO bench_requests ({columns})
                SELECT 'req-' || gen_random_uuid(),
                       CASE WHEN %(spread)s > 0
                            THEN date_trunc('day', now() AT TIME ZONE 'UTC') - d * interval '1 day'
                                 + s * %(spread)s * interval '1 second'
                            ELSE now() AT TIME ZONE 'UTC' END,
                       md5('key-' || key_n),
                       'user-' || (key_n %% %(users)s),
                       'team-' || (key_n %% %(users)s %% %(teams)s),
                       'org-' || (key_n %% %(users)s %% %(teams)s %% %(orgs)s),
                       CASE WHEN c < 0.5 THEN 'customer-' || ((key_n * 7 + floor(e * 3)::int) %% %(end_users)s) END,
                       NULL,
                       (ARRAY{groups})[mg + 1],
                       (ARRAY{groups})[mg + 1] || '-2026',
                       (ARRAY{providers})[mg + 1],
                       '/chat/completions',
                       CASE WHEN f < 0.34 THEN ARRAY[]::text[]
                            WHEN f < 0.67 THEN ARRAY['tag-' || floor(g * 8)::int]
                            ELSE ARRAY['tag-' || floor(g * 8)::int,
                                       'tag-' || ((floor(g * 8)::int + 1 + floor(e * 7)::int) %% 8)]
                       END,
                       'uncategorized',
                       h > 0.03,
                       CASE WHEN prompt_tokens %% 10 < 5 THEN 429 WHEN prompt_tokens %% 10 < 8 THEN 500 ELSE 400 END,
                       round((prompt_tokens * 2.5e-6 + completion_tokens * 1e-5)::numeric, 8)::float8,
                       prompt_tokens, completion_tokens, 0, 0, 2000, 0,
                       '{{}}', '{{}}', '{{}}', '{{}}', '{{}}'
                FROM k
                """
            ).format(
                columns=sql.SQL(", ").join(sql.Identifier(c) for c, _ in REQUEST_COLUMNS),
                groups=sql.SQL(_array(MODEL_GROUPS)),
                providers=sql.SQL(_array(PROVIDERS)),
            ),
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
        write(conn, now, "bench_requests", spend_logs_until=now if spend_logs_until_now else None)
    return days * per_day


def _array(values: tuple[str, ...]) -> str:
    return "[" + ", ".join("'" + v + "'" for v in values) + "]"


def daily_rows(conn: psycopg.Connection) -> dict[str, int]:
    return {
        table: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]  # type: ignore[index]
        for table in (source.table for source in SPEND_SOURCES)
    }
