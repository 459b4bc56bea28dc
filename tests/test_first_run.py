"""A new user's first run: no file, the database from the environment (or --dsn), the settings
people change from LITELLM_EXPORTER_* variables, --print-config, and a landing page and
/status that say whether it works, the database away included."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from exporter import cli
from exporter.config import ConfigError, parse
from exporter.config_file import ENVIRONMENT, resolve
from exporter.demo.schema import migration_files
from exporter.demo.traffic import random_requests

from .support.ground_truth import mismatches
from .support.process import Running, free_port, with_password

CLEAN = {name: None for name in ("LITELLM_DATABASE_URL", "DATABASE_URL", *ENVIRONMENT)}


@pytest.fixture
def environ(monkeypatch):
    """The process environment without any of the exporter's variables; set what a test needs."""
    for name in CLEAN:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def printed(capsys, *argv: str) -> dict:
    assert cli.main([*argv, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_runs_with_no_file_and_only_database_url(tmp_path, litellm_dsn, writer, rng, world, conn):
    now = datetime.now(timezone.utc)
    writer.record(*random_requests(rng, world, 200, now - timedelta(days=2), now))
    writer.flush(now)
    exporter = Running(tmp_path, "", config=False, environ={"DATABASE_URL": litellm_dsn})
    try:
        exporter.wait_for("/ready", 200)
        assert mismatches(conn, exporter.samples()) == []
        code, body = exporter.get("/status")
        assert code == 200
        status = json.loads(body)
        assert status["ready"] is True
        assert status["database"]["up"] is True
        # The schema it found: the newest migration Prisma recorded, and LiteLLM's tables.
        assert status["database"]["schema"]["migration"] == migration_files()[-1].parent.name
        assert status["database"]["schema"]["litellm_tables"] > 50
        assert {c["name"] for c in status["collectors"] if c["success"]} >= {"usage", "budgets", "database"}
        assert all(c["last_poll"] and c["last_error"] is None for c in status["collectors"] if c["enabled"])
        assert status["series"]["served"] > 100
        assert status["notes"] == []
        code, page = exporter.get("/")
        assert code == 200 and "Working" in page and "<script" not in page
        assert exporter.stop() == 0
    finally:
        if exporter.process.poll() is None:
            exporter.process.kill()


def test_the_database_from_flag_file_or_environment(environ, tmp_path):
    environ.setenv("DATABASE_URL", "postgresql://from-database-url/litellm")
    config, written = resolve(None)
    assert config.database.dsn == "postgresql://from-database-url/litellm"
    assert written == "os.environ/DATABASE_URL"  # a variable is named, never copied out
    environ.setenv("LITELLM_DATABASE_URL", "postgresql://from-litellm-database-url/litellm")
    assert resolve(None)[0].database.dsn == "postgresql://from-litellm-database-url/litellm"
    path = tmp_path / "config.yaml"
    path.write_text("database:\n  dsn: postgresql://from-the-file/litellm\nweb:\n  listen: ':9999'\n")
    assert resolve(path)[0].database.dsn == "postgresql://from-the-file/litellm"
    assert (
        resolve(path, dsn="postgresql://from-the-flag/litellm")[0].database.dsn == "postgresql://from-the-flag/litellm"
    )
    # A file without a database takes it from the environment too.
    path.write_text("web:\n  listen: ':9999'\n")
    assert resolve(path)[0].database.dsn == "postgresql://from-litellm-database-url/litellm"


def test_no_database_anywhere_is_one_line_and_exit_2(environ, capsys):
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err == (
        "litellm-exporter: database.dsn: no database given: pass --dsn URL, set LITELLM_DATABASE_URL or"
        " DATABASE_URL, or name it in a --config file\n"
    )
    with pytest.raises(ConfigError):
        resolve(None)


def test_environment_overrides_win_over_the_file_and_lose_to_flags(environ, capsys, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("database:\n  dsn: postgresql://db/litellm\nweb:\n  listen: 127.0.0.1:7000\n")
    assert printed(capsys, "--config", str(path))["web"]["listen"] == "127.0.0.1:7000"
    environ.setenv("LITELLM_EXPORTER_LISTEN", "0.0.0.0:7001")
    environ.setenv("LITELLM_EXPORTER_POLL_INTERVAL", "45s")
    document = printed(capsys, "--config", str(path))
    assert document["web"]["listen"] == "0.0.0.0:7001"
    assert {document["collectors"][c]["interval"] for c in ("usage", "budgets", "latency", "proxy")} == {"45s"}
    assert printed(capsys, "--config", str(path), "--listen", "127.0.0.1:7002")["web"]["listen"] == "127.0.0.1:7002"
    # The config file itself can come from the environment.
    environ.setenv("LITELLM_EXPORTER_CONFIG", str(path))
    assert printed(capsys)["database"]["dsn"] == "postgresql://db/litellm"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "LITELLM_EXPORTER_LOG_LEVEL",
            "loud",
            "LITELLM_EXPORTER_LOG_LEVEL: expected one of debug, info, warning, error, got 'loud'",
        ),
        (
            "LITELLM_EXPORTER_LISTEN",
            "nowhere",
            "LITELLM_EXPORTER_LISTEN: expected HOST:PORT with a port from 1 to 65535, got 'nowhere'",
        ),
        (
            "LITELLM_EXPORTER_POLL_INTERVAL",
            "soon",
            "LITELLM_EXPORTER_POLL_INTERVAL: invalid duration 'soon'"
            " (use a number of seconds or a unit: 500ms, 30s, 5m, 1h, 1d)",
        ),
    ],
)
def test_a_bad_variable_is_named_in_one_line(environ, capsys, variable, value, message):
    environ.setenv("DATABASE_URL", "postgresql://db/litellm")
    environ.setenv(variable, value)
    assert cli.main(["--check-config"]) == 2
    assert capsys.readouterr().err == f"litellm-exporter: {message}\n"


def test_print_config_round_trips(environ, capsys, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "database:\n  dsn: os.environ/LITELLM_DATABASE_URL\n  max_conns: 6\n"
        "web:\n  listen: '[::1]:9100'\n  request_timeout: 1500ms\n"
        "collectors:\n"
        "  usage:\n    late_margin: 2h\n    entities:\n      key: {max_series: 40, model_group: false}\n"
        "      tool: {enabled: false}\n"
        "  budgets:\n    entities:\n      team_member: {only_with_limits: false}\n"
        "  latency:\n    buckets: [0.5, 1, 30]\n"
        "  proxy:\n    targets: ['http://proxy-0:4000', 'http://proxy-1:4000']\n"
        "  proxy_state:\n    max_deployments: 20\n"
    )
    environ.setenv("LITELLM_DATABASE_URL", "postgresql://exporter@db:5432/litellm")
    environ.setenv("LITELLM_EXPORTER_POLL_INTERVAL", "20s")
    original, _ = resolve(path)
    original = original.with_overrides(poll_interval="20s")
    document = printed(capsys, "--config", str(path))
    assert document["database"]["dsn"] == "os.environ/LITELLM_DATABASE_URL"
    again = tmp_path / "printed.yaml"
    again.write_text(yaml.safe_dump(document))
    environ.delenv("LITELLM_EXPORTER_POLL_INTERVAL")
    assert resolve(again)[0] == original
    # And the defaults, from --dsn alone, the password redacted yet still accepted back.
    document = printed(capsys, "--dsn", "postgresql://exporter:hunter2@db:5432/litellm")
    assert "hunter2" not in json.dumps(document)
    assert document["database"]["dsn"] == "postgresql://exporter:REDACTED@db:5432/litellm"
    back = parse(document)
    assert back == parse({"database": {"dsn": "postgresql://exporter:REDACTED@db:5432/litellm"}})


def test_status_and_landing_page_during_a_database_outage(tmp_path, proxied_dsn, tcp_proxy):
    exporter = Running(tmp_path, "", config=False, environ={"LITELLM_DATABASE_URL": with_password(proxied_dsn, "pw")})
    try:
        exporter.wait_for("/ready", 200)
        tcp_proxy.set_mode("down")

        def database_down():
            status = json.loads(exporter.get("/status")[1])
            return status["database"]["up"] is False and status["database"]["problem"]

        exporter.wait_until(database_down)
        started = time.monotonic()
        code, body = exporter.get("/status")
        assert time.monotonic() - started < 2  # answered from memory, not from the database
        status = json.loads(body)
        assert code == 200
        assert "pw" not in status["database"]["dsn"]
        usage = next(c for c in status["collectors"] if c["name"] == "usage")
        exporter.wait_until(
            lambda: next(c for c in json.loads(exporter.get("/status")[1])["collectors"] if c["name"] == "usage")[
                "last_error"
            ]
        )
        status = json.loads(exporter.get("/status")[1])
        usage = next(c for c in status["collectors"] if c["name"] == "usage")
        assert usage["success"] is False and usage["last_error"].startswith("database_unavailable")
        assert usage["last_success"] is not None  # when it last worked
        code, page = exporter.get("/")
        assert code == 200 and "Not working" in page and "database_unavailable" in page
        # Back up: the page says so again.
        tcp_proxy.set_mode("up")
        exporter.wait_until(lambda: json.loads(exporter.get("/status")[1])["database"]["up"] is True)
        assert exporter.stop() == 0
        assert "Traceback" not in exporter.stderr()
    finally:
        if exporter.process.poll() is None:
            exporter.process.kill()


def test_an_empty_database_says_why_its_families_are_empty(make_exporter, litellm_dsn):
    from .support.exporters import poll

    exporter = make_exporter()
    poll(exporter)
    status = exporter.status()
    assert status["notes"] == [
        "LiteLLM has recorded no requests in this database yet: the usage families are empty until the"
        " proxy's first flush of spend (about 10 seconds after its first request)."
    ]
    assert free_port()  # the helpers import cleanly


def test_check_config_reports_every_problem_dsn_or_not(environ, capsys, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("web:\n  lissten: 127.0.0.1:1\ncollectors:\n  usage:\n    interval: soon\n")
    assert cli.main(["--config", str(path), "--check-config"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "litellm-exporter: database.dsn: no database given: pass --dsn URL, set LITELLM_DATABASE_URL or"
        " DATABASE_URL, or name it in a --config file",
        "litellm-exporter: web.lissten: unknown key (expected one of: config_file, enable_lifecycle, listen,"
        " max_connections, request_timeout)",
        "litellm-exporter: collectors.usage.interval: invalid duration 'soon' (use a number of seconds or a unit:"
        " 500ms, 30s, 5m, 1h, 1d)",
    ]
