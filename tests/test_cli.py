"""The installed command, run as a user runs it, against the real database."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
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


def held_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("{held}", "cannot listen on 127.0.0.1:{port}: the port is in use (is another exporter running?)"),
        # TEST-NET-1 (RFC 5737): never an address of this machine; nothing is sent to it.
        ("192.0.2.1:8748", "cannot listen on 192.0.2.1:8748: the address is not one of this machine's"),
        ("no-such-host.invalid:8748", "cannot listen on no-such-host.invalid:8748: the host name"),
    ],
)
@pytest.mark.parametrize("command", [[], ["demo"]])
def test_a_listen_address_that_cannot_be_served_is_one_line(tmp_path, command, listen, message):
    held, port = held_port()
    try:
        address = listen.format(held=f"127.0.0.1:{port}")
        result = subprocess.run(
            [sys.executable, "-m", "exporter.cli", *command, "--listen", address]
            + ([] if command else ["--dsn", "postgresql://x@127.0.0.1:1/x"]),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    finally:
        held.close()
    prog = "litellm-exporter demo" if command else "litellm-exporter"
    assert result.returncode == 1
    assert result.stderr.startswith(f"{prog}: {message.format(port=port)}"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "{web}: no such file"),
        ("tls_server_config:\n  cert_file: gone.crt\n  key_file: gone.key\n", "{web}: tls_server_config.cert_file"),
        ("basic_auth_users: [\n", "{web}: invalid YAML"),
    ],
)
def test_a_web_config_that_cannot_be_read_is_one_line(tmp_path, text, message):
    web = tmp_path / "web.yml"
    if text is not None:
        web.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "--dsn", "postgresql://x@127.0.0.1:1/x", "--web-config", str(web)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"litellm-exporter: {message.format(web=web)}"), result.stderr
    assert result.stderr.count("\n") == 1


def test_an_unreachable_database_is_named_once_and_the_same_everywhere(running):
    port = free_port()  # nothing listens there
    exporter = running(f"postgresql://litellm:pw@127.0.0.1:{port}/litellm")
    refused = f"connection refused by 127.0.0.1:{port}"

    def all_failed() -> bool:
        status = json.loads(exporter.get("/status")[1])
        return all(c["last_error"] for c in status["collectors"] if c["enabled"])

    exporter.wait_until(all_failed)
    status = json.loads(exporter.get("/status")[1])
    errors = {c["last_error"] for c in status["collectors"] if c["enabled"]}
    assert len(errors) == 1
    error = errors.pop()
    assert error.startswith("database_unavailable: cannot connect to") and refused in error
    assert error.count("database_unavailable") == 1
    assert status["database"]["problem"] and refused in status["database"]["problem"]
    code, body = exporter.get("/ready")
    enabled = [c["name"] for c in status["collectors"] if c["enabled"]]
    assert (code, body) == (503, f"collectors {', '.join(enabled)} failed: {error}\n")
    code, page = exporter.get("/")
    assert refused in page and "off" in page  # the proxy probe, off by default, is not a failure
    time.sleep(2)
    assert exporter.stop() == 0
    lines = [line for line in exporter.stderr().splitlines() if refused in line]
    assert len(lines) == 1, lines
    assert "Traceback" not in exporter.stderr()


def test_help_shows_the_demo_and_the_listen_default(capsys):
    from exporter.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("usage: litellm-exporter [options] litellm-exporter demo [demo options]")
    assert "default: 127.0.0.1:8748" in out
