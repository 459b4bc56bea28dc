"""Through a real PgBouncer, in transaction and in session pooling mode: the counters stay exact,
the transactions stay read-only, and the server still enforces the statement timeout."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest

from exporter.config import parse

from .support.exporters import collector, poll, scrape
from .support.ground_truth import mismatches
from .support.history import flush_recent, load_history
from .support.pgbouncer import pgbouncer
from .test_failures import activity, wait_for_activity


@pytest.fixture(params=["transaction", "session"])
def pooled_dsn(request, litellm_dsn):
    with pgbouncer(litellm_dsn, request.param) as dsn:
        yield dsn


def test_counters_are_exact_through_pgbouncer(pooled_dsn, make_exporter, writer, rng, world, clock, conn):
    load_history(writer, rng, world, clock, days=3)
    exporter = make_exporter(parse({"database": {"dsn": pooled_dsn, "max_conns": 4}}))
    # More polls than psycopg's default prepare threshold: a prepared statement would be looked
    # for on another server connection in transaction mode.
    for _ in range(8):
        clock.advance(seconds=15)
        flush_recent(writer, rng, world, clock, 20, timedelta(minutes=2))
        poll(exporter)
        assert mismatches(conn, scrape(exporter)) == []
    with exporter.db.snapshot() as pooled, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        pooled.execute("""INSERT INTO "LiteLLM_UserTable" (user_id) VALUES ('written through the pooler')""")


def test_the_server_enforces_the_statement_timeout_through_pgbouncer(pooled_dsn, make_exporter, litellm_dsn, conn):
    exporter = make_exporter(parse({"database": {"dsn": pooled_dsn, "statement_timeout": "1s"}}))
    usage = collector(exporter, "usage")
    assert exporter.runner.poll_once(usage)
    # A commit since that poll, or the next one would find nothing new to read.
    conn.execute("""INSERT INTO "LiteLLM_UserTable" (user_id) VALUES ('committed-since')""")
    with psycopg.connect(litellm_dsn) as locker:
        locker.execute('LOCK TABLE "LiteLLM_DailyTeamSpend" IN ACCESS EXCLUSIVE MODE')
        result: list[bool] = []
        thread = threading.Thread(target=lambda: result.append(exporter.runner.poll_once(usage)))
        thread.start()
        assert wait_for_activity(conn, "state = 'active' AND wait_event_type = 'Lock'"), "the query never waited"
        thread.join(timeout=10)
        assert result == [False]
        # The lock is still held: only the server's statement_timeout can have ended the query.
        assert activity(conn, "state = 'active'") == []
    failures = scrape(exporter)["litellm_exporter_collector_failures_total"]
    assert failures == {frozenset({("collector", "usage"), ("reason", "statement_timeout")}): 1.0}


def test_a_protocol_violation_is_its_own_failure_reason():
    from exporter.errors import Reason, classify

    # What PgBouncer sends for its own errors (query_wait_timeout, no more connections), SQLSTATE
    # 08P01: the database is not down, the path to it is broken.
    assert classify(psycopg.errors.ProtocolViolation("query_wait_timeout")) is Reason.PROTOCOL_ERROR
    assert classify(psycopg.OperationalError("connection refused")) is Reason.DATABASE_UNAVAILABLE


@pytest.mark.parametrize("pool_size", [4, 1])
def test_a_full_read_shares_its_snapshot_through_transaction_pooling_or_reads_alone(
    litellm_dsn, make_exporter, writer, rng, world, clock, conn, pool_size
):
    """In transaction mode a helper connection gets a server connection of its own and imports
    the snapshot; with a single server connection for the pool (held by the poll's own
    transaction) it gives up within the connect timeout, and the poll's connection reads all."""
    load_history(writer, rng, world, clock, days=3)
    with pgbouncer(litellm_dsn, "transaction", pool_size) as dsn:
        config = parse({"database": {"dsn": dsn, "max_conns": 4, "connect_timeout": "2s"}})
        exporter = make_exporter(config)
        usage = collector(exporter, "usage")
        started = time.monotonic()
        assert exporter.runner.poll_once(usage)
        took = time.monotonic() - started
        assert mismatches(conn, scrape(exporter)) == []
        if pool_size == 1:
            assert usage.reads["helper"] == 0
            assert took < 10
        else:
            assert usage.reads["helper"] > 0
