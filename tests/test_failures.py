"""When the database goes away, slows down or was never there, the exporter keeps serving."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from datetime import timedelta

import psycopg

from exporter.app import Exporter
from exporter.config import parse

from .support.exporters import scrape
from .support.ground_truth import mismatches
from .support.history import load_history
from .support.process import free_port


def config_for(dsn: str, **database: object):
    return parse({"database": {"dsn": dsn, "connect_timeout": "1s", "statement_timeout": "5s", **database}})


def polls(exporter: Exporter) -> dict[str, bool]:
    return {c.name: exporter.runner.poll_once(c) for c in exporter.runner.collectors}


def test_database_outage_keeps_counters_drops_stale_gauges_and_recovers_exactly(
    make_exporter, proxied_dsn, tcp_proxy, writer, rng, world, clock, conn, entities, caplog
):
    entities.team("budgeted", "Budgeted", max_budget=100.0)
    load_history(writer, rng, world, clock, days=3)
    config = dataclasses.replace(config_for(proxied_dsn), max_gauge_age=0.5)
    exporter = make_exporter(config)
    assert all(polls(exporter).values())
    before = scrape(exporter)
    assert before["litellm_db_up"] == {frozenset(): 1.0}
    assert "litellm_team_max_budget_usd" in before

    caplog.set_level(logging.INFO, logger="exporter.runner")
    tcp_proxy.set_mode("down")
    # LiteLLM keeps writing while the exporter cannot see the database.
    writer.record(*rng_requests(rng, world, clock))
    writer.flush(clock.now)
    for _ in range(3):
        assert not any(polls(exporter).values())
    during = scrape(exporter)
    assert during["litellm_db_up"] == {frozenset(): 0.0}
    success = during["litellm_exporter_collector_success"]
    assert set(success.values()) == {0.0}
    failures = during["litellm_exporter_collector_failures_total"]
    assert failures[frozenset({("collector", "usage"), ("reason", "database_unavailable")})] == 3.0
    # The usage counters are still true: they are served as last read.
    for name, series in before.items():
        if name.startswith("litellm_") and name.endswith("_total") and not name.startswith("litellm_exporter"):
            assert during[name] == series, name
    # One log line for the whole outage: not one per poll, nor one per collector; it names the
    # address and why, and every collector's status says the same.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"cannot connect to {exporter.db.display_dsn}: server closed the connection" in warnings[0]
    errors = {c.error for c in exporter.runner.status() if c.enabled}
    assert len(errors) == 1 and errors.pop() in warnings[0]
    assert all("Traceback" not in r.getMessage() and not r.exc_info for r in caplog.records)

    time.sleep(0.6)  # past max_gauge_age
    stale = scrape(exporter)
    assert "litellm_team_max_budget_usd" not in stale
    assert stale["litellm_db_up"] == {frozenset(): 0.0}  # reported on every failed probe, never stale
    assert "litellm_spend_usd_total" in stale

    tcp_proxy.set_mode("up")
    deadline = time.monotonic() + 15
    while not all(polls(exporter).values()):
        assert time.monotonic() < deadline, "no recovery"
        time.sleep(0.2)
    after = scrape(exporter)
    assert after["litellm_db_up"] == {frozenset(): 1.0}
    assert mismatches(conn, after) == []
    assert "litellm_team_max_budget_usd" in after
    infos = [r for r in caplog.records if r.levelno == logging.INFO and "recovered" in r.getMessage()]
    assert len(infos) == 1, [r.getMessage() for r in infos]


def rng_requests(rng, world, clock):
    from exporter.demo.traffic import random_requests

    return random_requests(rng, world, 40, clock.now - timedelta(minutes=5), clock.now)


def test_scrapes_answer_while_every_poll_hangs_on_the_database(make_exporter, proxied_dsn, tcp_proxy, litellm_dsn):
    exporter = make_exporter(config_for(proxied_dsn, max_conns=8))
    assert all(polls(exporter).values())
    tcp_proxy.set_mode("hang")  # connections open but nothing ever comes back
    threads = [
        threading.Thread(target=exporter.runner.poll_once, args=(c,), daemon=True) for c in exporter.runner.collectors
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    assert any(thread.is_alive() for thread in threads), "the polls should be stuck on the database"
    started = time.perf_counter()
    body = exporter.exposition.render("")[0]
    assert time.perf_counter() - started < 1.0
    assert b"litellm_db_up 1.0" in body


def test_statement_timeout_cancels_on_the_server_and_spares_other_collectors(make_exporter, litellm_dsn, conn):
    exporter = make_exporter(parse({"database": {"dsn": litellm_dsn, "statement_timeout": "1s"}}))
    by_name = {c.name: c for c in exporter.runner.collectors}
    assert exporter.runner.poll_once(by_name["usage"])
    # A commit since that poll, or the next one would find nothing new to read.
    conn.execute("""INSERT INTO "LiteLLM_UserTable" (user_id) VALUES ('committed-since')""")
    with psycopg.connect(litellm_dsn) as locker:
        locker.execute('LOCK TABLE "LiteLLM_DailyTeamSpend" IN ACCESS EXCLUSIVE MODE')
        result: list[bool] = []
        thread = threading.Thread(target=lambda: result.append(exporter.runner.poll_once(by_name["usage"])))
        thread.start()
        waiting = wait_for_activity(conn, "state = 'active' AND wait_event_type = 'Lock'")
        assert waiting, "the exporter's query never reached the server"
        # Meanwhile another collector is not held up.
        assert exporter.runner.poll_once(by_name["database"])
        thread.join(timeout=10)
        assert result == [False]
        # The lock is still held: only the server's statement_timeout can have ended the query.
        assert activity(conn, "state = 'active'") == []
    samples = scrape(exporter)
    assert samples["litellm_exporter_collector_failures_total"] == {
        frozenset({("collector", "usage"), ("reason", "statement_timeout")}): 1.0
    }
    assert samples["litellm_exporter_collector_success"][frozenset({("collector", "usage")})] == 0.0
    assert samples["litellm_exporter_collector_success"][frozenset({("collector", "database")})] == 1.0
    assert exporter.runner.poll_once(by_name["usage"])


def activity(conn: psycopg.Connection, condition: str) -> list[tuple]:
    return conn.execute(
        "SELECT pid, state, wait_event_type, query FROM pg_stat_activity"
        f" WHERE application_name = 'litellm-exporter' AND datname = current_database() AND {condition}"
    ).fetchall()


def wait_for_activity(conn: psycopg.Connection, condition: str, timeout: float = 5.0) -> list[tuple]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = activity(conn, condition)
        if rows:
            return rows
        time.sleep(0.02)
    return []


def test_starts_with_the_database_down_then_recovers(proxied_dsn, tcp_proxy, writer, rng, world, clock, conn):
    load_history(writer, rng, world, clock, days=2)
    tcp_proxy.set_mode("down")
    config = config_for(proxied_dsn).with_overrides(listen=f"127.0.0.1:{free_port()}", poll_interval=0.2)
    exporter = Exporter(config, clock=clock)
    exporter.start()  # is_required is false: serve anyway
    try:
        deadline = time.monotonic() + 10
        while scrape(exporter).get("litellm_db_up") != {frozenset(): 0.0}:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not exporter.runner.ready()
        tcp_proxy.set_mode("up")
        deadline = time.monotonic() + 20
        while not exporter.runner.ready() or scrape(exporter).get("litellm_db_up") != {frozenset(): 1.0}:
            assert time.monotonic() < deadline, "did not recover"
            time.sleep(0.1)
        time.sleep(0.5)
        assert mismatches(conn, scrape(exporter)) == []
    finally:
        exporter.stop()


def test_polls_resume_within_two_seconds_of_a_long_outage(proxied_dsn, tcp_proxy, writer, rng, world, clock, conn):
    load_history(writer, rng, world, clock, days=2)
    # The shipped intervals (15s and 30s), and the pool's own timeouts.
    config = parse({"database": {"dsn": proxied_dsn}, "web": {"listen": f"127.0.0.1:{free_port()}"}})
    exporter = Exporter(config, clock=clock)
    exporter.start()
    try:
        deadline = time.monotonic() + 20
        while not exporter.runner.ready():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # Long enough that a reconnection backoff doubling from one second would have grown past
        # every interval: 1 + 2 + 4 + 8 + 16 seconds, and the next try 32 seconds on.
        tcp_proxy.set_mode("down")
        time.sleep(35)
        assert scrape(exporter)["litellm_db_up"] == {frozenset(): 0.0}
        tcp_proxy.set_mode("up")
        back = time.time()
        deadline = time.monotonic() + 10
        while True:
            stamps = scrape(exporter)["litellm_exporter_collector_last_success_timestamp_seconds"]
            latest = {dict(labels)["collector"]: value for labels, value in stamps.items()}
            if all(latest[name] > back for name in ("database", "usage", "budgets", "latency")):
                break
            assert time.monotonic() < deadline, f"not every collector polled again: {latest}, back at {back}"
            time.sleep(0.05)
        assert max(latest.values()) - back < 2.0, latest
        assert scrape(exporter)["litellm_db_up"] == {frozenset(): 1.0}
    finally:
        exporter.stop()
