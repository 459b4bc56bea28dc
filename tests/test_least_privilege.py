"""The whole exporter runs as the least-privileged role from docs/, which cannot write."""

from __future__ import annotations

import re

import psycopg
import pytest

from exporter.config import parse
from exporter.demo.proxy_records import ProxyRecords
from exporter.demo.traffic import random_requests

from .conftest import LEAST_PRIVILEGE as SCRIPT
from .support.exporters import poll, scrape
from .support.ground_truth import activity_expected, differences, mismatches


def test_every_collector_works_as_the_read_only_role(make_exporter, exporter_role_dsn, writer, rng, world, clock, conn):
    writer.record(
        *random_requests(
            rng, world, 200, clock.now - clock.now.replace(hour=0) and clock.now.replace(hour=0), clock.now
        )
    )
    writer.reject(clock.now, "/chat/completions", 401)
    writer.flush(clock.now)
    records = ProxyRecords(conn)
    records.beat("w1", "pod-a")
    records.health_check("gpt-4o", "dep-1", healthy=True, checked_at=clock.now)
    records.window_spend("team", "team-0", "1h", clock.now, 1.0)
    exporter = make_exporter(parse({"database": {"dsn": exporter_role_dsn}}))
    poll(exporter)  # fails the test if any collector fails
    samples = scrape(exporter)
    assert mismatches(conn, samples) == []
    assert samples["litellm_db_up"] == {frozenset(): 1.0}
    assert "litellm_spend_logs_latest_timestamp_seconds" in samples
    assert differences(activity_expected(conn), samples) == []
    assert samples["litellm_proxy_workers_alive"] == {frozenset({("hostname", "pod-a")}): 1.0}
    assert samples["litellm_deployment_healthy"]
    assert samples["litellm_budget_window_spend_usd"]


def test_the_script_grants_every_table_the_exporter_reads():
    # A table left out is not an error: the role cannot see it, so its families quietly vanish.
    from exporter.catalog import SPEND_LOGS
    from exporter.collectors import budgets, proxy_state
    from exporter.collectors.usage import publish, tables

    read = {s.table for s in tables.ALL_SOURCES} | set(publish.METADATA_TABLES) | {SPEND_LOGS}
    read |= {e.record.table for e in budgets.ENTITIES if e.record} | {budgets.BUDGET_TABLE, budgets.WINDOW_TABLE}
    read |= {proxy_state.HEARTBEATS, proxy_state.HEALTH_CHECKS}
    granted = set(re.findall(r"'(LiteLLM_\w+)'", SCRIPT.read_text()))
    assert read <= granted, read - granted


def test_the_role_cannot_write_or_read_other_tables(exporter_role_dsn):
    with psycopg.connect(exporter_role_dsn, autocommit=True) as reader:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("BEGIN READ WRITE")
            reader.execute("""UPDATE "LiteLLM_TeamTable" SET spend = 0""")
        reader.execute("ROLLBACK")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("""SELECT * FROM "LiteLLM_Config" LIMIT 1""")
        # Even in a transaction it declares read-write, the grants allow nothing but reading.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("BEGIN READ WRITE")
            reader.execute("""CREATE TABLE t (x int)""")
        reader.execute("ROLLBACK")


def test_a_table_the_role_may_not_read_is_left_out_not_an_error(make_exporter, exporter_role_dsn, conn):
    ProxyRecords(conn).beat("w1", "pod-a")
    conn.execute('REVOKE SELECT ON "LiteLLM_ProxyWorkerHeartbeat" FROM litellm_exporter')
    exporter = make_exporter(parse({"database": {"dsn": exporter_role_dsn}}))
    poll(exporter)  # fails the test if any collector fails
    samples = scrape(exporter)
    assert not samples.get("litellm_proxy_workers_alive")
