"""Workers and model health, read from what the proxy writes about itself."""

from __future__ import annotations

import time
from datetime import timedelta

import psycopg
import pytest

from exporter.collectors.proxy_state import _LATEST_CHECKS, LIVENESS_WINDOW
from exporter.demo.proxy_records import ProxyRecords

from .support.exporters import poll, scrape


@pytest.fixture
def proxy(conn) -> ProxyRecords:
    return ProxyRecords(conn)


def _by_host(samples, name):
    return {dict(labels)["hostname"]: value for labels, value in samples.get(name, {}).items()}


def test_workers_alive_stale_and_stopped_within_one_poll(make_exporter, proxy):
    proxy.beat("w1", "pod-a")
    proxy.beat("w2", "pod-a", seconds_ago=30)
    proxy.beat("w3", "pod-b", seconds_ago=10)
    exporter = make_exporter()
    poll(exporter)
    samples = scrape(exporter)
    assert _by_host(samples, "litellm_proxy_workers_alive") == {"pod-a": 2, "pod-b": 1}
    assert _by_host(samples, "litellm_proxy_workers_stale") == {"pod-a": 0, "pod-b": 0}
    newest = _by_host(samples, "litellm_proxy_worker_last_heartbeat_timestamp_seconds")
    assert newest["pod-a"] > newest["pod-b"] - 11

    # w3 is killed: its row stays and stops moving. Here its last beat is put past the window.
    proxy.beat("w3", "pod-b", seconds_ago=LIVENESS_WINDOW + 5)
    # w2 stops cleanly: LiteLLM deletes its row.
    proxy.stop("w2")
    poll(exporter)
    samples = scrape(exporter)
    assert _by_host(samples, "litellm_proxy_workers_alive") == {"pod-a": 1, "pod-b": 0}
    assert _by_host(samples, "litellm_proxy_workers_stale") == {"pod-a": 0, "pod-b": 1}


def test_workers_in_a_server_whose_time_zone_is_not_utc(make_exporter, proxy, conn, litellm_dsn):
    # LiteLLM's NOW() lands in the server's zone: a proxy beating now is alive, whatever the zone.
    conn.execute(f"ALTER DATABASE {conn.info.dbname} SET timezone = 'America/New_York'")
    with psycopg.connect(litellm_dsn, autocommit=True) as proxy_session:
        ProxyRecords(proxy_session).beat("w1", "pod-ny")
        beat = proxy_session.execute(
            'SELECT extract(epoch FROM last_heartbeat_at::timestamptz) FROM "LiteLLM_ProxyWorkerHeartbeat"'
        ).fetchone()[0]
    exporter = make_exporter()
    poll(exporter)
    samples = scrape(exporter)
    assert _by_host(samples, "litellm_proxy_workers_alive") == {"pod-ny": 1}
    newest = _by_host(samples, "litellm_proxy_worker_last_heartbeat_timestamp_seconds")["pod-ny"]
    assert abs(newest - float(beat)) < 1e-3
    assert abs(newest - time.time()) < 60


def test_latest_health_check_per_deployment(make_exporter, proxy, clock):
    now = clock.now
    proxy.health_check("gpt-4o", "dep-1", healthy=True, checked_at=now - timedelta(minutes=30))
    proxy.health_check("gpt-4o", "dep-1", healthy=False, checked_at=now - timedelta(minutes=1), response_time_ms=None)
    proxy.health_check("gpt-4o", "dep-2", healthy=True, checked_at=now - timedelta(minutes=2), response_time_ms=420.0)
    proxy.health_check("gpt-4o", "dep-2", healthy=False, checked_at=now - timedelta(minutes=20))
    # A deployment from a config file without an id, under two model names.
    proxy.health_check("claude", None, healthy=True, checked_at=now - timedelta(minutes=3), endpoints=3)
    proxy.health_check("claude", None, healthy=False, checked_at=now - timedelta(minutes=9))
    proxy.health_check("gemini", None, healthy=False, checked_at=now - timedelta(minutes=4))
    exporter = make_exporter()
    poll(exporter)
    samples = scrape(exporter)

    def by_deployment(name):
        return {(dict(lb)["model_name"], dict(lb)["model_id"]): v for lb, v in samples[name].items()}

    assert by_deployment("litellm_deployment_healthy") == {
        ("gpt-4o", "dep-1"): 0,
        ("gpt-4o", "dep-2"): 1,
        ("claude", ""): 1,
        ("gemini", ""): 0,
    }
    assert by_deployment("litellm_deployment_healthy_endpoints")[("claude", "")] == 3
    assert by_deployment("litellm_deployment_unhealthy_endpoints")[("gemini", "")] == 1
    # No response time recorded for dep-1's latest check: no sample, not a stale one.
    assert by_deployment("litellm_deployment_health_check_response_time_seconds") == {
        ("gpt-4o", "dep-2"): 0.42,
        ("claude", ""): 0.15,
        ("gemini", ""): 0.15,
    }
    checked = by_deployment("litellm_deployment_last_health_check_timestamp_seconds")
    assert checked[("gpt-4o", "dep-1")] == (now - timedelta(minutes=1)).timestamp()


def test_health_checks_capped_to_the_most_recently_checked(make_exporter, proxy, clock, litellm_dsn):
    import dataclasses

    from .support.exporters import make_config

    for i in range(5):
        proxy.health_check(f"m{i}", f"d{i}", healthy=True, checked_at=clock.now - timedelta(minutes=i))
    config = make_config(litellm_dsn)
    config = dataclasses.replace(config, proxy_state=dataclasses.replace(config.proxy_state, max_deployments=2))
    exporter = make_exporter(config)
    poll(exporter)
    samples = scrape(exporter)
    assert {dict(lb)["model_id"] for lb in samples["litellm_deployment_healthy"]} == {"d0", "d1"}
    over = {dict(lb)["family"]: v for lb, v in samples["litellm_exporter_entities_over_cap"].items()}
    assert over["litellm_deployment"] == 3


def test_latest_checks_read_through_the_index_not_the_table(conn):
    # 40 deployments with 1,000 checks each, as months of background checks leave them.
    conn.execute(
        'INSERT INTO "LiteLLM_HealthCheckTable" (health_check_id, model_name, model_id, status, checked_at,'
        " updated_at) SELECT 'h' || i, 'model-' || (i % 40), CASE WHEN i % 40 < 30 THEN 'dep-' || (i % 40) END,"
        " CASE WHEN i % 7 = 0 THEN 'unhealthy' ELSE 'healthy' END, now() - i * interval '1 second', now()"
        " FROM generate_series(1, 40000) i"
    )
    conn.execute('ANALYZE "LiteLLM_HealthCheckTable"')
    plan = "\n".join(r[0] for r in conn.execute(b"EXPLAIN " + _LATEST_CHECKS.as_bytes(conn), {"limit": 500}))
    scans = [line for line in plan.splitlines() if 'on "LiteLLM_HealthCheckTable"' in line]
    assert scans, plan
    # Every read walks LiteLLM's (model_id, model_name, checked_at DESC) index: no table scan, and
    # no other index read with a filter that would visit every check of a model name.
    assert all("model_id_model_name_checked_at_idx" in line for line in scans), plan
    rows = conn.execute(_LATEST_CHECKS, {"limit": 500}).fetchall()
    truth = conn.execute(
        "SELECT DISTINCT ON (model_name, model_id) model_name, coalesce(model_id, ''), status FROM"
        ' "LiteLLM_HealthCheckTable" ORDER BY model_name, model_id, checked_at DESC'
    ).fetchall()
    assert sorted(r[:3] for r in rows) == sorted(truth)
    assert len(rows) == 40


def test_budget_window_spend(make_exporter, conn, clock):
    records = ProxyRecords(conn)
    start = clock.now.replace(minute=0, second=0, microsecond=0)
    records.window_spend("team", "team-1", "1h", start, 2.5)
    records.window_spend("team", "team-1", "1h", start, 1.0)
    records.window_spend("team", "team-1", "1d", start.replace(hour=0), 7.25)
    records.window_spend("key", "abc", "1h", start - timedelta(hours=1), 4.0)
    records.window_spend("key", "abc", "1h", start, 0.5)  # a new window starts from zero
    exporter = make_exporter()
    poll(exporter)
    samples = scrape(exporter)
    spend = {
        tuple(dict(lb)[k] for k in ("entity_type", "entity_id", "window")): v
        for lb, v in samples["litellm_budget_window_spend_usd"].items()
    }
    assert spend == {("team", "team-1", "1h"): 3.5, ("team", "team-1", "1d"): 7.25, ("key", "abc", "1h"): 0.5}
    starts = {
        tuple(dict(lb)[k] for k in ("entity_type", "entity_id", "window")): v
        for lb, v in samples["litellm_budget_window_start_timestamp_seconds"].items()
    }
    assert starts[("key", "abc", "1h")] == start.timestamp()
