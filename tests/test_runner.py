"""The runner: a cause several collectors share is logged once and recovered once, /ready says
who failed and why, a failed poll publishes nothing, and a bug of the exporter's own is logged
with its traceback once. The collectors here are real ones of the test's own, and the database
a real address where nothing listens."""

from __future__ import annotations

import logging

import psycopg.errors

from exporter.collectors.base import Collector
from exporter.config import Config, parse
from exporter.db import Database
from exporter.families import Family, gauge
from exporter.runner import Runner

from .support.process import free_port


class Scripted(Collector):
    """Polls by returning its family, or by raising what the test put in ``fault``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.interval = 1.0
        self.fault: Exception | None = None
        self.value = 1.0

    def poll(self, db: Database) -> list[Family]:
        if self.fault is not None:
            raise self.fault
        return [gauge(f"litellm_test_{self.name}", "A value.", self.value)]

    def reconfigure(self, config: Config) -> None:
        pass


def nowhere() -> Database:
    return Database(parse({"database": {"dsn": f"postgresql://x@127.0.0.1:{free_port()}/x"}}).database)


def messages(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name == "exporter.runner"]


def test_a_shared_cause_is_one_line_one_recovery_and_one_ready_line(caplog):
    collectors = [Scripted("a"), Scripted("b"), Scripted("c")]
    runner = Runner(nowhere(), collectors)
    caplog.set_level(logging.INFO, logger="exporter.runner")
    for collector in collectors:
        collector.fault = psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
        for _ in range(3):
            assert not runner.poll_once(collector)
    assert messages(caplog, logging.WARNING) == [
        "collector a failed: statement_timeout: canceling statement due to statement timeout"
    ]
    assert runner.not_ready() == [
        "collectors a, b, c failed: statement_timeout: canceling statement due to statement timeout"
    ]
    assert {c.error for c in runner.status()} == {"statement_timeout: canceling statement due to statement timeout"}
    for collector in collectors:
        collector.fault = None
        assert runner.poll_once(collector)
    assert messages(caplog, logging.INFO) == [
        "collector c recovered from: statement_timeout: canceling statement due to statement timeout"
    ]
    assert runner.not_ready() == []


def test_a_database_that_refuses_is_named_with_its_address(caplog):
    db = nowhere()
    collectors = [Scripted("a"), Scripted("b")]
    runner = Runner(db, collectors)
    caplog.set_level(logging.INFO, logger="exporter.runner")
    for collector in collectors:
        collector.fault = psycopg.OperationalError("couldn't get a connection after 5.00 sec")
        assert not runner.poll_once(collector)
    (line,) = messages(caplog, logging.WARNING)
    assert line.startswith("collector a failed: database_unavailable: cannot connect to")
    assert "connection refused by 127.0.0.1:" in line and line.count("database_unavailable") == 1
    assert runner.not_ready() == [f"collectors a, b failed: {line.removeprefix('collector a failed: ')}"]


def test_different_causes_are_each_told_and_waiting_collectors_named(caplog):
    a, b, c = Scripted("a"), Scripted("b"), Scripted("c")
    runner = Runner(nowhere(), [a, b, c])
    caplog.set_level(logging.INFO, logger="exporter.runner")
    a.fault = psycopg.errors.InsufficientPrivilege('permission denied for table "LiteLLM_TeamTable"')
    b.fault = psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
    assert not runner.poll_once(a) and not runner.poll_once(b)
    assert len(messages(caplog, logging.WARNING)) == 2
    assert runner.not_ready() == [
        'collector a failed: permission_denied: permission denied for table "LiteLLM_TeamTable"',
        "collector b failed: statement_timeout: canceling statement due to statement timeout",
        "waiting for the first poll of: c",
    ]


def test_a_failed_poll_keeps_the_last_snapshot():
    a = Scripted("a")
    runner = Runner(nowhere(), [a])
    assert runner.poll_once(a)
    a.value, a.fault = 2.0, psycopg.errors.QueryCanceled("canceling statement")
    assert not runner.poll_once(a)
    (family,) = [f for f in runner.families() if f.name == "litellm_test_a"]
    assert family.samples == (((), 1.0),)


def test_a_bug_of_the_exporters_own_is_logged_with_its_traceback_once(caplog):
    a = Scripted("a")
    runner = Runner(nowhere(), [a])
    caplog.set_level(logging.INFO, logger="exporter.runner")
    a.fault = KeyError("a bug")
    for _ in range(3):
        assert not runner.poll_once(a)
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.exc_info is not None and "internal" in record.getMessage()
