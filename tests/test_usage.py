"""The usage counters equal the database's sums, whatever LiteLLM's writes look like."""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime, timedelta, timezone

import psycopg

from exporter.config import parse
from exporter.demo.entities import Entities
from exporter.demo.traffic import Request, random_request, random_requests
from exporter.demo.writer import SpendWriter

from .support.exporters import collector, make_config, poll, scrape
from .support.ground_truth import mismatches
from .support.history import flush_recent, load_history


def test_counters_equal_database_after_history_load(make_exporter, writer, rng, world, clock, conn):
    load_history(writer, rng, world, clock)
    exporter = make_exporter()
    poll(exporter)
    samples = scrape(exporter)
    assert mismatches(conn, samples) == []
    # The comparison above is only as good as the data: make sure every family has series.
    for name in (
        "litellm_spend_usd_total",
        "litellm_key_spend_usd_total",
        "litellm_team_requests_total",
        "litellm_organization_input_tokens_total",
        "litellm_end_user_output_tokens_total",
        "litellm_tag_requests_failed_total",
        "litellm_user_spend_usd_total",
        "litellm_cache_read_input_tokens_total",
    ):
        assert len(samples[name]) >= 2, name
    assert sum(samples["litellm_spend_usd_total"].values()) > 1.0


def test_counters_follow_live_batched_writes_and_late_rows(make_exporter, writer, rng, world, clock, conn):
    load_history(writer, rng, world, clock, days=5)
    exporter = make_exporter()
    poll(exporter)
    for _ in range(6):
        clock.advance(seconds=15)
        # A flush holds requests that started up to ten minutes ago (long streams) and
        # rows that a Redis-buffered pod held back for an hour.
        batch = random_requests(rng, world, 40, clock.now - timedelta(minutes=10), clock.now)
        batch += random_requests(rng, world, 5, clock.now - timedelta(hours=1), clock.now - timedelta(minutes=55))
        writer.record(*batch)
        writer.flush(clock.now)
        poll(exporter)
        assert mismatches(conn, scrape(exporter)) == []


def test_counters_survive_a_restart_without_dipping(make_exporter, writer, rng, world, clock, conn):
    load_history(writer, rng, world, clock, days=3)
    first = make_exporter()
    poll(first)
    before = scrape(first)
    writer.record(*random_requests(rng, world, 100, clock.now - timedelta(minutes=5), clock.now))
    writer.flush(clock.now)
    restarted = make_exporter()
    poll(restarted)
    after = scrape(restarted)
    assert mismatches(conn, after) == []
    for name, series in before.items():
        if name.endswith("_total") and name.startswith("litellm_") and not name.startswith("litellm_exporter"):
            for labels, value in series.items():
                assert after[name][labels] >= value, (name, dict(labels))
    # Two replicas reading the same database publish the same numbers.
    poll(first)
    assert _usage(scrape(first)) == _usage(after)


def _usage(samples):
    return {
        n: s
        for n, s in samples.items()
        if n.startswith("litellm_") and n.endswith("_total") and not n.startswith("litellm_exporter")
    }


def test_counters_exact_across_utc_midnight(make_exporter, writer, rng, world, clock, conn):
    clock.now = datetime(2026, 11, 20, 23, 59, 30, tzinfo=timezone.utc)
    load_history(writer, rng, world, clock, days=3)
    exporter = make_exporter(late_margin=3600.0)
    poll(exporter)

    clock.advance(minutes=1)  # 00:00:30 on the 21st
    # The flush just after midnight carries requests that started on the 20th.
    late = random_requests(rng, world, 30, clock.now - timedelta(minutes=3), clock.now - timedelta(seconds=45))
    assert {r.start_time.date().isoformat() for r in late} == {"2026-11-20"}
    fresh = random_requests(rng, world, 30, clock.now - timedelta(seconds=30), clock.now)
    writer.record(*late, *fresh)
    writer.flush(clock.now)
    poll(exporter)
    assert mismatches(conn, scrape(exporter)) == []

    # Two days on, the 20th has left the window: its rows move into the base, unchanged.
    for _ in range(3):
        clock.advance(days=1)
        flush_recent(writer, rng, world, clock, 20, timedelta(hours=2))
        poll(exporter)
        assert mismatches(conn, scrape(exporter)) == []


def test_rows_before_the_look_back_are_counted_at_the_next_full_read(make_exporter, writer, rng, world, clock, conn):
    load_history(writer, rng, world, clock, days=10)
    exporter = make_exporter(resync_interval=3600.0, look_back=2 * 86400.0, full_resync_interval=86400.0)
    usage = collector(exporter, "usage")
    poll(exporter)
    spend = sum(scrape(exporter)["litellm_spend_usd_total"].values())

    # A row far older than the look-back changes behind the incremental reads' backs.
    old_date = (clock.now - timedelta(days=7)).date().isoformat()
    changed = conn.execute(
        'UPDATE "LiteLLM_DailyUserSpend" SET spend = spend + 1000 WHERE id = '
        '(SELECT id FROM "LiteLLM_DailyUserSpend" WHERE date = %s LIMIT 1)',
        (old_date,),
    ).rowcount
    assert changed == 1
    # Neither a poll nor the hourly resync reads that date...
    clock.advance(minutes=5)
    poll(exporter)
    assert sum(scrape(exporter)["litellm_spend_usd_total"].values()) == spend
    clock.advance(hours=1)
    poll(exporter)
    assert usage.reads["look_back"] > 0
    assert sum(scrape(exporter)["litellm_spend_usd_total"].values()) == spend
    # ...the next full read (daily, on UTC midnight) counts it.
    full_reads = usage.reads["full"]
    clock.now = clock.now.replace(hour=0, minute=0, second=30) + timedelta(days=1)
    poll(exporter)
    assert usage.reads["full"] > full_reads
    samples = scrape(exporter)
    assert abs(sum(samples["litellm_spend_usd_total"].values()) - (spend + 1000)) < 1e-6
    assert mismatches(conn, samples) == []


def test_duplicate_rows_for_one_group_are_all_counted(make_exporter, writer, world, clock, conn):
    # A NULL endpoint defeats the upsert's conflict target: each flush adds a row.
    caller = world.callers[0]
    for i in range(3):
        writer.record(
            Request(
                caller.api_key,
                "gpt-4o",
                "gpt-4o",
                "openai",
                0.25,
                10,
                5,
                clock.now,
                team_id=caller.team_id,
                user_id=caller.user_id,
                endpoint=None,
            )
        )
        writer.flush(clock.now + timedelta(seconds=i))
    rows = conn.execute(
        'SELECT count(*) FROM "LiteLLM_DailyUserSpend" WHERE api_key = %s AND endpoint IS NULL', (caller.api_key,)
    ).fetchone()[0]
    assert rows == 3
    exporter = make_exporter()
    poll(exporter)
    samples = scrape(exporter)
    assert mismatches(conn, samples) == []
    key_series = [
        v for labels, v in samples["litellm_key_spend_usd_total"].items() if ("key_hash", caller.api_key[:12]) in labels
    ]
    assert key_series == [0.75]


def test_renamed_alias_leaves_one_series_per_id(make_exporter, writer, rng, world, clock, conn, entities):
    load_history(writer, rng, world, clock, days=2)
    exporter = make_exporter()
    poll(exporter)
    caller = next(c for c in world.callers if c.team_id)
    entities.rename_key(caller.api_key, "renamed key")
    entities.rename_team(caller.team_id, "Renamed team")
    poll(exporter)
    samples = scrape(exporter)
    assert mismatches(conn, samples) == []
    key_aliases = {
        dict(labels)["key_alias"]
        for labels in samples["litellm_key_spend_usd_total"]
        if dict(labels)["key_hash"] == caller.api_key[:12]
    }
    assert key_aliases == {"renamed key"}
    team_aliases = {
        dict(labels)["team_alias"]
        for labels in samples["litellm_team_spend_usd_total"]
        if dict(labels)["team_id"] == caller.team_id
    }
    assert team_aliases == {"Renamed team"}


def test_deleted_key_and_team_keep_their_history(make_exporter, writer, rng, world, clock, conn, entities):
    load_history(writer, rng, world, clock, days=2)
    caller = next(c for c in world.callers if c.team_id)
    exporter = make_exporter()
    poll(exporter)
    before = scrape(exporter)
    entities.delete_key(caller.api_key)
    entities.delete_team(caller.team_id)
    poll(exporter)
    after = scrape(exporter)
    assert mismatches(conn, after) == []
    for name in ("litellm_key_spend_usd_total", "litellm_team_spend_usd_total"):
        assert before[name] == after[name]


def test_labels_with_quotes_backslashes_newlines_and_non_ascii(make_exporter, writer, entities, clock, conn):
    team = entities.team("t-odd", 'Équipe "north" \\ ops\nsecond line')
    token = entities.key("sk-odd", 'clé "ünïcode" \\', team_id=team)
    writer.record(
        Request(
            token,
            'group "x"',
            "m\\1",
            "prov\nider",
            1.5,
            100,
            50,
            clock.now,
            team_id=team,
            tags=('tag "q"', "back\\slash", "日本語"),
            end_user="end\nuser",
        )
    )
    writer.flush(clock.now)
    exporter = make_exporter()
    poll(exporter)
    samples = scrape(exporter)
    assert mismatches(conn, samples) == []
    assert samples["litellm_team_spend_usd_total"] == {
        frozenset(
            {("team_id", "t-odd"), ("team_alias", 'Équipe "north" \\ ops\nsecond line'), ("model_group", 'group "x"')}
        ): 1.5
    }
    assert {dict(labels)["tag"] for labels in samples["litellm_tag_requests_total"]} == {
        'tag "q"',
        "back\\slash",
        "日本語",
    }


def test_model_group_label_can_be_switched_off_per_entity(make_exporter, writer, rng, world, clock, conn, litellm_dsn):
    load_history(writer, rng, world, clock, days=2)
    config = make_config(litellm_dsn)
    entities = dict(config.usage.entities)
    entities["team"] = dataclasses.replace(entities["team"], model_group=False)
    entities["end_user"] = dataclasses.replace(entities["end_user"], model_group=True)
    entities["tag"] = dataclasses.replace(entities["tag"], enabled=False)
    exporter = make_exporter(dataclasses.replace(config, usage=dataclasses.replace(config.usage, entities=entities)))
    poll(exporter)
    samples = scrape(exporter)
    team_labels = {frozenset(dict(labels)) for labels in samples["litellm_team_spend_usd_total"]}
    assert team_labels == {frozenset({"team_id", "team_alias"})}
    end_user_labels = {frozenset(dict(labels)) for labels in samples["litellm_end_user_spend_usd_total"]}
    assert end_user_labels == {frozenset({"end_user", "model_group"})}
    assert not any(name.startswith("litellm_tag_") for name in samples)
    # Without model_group the team family is the per-team total.
    want = dict(
        conn.execute("""SELECT coalesce(team_id, ''), sum(spend) FROM "LiteLLM_DailyTeamSpend" GROUP BY 1""").fetchall()
    )
    got = {dict(labels)["team_id"]: value for labels, value in samples["litellm_team_spend_usd_total"].items()}
    assert got.keys() == want.keys()
    for team_id, value in want.items():
        assert abs(got[team_id] - value) <= 1e-9 * max(1.0, value)


def test_default_labels_and_key_hash_prefix(make_exporter, writer, rng, world, clock):
    load_history(writer, rng, world, clock, days=1)
    exporter = make_exporter()
    poll(exporter)
    samples = scrape(exporter)
    label_sets = {name: {frozenset(dict(labels)) for labels in series} for name, series in samples.items()}
    assert label_sets["litellm_spend_usd_total"] == {frozenset({"model_group", "model", "provider"})}
    assert label_sets["litellm_key_spend_usd_total"] == {frozenset({"key_hash", "key_alias", "team_id", "model_group"})}
    assert label_sets["litellm_end_user_spend_usd_total"] == {frozenset({"end_user"})}
    hashes = {dict(labels)["key_hash"] for labels in samples["litellm_key_spend_usd_total"]}
    assert hashes and all(len(h) == 12 and int(h, 16) >= 0 for h in hashes)
    assert not [name for name in samples if name.endswith("_created")]


def test_a_team_less_request_counts_under_the_empty_team(make_exporter, writer, world, clock, conn):
    caller = next(c for c in world.callers if not c.team_id)
    writer.record(Request(caller.api_key, "gpt-4o", "gpt-4o", "openai", 2.0, 1, 1, clock.now))
    writer.flush(clock.now)
    exporter = make_exporter()
    poll(exporter)
    samples = scrape(exporter)
    assert samples["litellm_team_spend_usd_total"] == {
        frozenset({("team_id", ""), ("team_alias", ""), ("model_group", "gpt-4o")}): 2.0
    }
    assert mismatches(conn, samples) == []


def test_exporter_connections_are_read_only_with_a_server_side_timeout(make_exporter, litellm_dsn):
    exporter = make_exporter(parse({"database": {"dsn": litellm_dsn, "statement_timeout": "1500ms"}}))
    with exporter.db.snapshot() as reader:
        assert reader.execute("SHOW transaction_read_only").fetchone()[0] == "on"
        assert reader.execute("SHOW statement_timeout").fetchone()[0] == "1500ms"
        assert reader.execute("SELECT current_setting('application_name')").fetchone()[0] == "litellm-exporter"
    try:
        with exporter.db.snapshot() as reader:
            reader.execute("""UPDATE "LiteLLM_TeamTable" SET spend = 0""")
    except psycopg.errors.ReadOnlySqlTransaction:
        pass
    else:
        raise AssertionError("a write through the exporter's pool succeeded")


def test_random_traffic_soak(make_exporter, litellm_dsn, clock, conn):
    # A second seed and shape, interleaving polls with flushes across two midnights.
    rng = random.Random(7)
    from exporter.demo.entities import seed_world

    world = seed_world(conn, rng, organizations=3, teams=7, users=9, keys=25, end_users=12)
    writer = SpendWriter(conn)
    exporter = make_exporter(late_margin=3600.0)
    for _ in range(12):
        clock.advance(hours=5)
        writer.record(
            *(
                random_request(rng, world, clock.now - timedelta(minutes=rng.randint(0, 90)))
                for _ in range(rng.randint(1, 60))
            )
        )
        writer.flush(clock.now)
        poll(exporter)
        assert mismatches(conn, scrape(exporter)) == []
    Entities(conn)  # the helper is importable alongside the writer


def test_a_table_that_appears_later_is_picked_up_without_waiting_for_the_resync(
    make_exporter, writer, rng, world, clock, conn
):
    # The exporter may start before the proxy has run its migrations.
    conn.execute('ALTER TABLE "LiteLLM_DailyTagSpend" RENAME TO "LiteLLM_DailyTagSpend_later"')
    load_history(writer_without_tags(conn), rng, world, clock, days=2)
    exporter = make_exporter(resync_interval=86400.0, source="daily_tables")
    poll(exporter)
    assert "litellm_tag_spend_usd_total" not in scrape(exporter)
    conn.execute('ALTER TABLE "LiteLLM_DailyTagSpend_later" RENAME TO "LiteLLM_DailyTagSpend"')
    # Today's traffic: a row for an earlier day landing hours late is the resync's to find.
    load_history(writer, rng, world, clock, days=0.25)
    clock.advance(minutes=1)
    poll(exporter)
    samples = scrape(exporter)
    assert samples["litellm_tag_spend_usd_total"]
    assert mismatches(conn, samples) == []


def writer_without_tags(conn):
    """A writer for a database whose tag table is not there yet."""
    return SpendWriter(conn, without={"LiteLLM_DailyTagSpend"})


def test_a_poll_with_nothing_committed_since_reads_no_table(
    make_exporter, writer, rng, world, clock, conn, litellm_dsn
):
    load_history(writer, rng, world, clock, days=2)
    exporter = make_exporter(parse({"database": {"dsn": litellm_dsn, "statement_timeout": "1s"}}))
    by_name = {c.name: c for c in exporter.runner.collectors}
    for name in ("usage", "budgets", "latency"):
        assert exporter.runner.poll_once(by_name[name])
    before = scrape(exporter)
    with psycopg.connect(litellm_dsn) as locker:
        # A lock takes no transaction id: the database's snapshot is the one the last poll read.
        for table in (
            "LiteLLM_DailyUserSpend",
            "LiteLLM_DailyTeamSpend",
            "LiteLLM_VerificationToken",
            "LiteLLM_SpendLogs",
        ):
            locker.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
        clock.advance(seconds=30)
        for name in ("usage", "budgets", "latency"):
            assert exporter.runner.poll_once(by_name[name]), name  # a query would wait past its timeout
    after = scrape(exporter)
    assert _usage(after) == _usage(before)
    # A commit is seen by the next poll.
    writer.record(*random_requests(rng, world, 20, clock.now - timedelta(minutes=1), clock.now))
    writer.flush(clock.now)
    poll(exporter)
    assert mismatches(conn, scrape(exporter)) == []
