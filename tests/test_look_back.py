"""Resyncs whose cost follows what changed: the look-back, the full read, and the ranking kept
between them, against the database's own sums and top N."""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta

import psycopg
import pytest

from exporter.collectors.usage import engine as usage_engine
from exporter.config import parse
from exporter.demo.traffic import Request
from exporter.demo.writer import SpendWriter

from .support.exporters import collector, make_config, poll, scrape
from .support.ground_truth import mismatches
from .support.history import flush_recent, load_history
from .test_series_budget import TIGHT, busy_deployment, check_whole, memberships, tight


def _usage(samples):
    return {
        n: s
        for n, s in samples.items()
        if n.startswith("litellm_") and n.endswith("_total") and not n.startswith("litellm_exporter")
    }


def _spend(samples) -> float:
    return sum(samples["litellm_spend_usd_total"].values())


def _bump(conn, days_ago: int, clock, amount: float = 1000.0) -> None:
    """A late change to one row of a closed day, as a retried batch or a hand edit makes."""
    date = (clock.now - timedelta(days=days_ago)).date().isoformat()
    changed = conn.execute(
        'UPDATE "LiteLLM_DailyUserSpend" SET spend = spend + %s, updated_at = now() WHERE id = '
        '(SELECT id FROM "LiteLLM_DailyUserSpend" WHERE date = %s ORDER BY id LIMIT 1)',
        (amount, date),
    ).rowcount
    assert changed == 1, date


def test_a_late_row_inside_the_look_back_is_counted_at_the_next_resync_without_a_full_read(
    make_exporter, writer, rng, world, clock, conn
):
    load_history(writer, rng, world, clock, days=10)
    exporter = make_exporter(look_back=3 * 86400.0)
    usage = collector(exporter, "usage")
    poll(exporter)
    spend = _spend(scrape(exporter))
    full_reads = usage.reads["full"]
    _bump(conn, 2, clock)  # before the window (today), inside the look-back
    clock.advance(minutes=5)
    poll(exporter)  # a poll reads the window only
    assert _spend(scrape(exporter)) == spend
    clock.advance(hours=1)
    poll(exporter)  # the resync reads the look-back
    samples = scrape(exporter)
    assert _spend(samples) == pytest.approx(spend + 1000, abs=1e-6)
    assert mismatches(conn, samples) == []
    assert usage.reads["full"] == full_reads
    assert usage.reads["look_back"] > 0


def test_the_look_back_moves_on_day_by_day_without_a_full_read(make_exporter, writer, rng, world, clock, conn):
    load_history(writer, rng, world, clock, days=8)
    exporter = make_exporter(look_back=2 * 86400.0, full_resync_interval=30 * 86400.0)
    usage = collector(exporter, "usage")
    poll(exporter)
    full_reads = usage.reads["full"]
    for _ in range(4):
        # A day on: yesterday leaves the window, the day before the look-back leaves it for
        # the old part, and late rows land on both.
        clock.advance(days=1)
        flush_recent(writer, rng, world, clock, 30, timedelta(hours=3))
        flush_recent(writer, rng, world, clock, 5, timedelta(days=2))
        poll(exporter)
        assert mismatches(conn, scrape(exporter)) == []
    assert usage.reads["shift"] >= 4
    assert usage.reads["full"] == full_reads


def _top_keys(conn, cap: int) -> frozenset[str]:
    """The database's own top keys by all-time spend, ties by hash: what the key family shows."""
    rows = conn.execute(
        'SELECT left(api_key, 12) FROM "LiteLLM_DailyUserSpend" GROUP BY api_key'
        ' ORDER BY sum(spend) DESC, api_key COLLATE "C" LIMIT %s',
        (cap,),
    ).fetchall()
    return frozenset(r[0] for r in rows)


def test_membership_after_each_resync_is_the_databases_top_n(make_exporter, conn, clock, litellm_dsn, entities):
    busy_deployment(conn, clock, keys=120, users=50, teams=10, requests=1500)
    config = tight(make_config(litellm_dsn, full_resync_interval=30 * 86400.0, look_back=86400.0))
    exporter = make_exporter(config)
    usage = collector(exporter, "usage")
    poll(exporter)
    cap = TIGHT["key"]
    assert memberships(scrape(exporter))["litellm_key"][0] - {"__other__"} == _top_keys(conn, cap)
    full_reads = usage.reads["full"]
    rng = random.Random(5)
    writer = SpendWriter(conn)
    keys = [r[0] for r in conn.execute('SELECT token FROM "LiteLLM_VerificationToken" ORDER BY token')]
    for hour in range(8):
        # Keys from the tail spend heavily for a while: the boundary of the shown set moves,
        # some entering from __other__, others leaving for it.
        clock.advance(hours=1)
        batch = []
        for token in rng.sample(keys, 6):
            spend = rng.uniform(0.5, 4.0) * (hour + 1)
            batch.append(Request(token, "gpt-4o", "gpt-4o", "openai", spend, 10, 10, clock.now - timedelta(minutes=3)))
        writer.record(*batch)
        writer.flush(clock.now)
        poll(exporter)
        samples = scrape(exporter)
        assert memberships(samples)["litellm_key"][0] - {"__other__"} == _top_keys(conn, cap), hour
        for family in ("litellm_key", "litellm_user", "litellm"):
            check_whole(conn, samples, family)
    assert usage.reads["full"] == full_reads  # all of it from the look-back and held totals
    assert usage.reads["entering"] > 0


def test_two_replicas_started_apart_and_a_restarted_one_publish_the_same_values(
    make_exporter, writer, rng, world, clock, conn, litellm_dsn
):
    load_history(writer, rng, world, clock, days=6)
    config = make_config(litellm_dsn, look_back=86400.0, full_resync_interval=30 * 86400.0)
    first = make_exporter(config)
    poll(first)
    for _ in range(3):
        clock.advance(days=1)
        flush_recent(writer, rng, world, clock, 40, timedelta(hours=5))
        poll(first)
    # The second started three days later: the first's old part grew a day at a time, the
    # second's was read at once; their sums must still agree exactly, not to the last bit but
    # in every bit, or a deduplicating Prometheus would see a counter fall.
    second = make_exporter(config)
    poll(second)
    poll(first)
    assert _usage(scrape(first)) == _usage(scrape(second))
    flush_recent(writer, rng, world, clock, 20, timedelta(minutes=10))
    restarted = make_exporter(config)
    poll(restarted)
    poll(first)
    assert _usage(scrape(first)) == _usage(scrape(restarted))
    assert mismatches(conn, scrape(first)) == []


def test_an_index_on_updated_at_catches_old_changes_at_the_next_resync(make_exporter, writer, rng, world, clock, conn):
    load_history(writer, rng, world, clock, days=10)
    conn.execute('CREATE INDEX daily_user_updated ON "LiteLLM_DailyUserSpend" (updated_at)')
    exporter = make_exporter(look_back=86400.0)
    usage = collector(exporter, "usage")
    poll(exporter)
    spend = _spend(scrape(exporter))
    reads = dict(usage.reads)
    _bump(conn, 7, clock)  # far before the look-back
    clock.advance(hours=1)
    poll(exporter)
    samples = scrape(exporter)
    assert _spend(samples) == pytest.approx(spend + 1000, abs=1e-6)
    assert mismatches(conn, samples) == []
    # That table alone was read again in full; the others only their look-back.
    assert usage.reads["full"] == reads["full"] + 1
    assert usage.reads["updated_at"] > reads.get("updated_at", 0)
    # Nothing changed since: the next resync reads no table in full.
    clock.advance(hours=1)
    poll(exporter)
    assert usage.reads["full"] == reads["full"] + 1


@pytest.mark.parametrize("when", ["resync", "full read"])
def test_a_failed_resync_publishes_nothing_partial(make_exporter, writer, rng, world, clock, conn, litellm_dsn, when):
    load_history(writer, rng, world, clock, days=6)
    config = parse({"database": {"dsn": litellm_dsn, "statement_timeout": "1s"}})
    exporter = make_exporter(config)
    usage = collector(exporter, "usage")
    assert exporter.runner.poll_once(usage)
    flush_recent(writer, rng, world, clock, 40, timedelta(days=2))
    before = _usage(scrape(exporter))
    with psycopg.connect(litellm_dsn) as locker:
        # The team table is read after the user table: the poll fails half way through.
        locker.execute('LOCK TABLE "LiteLLM_DailyTeamSpend" IN ACCESS EXCLUSIVE MODE')
        clock.advance(days=1) if when == "full read" else clock.advance(hours=1)
        assert not exporter.runner.poll_once(usage)
        assert _usage(scrape(exporter)) == before
    assert exporter.runner.poll_once(usage)
    assert mismatches(conn, scrape(exporter)) == []


def test_a_full_read_on_two_connections_reads_one_snapshot(make_exporter, writer, rng, world, clock, conn, litellm_dsn):
    load_history(writer, rng, world, clock, days=4)
    exporter = make_exporter(read_connections=2)
    usage = collector(exporter, "usage")
    team_spend = conn.execute('SELECT sum(spend) FROM "LiteLLM_DailyTeamSpend"').fetchone()[0]
    with psycopg.connect(litellm_dsn) as locker:
        locker.execute('LOCK TABLE "LiteLLM_DailyTeamSpend" IN ACCESS EXCLUSIVE MODE')
        done = threading.Event()
        thread = threading.Thread(target=lambda: (exporter.runner.poll_once(usage), done.set()))
        thread.start()
        try:
            # The full read's snapshot is taken; it waits on the team table. A row committed now
            # must not be seen by it, whichever connection reads the team table.
            deadline = time.monotonic() + 10
            while "full read" not in (usage.progress or "") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert "full read" in (usage.progress or "")
            reasons = exporter.runner.not_ready()
            assert any("usage (full read:" in r for r in reasons), reasons
            locker.execute(
                'INSERT INTO "LiteLLM_DailyTeamSpend" (id, team_id, date, api_key, model, model_group,'
                " custom_llm_provider, mcp_namespaced_tool_name, endpoint, spend, prompt_tokens, completion_tokens,"
                " api_requests, successful_requests, failed_requests, updated_at)"
                " VALUES ('late-row', 'team-late', %s, 'k', 'm', 'gpt-4o', 'openai', '', '/chat/completions',"
                " 777, 1, 1, 1, 1, 0, now())",
                (clock.now.date().isoformat(),),
            )
        finally:
            locker.commit()
            thread.join(timeout=30)
    assert done.is_set()
    samples = scrape(exporter)
    assert sum(samples["litellm_team_spend_usd_total"].values()) == pytest.approx(team_spend, abs=1e-6)
    assert usage.reads["helper"] > 0
    clock.advance(seconds=30)
    poll(exporter)
    assert mismatches(conn, scrape(exporter)) == []


def test_a_server_that_exports_no_snapshot_is_read_on_one_connection(
    make_exporter, exporter_role_dsn, writer, rng, world, clock, conn, caplog
):
    load_history(writer, rng, world, clock, days=4)
    # The role may not export a snapshot (as some managed servers and poolers refuse it).
    conn.execute("REVOKE EXECUTE ON FUNCTION pg_export_snapshot() FROM PUBLIC")
    exporter = make_exporter(parse({"database": {"dsn": exporter_role_dsn, "statement_timeout": "5s"}}))
    usage = collector(exporter, "usage")
    with caplog.at_level("INFO", logger="exporter"):
        assert exporter.runner.poll_once(usage)
        usage.request_resync()
        assert exporter.runner.poll_once(usage)  # a second full read does not try again
    said = [r.getMessage() for r in caplog.records if "does not share snapshots" in r.getMessage()]
    assert len(said) == 1, said
    assert "pg_export_snapshot" in said[0]
    assert usage.reads["full"] > 0 and usage.reads["helper"] == 0
    assert mismatches(conn, scrape(exporter)) == []


def test_a_long_full_read_says_how_far_it_is(make_exporter, writer, rng, world, clock, conn, caplog, monkeypatch):
    load_history(writer, rng, world, clock, days=3)
    monkeypatch.setattr(usage_engine, "PROGRESS_EVERY", 0.0)  # every table is "long" now
    exporter = make_exporter(read_connections=1)
    usage = collector(exporter, "usage")
    with caplog.at_level("INFO", logger="exporter"):
        assert exporter.runner.poll_once(usage)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("usage: ")]
    (done,) = [line for line in lines if " tables read in full (" in line]
    tables = int(done.split()[1])
    assert tables >= 5, done  # the spend logs and the daily tables
    under_way = [line for line in lines if line.startswith("usage: full read under way: ")]
    assert [int(line.split(": ")[2].split(" of ")[0]) for line in under_way] == list(range(1, tables))
    assert all(f" of {tables} tables read (" in line and " rows), " in line for line in under_way), under_way
    assert usage.progress is None  # done: /ready and the status page say nothing more
