"""The installed command, run as a user runs it, against the real database."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.demo.traffic import random_requests

from .support.ground_truth import mismatches
from .support.process import Running, free_port, with_password


@pytest.fixture
def running(tmp_path):
    started: list[Running] = []

    def start(dsn: str, *extra: str, **kwargs) -> Running:
        process = Running(tmp_path, dsn, *extra, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()


def test_command_serves_counters_that_match_the_database(running, litellm_dsn, writer, rng, world, conn):
    now = datetime.now(timezone.utc)
    writer.record(*random_requests(rng, world, 300, now - timedelta(days=6), now))
    writer.flush(now)
    exporter = running(with_password(litellm_dsn, "hunter2-secret"))
    exporter.wait_for("/ready", 200)
    assert mismatches(conn, exporter.samples()) == []

    writer.record(*random_requests(rng, world, 50, now - timedelta(minutes=2), datetime.now(timezone.utc)))
    writer.flush()
    deadline = time.monotonic() + 10
    while mismatches(conn, exporter.samples()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert mismatches(conn, exporter.samples()) == []

    samples = exporter.samples()
    assert samples["litellm_db_up"] == {frozenset(): 1.0}
    assert samples["litellm_exporter_collector_success"] == {
        frozenset({("collector", name)}): 1.0 for name in ("usage", "database", "budgets", "latency", "proxy_state")
    }
    assert set(samples["litellm_exporter_collector_duration_seconds"]) == set(
        samples["litellm_exporter_collector_last_success_timestamp_seconds"]
    )
    from exporter import __version__

    assert samples["litellm_exporter_build_info"] == {frozenset({("version", __version__)}): 1.0}

    started = time.monotonic()
    assert exporter.stop() == 0
    assert time.monotonic() - started < 5
    log = exporter.stderr()
    assert "hunter2-secret" not in log
    assert "Traceback" not in log
    assert "password=***" in log


def test_landing_page_health_and_unknown_paths(running, litellm_dsn):
    exporter = running(litellm_dsn)
    exporter.wait_for("/ready", 200)
    status, page = exporter.get("/")
    assert status == 200 and 'href="metrics"' in page
    assert exporter.get("/healthz") == (200, "ok\n")
    assert exporter.get("/nope")[0] == 404
    request = urllib.request.Request(
        f"http://127.0.0.1:{exporter.port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read().decode()
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")
    assert "_created" not in body


def test_starts_and_reports_down_when_the_database_is_unreachable(running):
    port = free_port()  # nothing listens there
    exporter = running(f"postgresql://litellm:pw@127.0.0.1:{port}/litellm")
    exporter.wait_for("/healthz", 200)
    deadline = time.monotonic() + 15
    while exporter.samples().get("litellm_db_up") != {frozenset(): 0.0} and time.monotonic() < deadline:
        time.sleep(0.2)
    samples = exporter.samples()
    assert samples["litellm_db_up"] == {frozenset(): 0.0}
    assert samples["litellm_exporter_collector_success"][frozenset({("collector", "usage")})] == 0.0
    assert exporter.get("/ready")[0] == 503
    assert exporter.stop() == 0
    assert "Traceback" not in exporter.stderr()


def test_refuses_to_start_when_the_database_is_required_and_unreachable(running):
    port = free_port()
    exporter = running(f"postgresql://litellm:pw@127.0.0.1:{port}/litellm", is_required=True)
    assert exporter.process.wait(timeout=30) == 1
    err = exporter.stderr()
    assert err.count("\n") == 1
    assert err.startswith("litellm-exporter: database.is_required is true and the database at ")
    assert "pw@" not in err and "password=***" in err


@pytest.fixture
def full_role(conn):
    """A role that may log in but has no connection left: the server answers "too many"."""
    name = f"litellm_exporter_full_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {name} LOGIN CONNECTION LIMIT 0")
    yield name
    conn.execute(f"DROP ROLE {name}")


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        ({"port": "refused"}, "connection refused by 127.0.0.1:{port} (nothing listens there"),
        ({"user": "no_such_role_here"}, 'authentication failed: role "no_such_role_here" does not exist'),
        ({"dbname": "no_such_database_here"}, 'the database "no_such_database_here" does not exist on'),
        ({"user": "full"}, "has too many clients already (max_connections)"),
        ({"sslmode": "require"}, "TLS: server does not support SSL, but SSL was required"),
        ({"host": "no-such-host.invalid"}, "the host name no-such-host.invalid could not be resolved"),
    ],
    ids=["refused", "role", "database", "too-many", "tls", "name"],
)
def test_a_connection_error_says_what_happened(running, litellm_dsn, full_role, change, cause):
    params = conninfo_to_dict(litellm_dsn)
    port = free_port()
    if change.get("port") == "refused":
        change = {"port": str(port)}
    if change.get("user") == "full":
        change = {"user": full_role}
    dsn = make_conninfo(**{**params, **change})
    exporter = running(dsn, is_required=True)
    assert exporter.process.wait(timeout=30) == 1
    err = exporter.stderr()
    assert err.count("\n") == 1, err
    assert err.startswith("litellm-exporter: database.is_required is true and the database at "), err
    assert cause.format(port=port) in err, err


def test_the_log_says_why_once_while_the_exporter_retries(running):
    port = free_port()  # nothing listens there
    exporter = running(f"postgresql://litellm:pw@127.0.0.1:{port}/litellm")
    exporter.wait_for("/healthz", 200)
    time.sleep(3)  # ten polls of every collector, and the watcher's tries
    assert exporter.stop() == 0
    lines = [line for line in exporter.stderr().splitlines() if "connection refused by" in line]
    # One line from the watcher, and one per database collector as it starts failing: never one
    # per poll (usage, budgets, latency, database, proxy_state).
    assert lines and len(lines) <= 1 + 5, lines
    assert all(f"connection refused by 127.0.0.1:{port}" in line for line in lines)
    assert "Traceback" not in exporter.stderr()
