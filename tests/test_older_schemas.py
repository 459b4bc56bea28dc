"""Older LiteLLM schemas: the exporter uses what is there, derives usage from LiteLLM_SpendLogs
where the daily tables are missing or incomplete, and says which source each family has.

An older litellm-proxy-extras release ships exactly a prefix of the migrations the pinned one
ships (Prisma forbids editing an applied migration), so each schema here is the pinned
package's migrations applied up to the last one that release had."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from exporter.config import parse
from exporter.demo.schema import apply_migrations, migration_files

from .support import pg
from .support.exporters import FakeClock, poll, scrape

# The last migration of each schema: LiteLLM's March 2025 baseline (no daily tables); the first
# litellm-proxy-extras (0.1.0, one daily table without request counts); mid-2025 (user, team and
# tag daily tables, status on spend logs, no organisation or end-user tables).
SCHEMAS = {
    "baseline": "20250326162113_baseline",
    "0.1.0": "20250326171002_add_daily_user_table",
    "2025-05": "20250510142544_add_session_id_index_spend_logs",
}


def schema_dsn(admin: str, last: str) -> Iterator[str]:
    files = migration_files()
    names = [f.parent.name for f in files]
    name = pg.unique_name("litellm_exporter_old")
    dsn = pg.create_database(admin, name)
    try:
        apply_migrations(dsn, files[: names.index(last) + 1])
        yield dsn
    finally:
        pg.drop_database(admin, name)


@pytest.fixture(params=list(SCHEMAS))
def old_schema(request, admin_dsn) -> Iterator[tuple[str, str]]:
    for dsn in schema_dsn(admin_dsn, SCHEMAS[request.param]):
        yield request.param, dsn


def write_spend_logs(conn: psycopg.Connection, start: int, count: int, now: datetime, *, minutes_back: float) -> None:
    """Spend-log rows with only the columns every schema since the baseline has."""
    conn.execute(
        'INSERT INTO "LiteLLM_SpendLogs" (request_id, call_type, api_key, spend, total_tokens, prompt_tokens,'
        ' completion_tokens, "startTime", "endTime", "completionStartTime", model, model_group, custom_llm_provider,'
        ' "user", team_id, end_user, request_tags)'
        " SELECT 'r' || i, 'acompletion', md5('k' || (i %% 7)), (i %% 13) * 0.01, 30, 20, 10,"
        " ts, ts + interval '2 seconds', ts + interval '500 milliseconds',"
        " 'm-' || (i %% 3), 'g-' || (i %% 3), 'openai',"
        " CASE WHEN i %% 4 = 0 THEN '' ELSE 'u' || (i %% 5) END,"
        " CASE WHEN i %% 5 = 0 THEN NULL ELSE 't' || (i %% 2) END,"
        " CASE WHEN i %% 3 = 0 THEN 'cust' || (i %% 4) ELSE '' END,"
        " CASE WHEN i %% 2 = 0 THEN '[\"prod\", \"team-a\"]'::jsonb ELSE '[]'::jsonb END"
        " FROM (SELECT i, %s::timestamp - (i %% 97) * (%s / 97.0) * interval '1 minute' AS ts"
        " FROM generate_series(%s::int, %s::int) i) g",
        (now.replace(tzinfo=None), minutes_back, start, start + count - 1),
    )


GROUND_TRUTH = {
    "litellm": "coalesce(model_group, '') AS model_group, coalesce(model, '') AS model,"
    " coalesce(custom_llm_provider, '') AS provider",
    "litellm_key": None,  # labels need the key table; the sum is checked per key_hash below
    "litellm_team": "coalesce(team_id, '') AS team_id, '' AS team_alias, coalesce(model_group, '') AS model_group",
    "litellm_user": "coalesce(\"user\", '') AS user_id, coalesce(model_group, '') AS model_group",
    "litellm_end_user": "end_user AS end_user",
}


def spend_log_sums(conn, prefix: str, measure: str) -> dict:
    column = {
        "spend_usd": "sum(spend)",
        "requests": "count(*)",
        "input_tokens": "sum(prompt_tokens)",
        "output_tokens": "sum(completion_tokens)",
    }[measure]
    if prefix == "litellm_tag":
        cur = conn.execute(
            "SELECT t.tag AS tag, coalesce(model_group, '') AS model_group, "
            + column.replace("count(*)", "count(*)")
            + ' FROM "LiteLLM_SpendLogs" s, jsonb_array_elements_text(s.request_tags) t(tag) GROUP BY 1, 2'
        )
    else:
        where = " WHERE end_user <> ''" if prefix == "litellm_end_user" else ""
        select = GROUND_TRUTH[prefix]
        cur = conn.execute(
            f'SELECT {select}, {column} FROM "LiteLLM_SpendLogs"{where} GROUP BY '
            + ", ".join(str(i + 1) for i in range(select.count(" AS ")))
        )
    names = [c.name for c in cur.description][:-1]
    return {frozenset(zip(names, row[:-1], strict=True)): float(row[-1]) for row in cur.fetchall()}


def assert_spend_log_families(conn, samples, prefixes) -> None:
    for prefix in prefixes:
        for measure in ("spend_usd", "requests", "input_tokens", "output_tokens"):
            want = spend_log_sums(conn, prefix, measure)
            got = samples[f"{prefix}_{measure}_total"]
            assert got.keys() == want.keys(), (prefix, measure)
            for labels, value in want.items():
                assert math.isclose(got[labels], value, rel_tol=1e-9, abs_tol=1e-12), (prefix, measure, labels)


def sources(samples) -> dict[str, str]:
    return {dict(labels)["family"]: dict(labels)["source"] for labels in samples["litellm_exporter_source_info"]}


def test_every_collector_works_on_older_schemas(old_schema, clock):
    name, dsn = old_schema
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            'INSERT INTO "LiteLLM_TeamTable" (team_id, team_alias, max_budget, spend, updated_at)'
            " VALUES ('t0', 'Zero', 100, 12.5, now())"
        )
        write_spend_logs(conn, 1, 300, clock.now, minutes_back=60 * 24 * 3)
        from exporter.app import Exporter

        exporter = Exporter(parse({"database": {"dsn": dsn}}), clock=clock)
        exporter.db.open(wait=True)
        try:
            poll(exporter)  # fails if any collector fails on this schema
            samples = scrape(exporter)
        finally:
            exporter.db.close()
        found = sources(samples)
        assert found["litellm_organization"] == "none"  # no organisation id anywhere yet
        assert found["litellm_agent"] == "none"
        # Families of tables this LiteLLM does not have yet are simply absent.
        for family in (
            "litellm_request_errors_total",
            "litellm_gateway_requests_total",
            "litellm_task_spend_usd_total",
            "litellm_tool_requests_total",
            "litellm_guardrail_requests_evaluated_total",
            "litellm_policy_requests_blocked_total",
            "litellm_guardrail_usage_units_total",
            "litellm_proxy_workers_alive",
            "litellm_deployment_healthy",
            "litellm_budget_window_spend_usd",
            "litellm_response_time_seconds_total",
            "litellm_prompt_caching_savings_usd_total",
        ):
            assert not samples.get(family), family
        if name in ("baseline", "0.1.0"):
            # No daily tables, or one without request counts: everything from the spend logs.
            for family in ("litellm", "litellm_key", "litellm_user", "litellm_team", "litellm_end_user", "litellm_tag"):
                assert found[family] == "LiteLLM_SpendLogs", family
            assert_spend_log_families(conn, samples, ("litellm", "litellm_user", "litellm_end_user", "litellm_tag"))
            team = spend_log_sums(conn, "litellm_team", "spend_usd")
            got = {
                frozenset((k, v) for k, v in labels if k != "team_alias"): value
                for labels, value in samples["litellm_team_spend_usd_total"].items()
            }
            assert got.keys() == {frozenset((k, v) for k, v in labels if k != "team_alias") for labels in team}
        else:
            assert found["litellm"] == "LiteLLM_DailyUserSpend"
            assert found["litellm_team"] == "LiteLLM_DailyTeamSpend"
            assert found["litellm_end_user"] == "LiteLLM_SpendLogs"
            assert_spend_log_families(conn, samples, ("litellm_end_user",))
        budgets = {dict(labels)["team_id"]: v for labels, v in samples["litellm_team_max_budget_usd"].items()}
        assert budgets == {"t0": 100.0}
        assert (
            samples["litellm_team_budget_remaining_usd"][frozenset({("team_id", "t0"), ("team_alias", "Zero")})] == 87.5
        )
        assert "litellm_team_soft_budget_usd" not in samples or name == "2025-05"
        # The latency histogram reads the rows of the last ten minutes, with endTime - startTime
        # where an old schema has no request_duration_ms.
        recent = conn.execute(
            'SELECT count(*) FROM "LiteLLM_SpendLogs" WHERE "startTime" >= %s',
            (clock.now.replace(tzinfo=None) - timedelta(minutes=10),),
        ).fetchone()[0]
        assert recent > 0
        assert sum(samples["litellm_request_duration_seconds_count"].values()) == recent


def test_spend_log_source_counts_late_rows_once_across_polls(make_exporter, conn, clock, litellm_dsn):
    # The current schema, told to ignore the daily tables (as for an older LiteLLM whose daily
    # tables undercount under load); rows land late, and polls come and go.
    write_spend_logs(conn, 1, 500, clock.now, minutes_back=60 * 24 * 5)
    exporter = make_exporter(source="spend_logs")
    poll(exporter)
    prefixes = ("litellm", "litellm_user", "litellm_end_user", "litellm_tag")
    assert_spend_log_families(conn, scrape(exporter), prefixes)
    start = 501
    for _ in range(5):
        clock.advance(minutes=3)
        write_spend_logs(conn, start, 40, clock.now, minutes_back=8)  # up to 8 minutes late
        start += 40
        poll(exporter)
        poll(exporter)
        assert_spend_log_families(conn, scrape(exporter), prefixes)
    # An hour on, every window row has moved into the base, unchanged.
    clock.advance(hours=1)
    poll(exporter)
    samples = scrape(exporter)
    assert_spend_log_families(conn, samples, prefixes)
    assert set(sources(samples).values()) <= {"LiteLLM_SpendLogs", "none"}


def test_widening_the_spend_log_margin_on_reload_counts_nothing_twice(make_exporter, conn, clock, litellm_dsn):
    import dataclasses

    from .support.exporters import make_config

    write_spend_logs(conn, 1, 400, clock.now, minutes_back=120)
    config = make_config(litellm_dsn, source="spend_logs", spend_logs_late_margin=300.0)
    exporter = make_exporter(config)
    poll(exporter)
    # Rows between the old and the new cutoff were summed into the base already.
    exporter.reload(dataclasses.replace(config, usage=dataclasses.replace(config.usage, spend_logs_late_margin=3600.0)))
    poll(exporter)
    assert_spend_log_families(conn, scrape(exporter), ("litellm", "litellm_user", "litellm_tag"))


def test_spend_log_source_on_a_partitioned_table(make_exporter, conn, clock):
    conn.execute('ALTER TABLE "LiteLLM_SpendLogs" RENAME TO "LiteLLM_SpendLogs_plain"')
    conn.execute(
        'CREATE TABLE "LiteLLM_SpendLogs" (LIKE "LiteLLM_SpendLogs_plain" INCLUDING DEFAULTS)'
        ' PARTITION BY RANGE ("startTime")'
    )
    conn.execute('CREATE INDEX ON "LiteLLM_SpendLogs" ("startTime")')
    day = clock.now.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    for i in range(-7, 2):
        lo, hi = day + timedelta(days=i), day + timedelta(days=i + 1)
        conn.execute(
            f'CREATE TABLE "LiteLLM_SpendLogs_{i + 7}" PARTITION OF "LiteLLM_SpendLogs"'
            f" FOR VALUES FROM ('{lo}') TO ('{hi}')"
        )
    write_spend_logs(conn, 1, 300, clock.now, minutes_back=60 * 24 * 5)
    exporter = make_exporter(source="spend_logs")
    poll(exporter)
    clock.advance(minutes=2)
    write_spend_logs(conn, 301, 50, clock.now, minutes_back=5)
    poll(exporter)
    assert_spend_log_families(conn, scrape(exporter), ("litellm", "litellm_tag"))


def test_fake_clock_is_utc():
    assert FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc))().tzinfo is timezone.utc
