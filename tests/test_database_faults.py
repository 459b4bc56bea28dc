"""The database failing in the middle of a poll: a connection cut inside a result set, a server
that goes silent, PostgreSQL restarted during a resync, PgBouncer restarted. Each poll fails with
its named reason, the last values keep being served, no counter falls, and the first poll after
the fault recovers, exactly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from exporter.app import Exporter
from exporter.collectors.base import Collector
from exporter.demo.entities import seed_world
from exporter.demo.schema import apply_migrations
from exporter.demo.scratch import LocalCluster
from exporter.demo.writer import SpendWriter

from .support import pg
from .support.exporters import Samples, poll, scrape
from .support.ground_truth import mismatches
from .support.history import flush_recent, load_history
from .support.pgbouncer import PgBouncer
from .test_failures import config_for, wait_for_activity

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def counters(samples: Samples) -> Series:
    """Every LiteLLM counter series served (not the exporter's own)."""
    return {
        (name, labels): value
        for name, series in samples.items()
        if name.endswith("_total") and name.startswith("litellm_") and not name.startswith("litellm_exporter")
        for labels, value in series.items()
    }


def assert_no_counter_fell(before: Samples, after: Samples) -> None:
    later = counters(after)
    fell = {key: (value, later.get(key)) for key, value in counters(before).items() if later.get(key, -1.0) < value}
    assert fell == {}, fell


def failures(samples: Samples, collector: str) -> dict[str, float]:
    return {
        dict(labels)["reason"]: value
        for labels, value in samples.get("litellm_exporter_collector_failures_total", {}).items()
        if dict(labels)["collector"] == collector
    }


def by_name(exporter: Exporter, name: str) -> Collector:
    return next(c for c in exporter.runner.collectors if c.name == name)


def last_error(exporter: Exporter, name: str) -> str | None:
    return next(c.error for c in exporter.runner.status() if c.name == name)


def test_a_connection_cut_in_the_middle_of_a_result_set(
    make_exporter, proxied_dsn, tcp_proxy, writer, rng, world, clock, conn
):
    load_history(writer, rng, world, clock, days=3)
    exporter = make_exporter(config_for(proxied_dsn))
    usage = by_name(exporter, "usage")
    poll(exporter)
    # How many bytes a resync reads: the cut falls half way through them.
    flush_recent(writer, rng, world, clock, 20, timedelta(minutes=2))
    usage.request_resync()  # type: ignore[attr-defined]
    read_from = tcp_proxy.from_server
    assert exporter.runner.poll_once(usage)
    resync_bytes = tcp_proxy.from_server - read_from
    assert resync_bytes > 20_000, resync_bytes
    before = scrape(exporter)

    flush_recent(writer, rng, world, clock, 20, timedelta(minutes=2))
    usage.request_resync()  # type: ignore[attr-defined]
    tcp_proxy.cut_after(resync_bytes // 2)
    assert not exporter.runner.poll_once(usage)
    during = scrape(exporter)
    assert failures(during, "usage") == {"database_unavailable": 1.0}
    assert counters(during) == counters(before)  # the last values, served as they were

    assert exporter.runner.poll_once(usage), last_error(exporter, "usage")
    after = scrape(exporter)
    assert_no_counter_fell(before, after)
    assert mismatches(conn, after) == []


def test_a_server_gone_silent_fails_the_poll_within_the_statement_timeout(
    make_exporter, proxied_dsn, tcp_proxy, writer, rng, world, clock, conn
):
    load_history(writer, rng, world, clock, days=2)
    exporter = make_exporter(config_for(proxied_dsn, statement_timeout="1s", connect_timeout="1s"))
    poll(exporter)
    before = scrape(exporter)
    flush_recent(writer, rng, world, clock, 20, timedelta(minutes=2))

    tcp_proxy.set_mode("silent")  # packets stop both ways; no reset, no close
    results: dict[str, bool] = {}
    started = time.monotonic()
    threads = [
        threading.Thread(target=lambda c=c: results.update({c.name: exporter.runner.poll_once(c)}))
        for c in exporter.runner.collectors
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - started
    assert results and not any(results.values()), results
    # The statement timeout and the connect timeout, a connection attempt that is not answered
    # either (libpq waits at least 2 s), and the pool's own wait: never the hours TCP would take.
    assert elapsed < 12, elapsed
    during = scrape(exporter)
    assert failures(during, "usage") == {"database_unavailable": 1.0}
    assert "did not answer in time" in (last_error(exporter, "usage") or ""), last_error(exporter, "usage")
    assert counters(during) == counters(before)

    tcp_proxy.set_mode("up")
    for collector in exporter.runner.collectors:
        assert exporter.runner.poll_once(collector), (collector.name, last_error(exporter, collector.name))
    after = scrape(exporter)
    assert_no_counter_fell(before, after)
    assert mismatches(conn, after) == []


def test_a_silent_connection_taken_from_the_pool_is_closed_and_named(make_exporter, proxied_dsn, tcp_proxy):
    exporter = make_exporter(config_for(proxied_dsn, statement_timeout="1s", connect_timeout="1s"))
    tcp_proxy.set_mode("silent")
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as raised, exporter.db.snapshot() as snapshot:
        snapshot.execute("SELECT 1")
    # The pool checks a connection before lending it: that check, too, is bounded.
    assert time.monotonic() - started < 10
    assert "sent nothing back" in str(raised.value) or "couldn't get a connection" in str(raised.value)


@pytest.fixture
def own_cluster() -> Iterator[tuple[LocalCluster, str]]:
    """A PostgreSQL of the test's own, with LiteLLM's schema, that the test may restart."""
    cluster = pg.local_cluster("fsync = off")
    try:
        with psycopg.connect(cluster.admin, autocommit=True) as admin:
            admin.execute("CREATE DATABASE litellm")
        dsn = make_conninfo(cluster.admin, dbname="litellm")
        apply_migrations(dsn)
        yield cluster, dsn
    finally:
        cluster.stop()


def test_postgresql_restarted_during_a_resync(own_cluster, make_exporter, rng, clock):
    cluster, dsn = own_cluster
    with psycopg.connect(dsn, autocommit=True) as conn:
        world = seed_world(conn, rng)
        writer = SpendWriter(conn)
        load_history(writer, rng, world, clock, days=3)
    exporter = make_exporter(config_for(dsn))
    usage = by_name(exporter, "usage")
    poll(exporter)
    before = scrape(exporter)

    usage.request_resync()  # type: ignore[attr-defined]
    result: list[bool] = []
    # The resync waits on a lock, so that the restart lands in the middle of it. (The restart
    # ends these sessions too: they are closed, never committed.)
    locker, watcher = psycopg.connect(dsn), psycopg.connect(dsn, autocommit=True)
    try:
        locker.execute('LOCK TABLE "LiteLLM_DailyTeamSpend" IN ACCESS EXCLUSIVE MODE')
        thread = threading.Thread(target=lambda: result.append(exporter.runner.poll_once(usage)))
        thread.start()
        assert wait_for_activity(watcher, "state = 'active' AND wait_event_type = 'Lock'"), "the resync never waited"
        cluster.restart()
        thread.join(timeout=30)
    finally:
        locker.close()
        watcher.close()
    assert result == [False]
    during = scrape(exporter)
    assert failures(during, "usage") == {"database_unavailable": 1.0}, last_error(exporter, "usage")
    assert counters(during) == counters(before)

    with psycopg.connect(dsn, autocommit=True) as conn:
        flush_recent(SpendWriter(conn), rng, world, clock, 20, timedelta(minutes=2))
        assert exporter.runner.poll_once(usage), last_error(exporter, "usage")
        poll(exporter)
        after = scrape(exporter)
        assert_no_counter_fell(before, after)
        assert mismatches(conn, after) == []


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_pgbouncer_restarted(mode, litellm_dsn, make_exporter, writer, rng, world, clock, conn):
    bouncer = PgBouncer(litellm_dsn, mode)
    try:
        bouncer.start()
        load_history(writer, rng, world, clock, days=2)
        exporter = make_exporter(config_for(bouncer.dsn))
        poll(exporter)
        before = scrape(exporter)

        bouncer.stop()
        flush_recent(writer, rng, world, clock, 20, timedelta(minutes=2))
        usage = by_name(exporter, "usage")
        assert not exporter.runner.poll_once(usage)
        during = scrape(exporter)
        assert failures(during, "usage") == {"database_unavailable": 1.0}
        assert "connection refused" in (last_error(exporter, "usage") or "")
        assert counters(during) == counters(before)

        bouncer.start()
        assert exporter.runner.poll_once(usage), last_error(exporter, "usage")
        poll(exporter)
        after = scrape(exporter)
        assert_no_counter_fell(before, after)
        assert mismatches(conn, after) == []
    finally:
        bouncer.close()
