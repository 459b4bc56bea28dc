"""The database collector: up, latency, version, sizes from the catalogue, freshness, pool."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import timedelta

from exporter.demo.traffic import random_requests

from .support.exporters import poll, scrape


def value(samples, name: str, **labels: str) -> float:
    return samples[name][frozenset(labels.items())]


def test_probe_reports_the_database_as_postgres_sees_it(make_exporter, writer, rng, world, clock, conn):
    writer.record(*random_requests(rng, world, 200, clock.now - timedelta(days=1), clock.now))
    writer.flush(clock.now)
    conn.execute('ANALYZE "LiteLLM_SpendLogs"')
    exporter = make_exporter()
    poll(exporter)
    s = scrape(exporter)

    assert value(s, "litellm_db_up") == 1.0
    assert 0 < value(s, "litellm_db_probe_duration_seconds") < 5
    version = conn.execute("SHOW server_version").fetchone()[0]
    assert value(s, "litellm_db_info", version=version) == 1.0
    actual = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    assert abs(value(s, "litellm_db_size_bytes") - actual) <= 0.1 * actual  # it moves as rows are written
    reltuples, size = conn.execute(
        """SELECT reltuples, pg_total_relation_size(oid) FROM pg_class WHERE oid = '"LiteLLM_SpendLogs"'::regclass"""
    ).fetchone()
    assert reltuples == 200
    assert value(s, "litellm_spend_logs_estimated_rows") == reltuples
    assert value(s, "litellm_spend_logs_size_bytes") == size
    newest = conn.execute(
        """SELECT extract(epoch FROM max("startTime"))::float8 FROM "LiteLLM_SpendLogs\""""
    ).fetchone()[0]
    assert value(s, "litellm_spend_logs_latest_timestamp_seconds") == newest

    # Each daily table's newest updated_at among the rows the usage collector reads.
    for table in ("LiteLLM_DailyUserSpend", "LiteLLM_DailyTeamSpend", "LiteLLM_DailyTagSpend"):
        latest = conn.execute(f'SELECT extract(epoch FROM max(updated_at))::float8 FROM "{table}"').fetchone()[0]
        assert value(s, "litellm_daily_spend_latest_update_timestamp_seconds", table=table) == latest

    assert value(s, "litellm_exporter_db_pool_max_connections") == exporter.config.database.max_conns
    assert value(s, "litellm_exporter_db_pool_connections", state="open") >= 1
    assert value(s, "litellm_exporter_db_pool_connection_errors_total") == 0


def test_estimates_cover_a_partitioned_spend_log_table(make_exporter, conn):
    # Large installs range-partition LiteLLM_SpendLogs by startTime.
    conn.execute('ALTER TABLE "LiteLLM_SpendLogs" RENAME TO "LiteLLM_SpendLogs_plain"')
    conn.execute(
        'CREATE TABLE "LiteLLM_SpendLogs" (LIKE "LiteLLM_SpendLogs_plain" INCLUDING DEFAULTS)'
        ' PARTITION BY RANGE ("startTime")'
    )
    conn.execute('CREATE INDEX ON "LiteLLM_SpendLogs" ("startTime")')
    for month, start, end in (("2026_10", "2026-10-01", "2026-11-01"), ("2026_11", "2026-11-01", "2026-12-01")):
        conn.execute(
            f'CREATE TABLE "LiteLLM_SpendLogs_{month}" PARTITION OF "LiteLLM_SpendLogs"'
            f" FOR VALUES FROM ('{start}') TO ('{end}')"
        )
    conn.execute(
        'INSERT INTO "LiteLLM_SpendLogs" (request_id, call_type, api_key, spend, total_tokens, prompt_tokens,'
        ' completion_tokens, "startTime", "endTime", model, created_at, updated_at)'
        " SELECT 'r' || i, 'acompletion', 'k', 0.01, 2, 1, 1, ts, ts + interval '1 second', 'm', ts, ts"
        " FROM (SELECT i, timestamp '2026-10-15' + i * interval '1 hour' AS ts"
        " FROM generate_series(1, 600) i) g"
    )
    conn.execute('ANALYZE "LiteLLM_SpendLogs"')
    exporter = make_exporter()
    poll(exporter)
    s = scrape(exporter)
    assert value(s, "litellm_spend_logs_estimated_rows") == 600
    partitions = conn.execute(
        """SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('"LiteLLM_SpendLogs"')"""
    ).fetchone()[0]
    assert value(s, "litellm_spend_logs_size_bytes") == partitions
    newest = conn.execute(
        """SELECT extract(epoch FROM max("startTime"))::float8 FROM "LiteLLM_SpendLogs\""""
    ).fetchone()[0]
    assert value(s, "litellm_spend_logs_latest_timestamp_seconds") == newest


def test_a_database_without_litellm_tables_is_named_and_ready_says_so(admin_dsn):
    from exporter.app import Exporter
    from exporter.config import parse

    from .support import pg
    from .support.process import free_port

    name = pg.unique_name("litellm_exporter_empty")
    dsn = pg.create_database(admin_dsn, name)
    try:
        config = parse({"database": {"dsn": dsn}, "web": {"listen": f"127.0.0.1:{free_port()}"}})
        exporter = Exporter(config)
        exporter.start()
        try:
            database = next(c for c in exporter.runner.collectors if c.name == "database")
            assert exporter.runner.poll_once(database)
            with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/ready", timeout=5) as response:
                raise AssertionError(f"/ready answered {response.status}")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            body = exc.read().decode()
            assert body == (
                f'the database "{name}" has none of LiteLLM\'s tables (LiteLLM_SpendLogs, LiteLLM_VerificationToken,'
                " LiteLLM_UserTable, LiteLLM_TeamTable): it is not the database the LiteLLM proxy uses, or"
                " LiteLLM's migrations have not been applied to it\n"
            )
        finally:
            exporter.stop()
    finally:
        pg.drop_database(admin_dsn, name)


def test_schema_migration_and_table_count(make_exporter, conn):
    exporter = make_exporter()
    poll(exporter)
    s = scrape(exporter)
    newest = conn.execute("SELECT max(migration_name) FROM _prisma_migrations").fetchone()[0]
    assert value(s, "litellm_db_schema_migration_info", migration=newest) == 1.0
    tables = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'LiteLLM%'").fetchone()[0]
    assert value(s, "litellm_db_litellm_tables") == tables
    # A schema built without Prisma's history (prisma db push, a restored dump): no sample, no failure.
    conn.execute("DROP TABLE _prisma_migrations")
    conn.execute('DROP TABLE "LiteLLM_ProxyWorkerHeartbeat"')
    poll(exporter)
    s = scrape(exporter)
    assert not s.get("litellm_db_schema_migration_info")
    assert not s.get("litellm_proxy_workers_alive")
