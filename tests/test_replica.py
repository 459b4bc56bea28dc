"""On a real streaming standby: the exporter says it reads a replica and how far behind it is, and
the counters are those of the standby's snapshot."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from exporter.config import parse
from exporter.demo.entities import seed_world
from exporter.demo.schema import apply_migrations
from exporter.demo.scratch import LocalCluster
from exporter.demo.traffic import random_requests
from exporter.demo.writer import SpendWriter

from .support import pg
from .support.exporters import poll, scrape
from .support.ground_truth import mismatches


@pytest.fixture(scope="module")
def primary_and_standby() -> Iterator[tuple[str, str]]:
    """A throwaway primary holding LiteLLM's schema and a standby streaming from it (the shared
    test server refuses replication connections)."""
    primary = pg.local_cluster("wal_level = replica\nmax_wal_senders = 4\nfsync = off")
    standby = None
    try:
        with psycopg.connect(primary.admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE litellm")
        primary_dsn = make_conninfo(primary.admin, dbname="litellm")
        apply_migrations(primary_dsn)
        standby = LocalCluster("hot_standby = on", primary=primary)
        yield primary_dsn, make_conninfo(standby.admin, dbname="litellm")
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()


def wait_for_replay(primary_dsn: str, standby_dsn: str) -> None:
    with psycopg.connect(primary_dsn, autocommit=True) as conn:
        (lsn,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    deadline = time.monotonic() + 20
    with psycopg.connect(standby_dsn, autocommit=True) as conn:
        while not conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.05)


def test_a_standby_is_named_its_lag_measured_and_its_counters_exact(primary_and_standby, clock, rng):
    primary_dsn, standby_dsn = primary_and_standby
    with psycopg.connect(primary_dsn, autocommit=True) as conn:
        world = seed_world(conn, rng)
        writer = SpendWriter(conn)
        writer.record(*random_requests(rng, world, 300, clock.now - timedelta(days=2), clock.now))
        writer.flush(clock.now)
    wait_for_replay(primary_dsn, standby_dsn)

    on_primary = parse({"database": {"dsn": primary_dsn}})
    on_standby = parse({"database": {"dsn": standby_dsn}})
    from exporter.app import Exporter

    primary_exporter, standby_exporter = Exporter(on_primary, clock=clock), Exporter(on_standby, clock=clock)
    for exporter in (primary_exporter, standby_exporter):
        exporter.db.open(wait=True)
    try:
        poll(primary_exporter)
        poll(standby_exporter)
        primary_samples, standby_samples = scrape(primary_exporter), scrape(standby_exporter)
        assert primary_samples["litellm_db_in_recovery"] == {frozenset(): 0.0}
        assert "litellm_db_replication_lag_seconds" not in primary_samples
        assert standby_samples["litellm_db_in_recovery"] == {frozenset(): 1.0}
        (lag,) = standby_samples["litellm_db_replication_lag_seconds"].values()
        assert 0.0 <= lag < 60.0
        with psycopg.connect(standby_dsn) as standby:
            assert mismatches(standby, standby_samples) == []

        # Replay paused: the primary goes on, the standby's counters stand still, and the lag says so.
        with psycopg.connect(standby_dsn, autocommit=True) as standby:
            standby.execute("SELECT pg_wal_replay_pause()")
            try:
                with psycopg.connect(primary_dsn, autocommit=True) as conn:
                    writer = SpendWriter(conn)
                    writer.record(*random_requests(rng, world, 50, clock.now - timedelta(minutes=5), clock.now))
                    writer.flush(clock.now)
                time.sleep(3)
                poll(standby_exporter)
                paused = scrape(standby_exporter)
                (lag,) = paused["litellm_db_replication_lag_seconds"].values()
                assert lag >= 3.0
                assert mismatches(standby, paused) == []  # what the standby has, exactly
                with psycopg.connect(primary_dsn) as conn:
                    assert mismatches(conn, paused) != []  # and behind the primary
            finally:
                standby.execute("SELECT pg_wal_replay_resume()")
    finally:
        primary_exporter.db.close()
        standby_exporter.db.close()
