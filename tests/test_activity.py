"""Counters from the tables newer LiteLLM versions keep beside the spend tables (errors by
status code, requests at the proxy's edge, task types, agents, tools, guardrails, policies)
and the newer measures of the spend tables: each equals the database's sum."""

from __future__ import annotations

from datetime import timedelta

from exporter.config import parse
from exporter.demo.traffic import Request, random_rejections

from .support.exporters import poll, scrape
from .support.ground_truth import activity_expected, differences, mismatches
from .support.history import flush_recent, load_history

NEWER_MEASURES = (
    "litellm_requests_successful_total",
    "litellm_key_requests_successful_total",
    "litellm_team_requests_successful_total",
    "litellm_response_time_seconds_total",
    "litellm_timed_requests_total",
    "litellm_prompt_caching_savings_usd_total",
    "litellm_agent_spend_usd_total",
)


def _rejections(writer, rng, clock, count: int) -> None:
    for route, code in random_rejections(rng, count):
        writer.reject(clock.now - timedelta(seconds=rng.random() * 30), route, code)


def test_newer_tables_equal_the_database(make_exporter, writer, rng, world, clock, conn):
    load_history(writer, rng, world, clock, days=4)
    _rejections(writer, rng, clock, 30)
    writer.flush(clock.now)
    exporter = make_exporter()
    poll(exporter)
    samples = scrape(exporter)
    wanted = activity_expected(conn)
    assert differences(wanted, samples) == []
    assert mismatches(conn, samples) == []
    # As good as the data only: every family must have series to compare.
    for name, series in wanted.items():
        assert len(series) >= 1, name
    for name in NEWER_MEASURES:
        assert sum(samples[name].values()) > 0, name
    codes = {dict(labels)["status_code"] for labels in samples["litellm_request_errors_total"]}
    assert {"429", "500"} <= codes
    # Refusals at the edge (bad keys, the proxy's own rate limit) never become spend logs, so the
    # gateway counts more failures than the spend tables.
    gateway_failed = sum(samples["litellm_gateway_requests_failed_total"].values())
    spend_failed = sum(samples["litellm_requests_failed_total"].values())
    assert gateway_failed == spend_failed + 30


def test_newer_tables_follow_live_flushes_and_late_rows(make_exporter, writer, rng, world, clock, conn):
    load_history(writer, rng, world, clock, days=3)
    exporter = make_exporter()
    poll(exporter)
    for step in range(5):
        clock.advance(seconds=20)
        flush_recent(writer, rng, world, clock, 40, timedelta(minutes=10))
        _rejections(writer, rng, clock, 3)
        # A Redis-buffered pod's rows, held back for most of an hour.
        if step == 2:
            flush_recent(writer, rng, world, clock, 10, timedelta(minutes=58))
        writer.flush(clock.now)
        poll(exporter)
        samples = scrape(exporter)
        assert differences(activity_expected(conn), samples) == []
        assert mismatches(conn, samples) == []


def test_error_families_add_up_under_tight_caps(make_exporter, writer, rng, world, clock, litellm_dsn):
    load_history(writer, rng, world, clock, days=3)
    config = parse(
        {
            "database": {"dsn": litellm_dsn},
            "collectors": {
                "usage": {"entities": {e: {"max_series": 1 + (e == "key")} for e in ("key", "team", "user")}}
            },
        }
    )
    exporter = make_exporter(config)
    poll(exporter)
    samples = scrape(exporter)
    total = sum(samples["litellm_request_errors_total"].values())
    assert total > 0
    for family in ("litellm_key_request_errors_total", "litellm_team_request_errors_total"):
        series = samples[family]
        assert abs(sum(series.values()) - total) < 1e-9, family
        others = [
            labels for labels in series if ("overflow_set", "") not in labels and dict(labels).get("overflow_set")
        ]
        assert others, family  # the rest is summed into __other__, by status code
        assert all(dict(labels).get("status_code") for labels in others)
    shown = {dict(labels)["key_hash"] for labels in samples["litellm_key_request_errors_total"]}
    assert len(shown - {"__other__"}) == 2


def test_daily_rows_merge_as_the_proxy_merges_them(writer, world, clock, conn):
    caller = world.callers[0]
    for i in range(4):
        writer.record(
            Request(caller.api_key, "gpt-4o", "gpt-4o", "openai", 0.5, 10, 5, clock.now, user_id=caller.user_id)
        )
        writer.flush(clock.now + timedelta(seconds=i))
    rows = conn.execute(
        "SELECT count(*), sum(api_requests), bool_and(mcp_namespaced_tool_name = ''), bool_and(endpoint IS NOT NULL),"
        ' bool_and(custom_llm_provider IS NOT NULL) FROM "LiteLLM_DailyUserSpend" WHERE api_key = %s',
        (caller.api_key,),
    ).fetchone()
    assert rows == (1, 4, True, True, True)


def test_the_newer_tables_are_read_when_spend_comes_from_the_spend_logs(make_exporter, writer, rng, world, clock, conn):
    # `source: spend_logs` chooses how spend is counted; errors, the gateway and the rest have no
    # spend-log equivalent, and are read all the same.
    load_history(writer, rng, world, clock, days=2)
    exporter = make_exporter(source="spend_logs")
    poll(exporter)
    samples = scrape(exporter)
    assert differences(activity_expected(conn), samples) == []
    assert samples["litellm_request_errors_total"]
