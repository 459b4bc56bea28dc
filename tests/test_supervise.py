"""No part of the exporter dies silently: a poller, the database watcher or the HTTP server that
raises is logged once with its traceback, counted, and restarted; one that keeps failing fails
/healthz, so that a liveness probe restarts the process."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import pytest

from exporter import status as status_module
from exporter import supervise
from exporter.runner import Runner
from exporter.supervise import Supervisor
from exporter.web import WebServer

from .support.exporters import parse_samples
from .support.process import fetch, serving


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch):
    monkeypatch.setattr(supervise, "FIRST_PAUSE", 0.05)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_part_that_raises_is_logged_once_counted_and_restarted(caplog):
    supervisor = Supervisor()
    stop = threading.Event()
    runs: list[int] = []

    def part() -> None:
        runs.append(1)
        if len(runs) <= 3:
            raise RuntimeError("the same fault")
        stop.wait()

    caplog.set_level(logging.ERROR, logger="exporter.supervise")
    supervisor.start("worker", part, stop)
    wait_until(lambda: len(runs) == 4)
    stop.set()
    supervisor.thread("worker").join(timeout=5)
    errors = [r for r in caplog.records if "internal error in worker" in r.getMessage()]
    assert len(errors) == 3
    # The traceback once; the same fault again in one line each.
    assert errors[0].exc_info is not None and all(r.exc_info is None for r in errors[1:])
    assert "the same fault" in errors[0].getMessage() and "restarting it in" in errors[0].getMessage()
    (family,) = supervisor.families()
    assert family.name == "litellm_exporter_internal_errors" and list(family.samples) == [(("worker",), 3.0)]
    assert supervisor.problems() == []  # it recovered, and stopped when told to


def test_a_part_that_keeps_failing_is_a_problem(monkeypatch):
    monkeypatch.setattr(supervise, "LIMIT", 3)
    supervisor = Supervisor()
    stop = threading.Event()

    def part() -> None:
        raise ValueError("always")

    supervisor.start("broken", part, stop)
    wait_until(lambda: supervisor.problems() != [])
    stop.set()
    assert supervisor.problems()[0].startswith("broken failed 3 times in the last 10 minutes")


def test_a_part_that_returns_while_running_is_restarted():
    supervisor = Supervisor()
    stop = threading.Event()
    runs: list[int] = []

    def part() -> None:
        runs.append(1)
        if len(runs) > 1:
            stop.wait()

    supervisor.start("quitter", part, stop)
    wait_until(lambda: len(runs) == 2)
    stop.set()
    assert next(iter(supervisor.families()[0].samples)) == (("quitter",), 1.0)


def internal_errors(base: str) -> dict[str, float]:
    samples = parse_samples(fetch(f"{base}/metrics")[2].decode())
    return {dict(labels)["component"]: v for labels, v in samples["litellm_exporter_internal_errors_total"].items()}


@pytest.fixture
def running(litellm_dsn):
    """Starts an exporter after the test has planted its fault."""
    with contextlib.ExitStack() as stack:

        def start() -> str:
            _, port = stack.enter_context(serving(litellm_dsn, poll_interval="0.2s"))
            return f"http://127.0.0.1:{port}"

        yield start


def test_a_poller_that_raises_is_restarted_and_polls_again(running, monkeypatch):
    real = Runner.poll_once
    faults = []

    def poll_once(self, collector):
        if collector.name == "usage" and not faults:
            faults.append(1)
            raise RuntimeError("a bug in the poll loop")
        return real(self, collector)

    monkeypatch.setattr(Runner, "poll_once", poll_once)
    base = running()
    wait_until(lambda: fetch(f"{base}/ready")[0] == 200)
    assert internal_errors(base)["collector-usage"] == 1.0
    assert internal_errors(base)["database-watch"] == 0.0
    status, _, body = fetch(f"{base}/healthz")
    assert (status, body) == (200, b"ok\n")


def test_a_poller_that_keeps_raising_fails_healthz(running, monkeypatch):
    monkeypatch.setattr(supervise, "LIMIT", 3)
    real = Runner.poll_once

    def poll_once(self, collector):
        if collector.name == "budgets":
            raise RuntimeError("a bug that does not go away")
        return real(self, collector)

    monkeypatch.setattr(Runner, "poll_once", poll_once)
    base = running()
    wait_until(lambda: fetch(f"{base}/healthz")[0] == 503)
    code, _, body = fetch(f"{base}/healthz")
    assert code == 503 and body.decode().startswith("collector-budgets failed 3 times in the last 10 minutes")


def test_an_error_in_a_handler_is_a_500_counted_and_the_server_goes_on(running, monkeypatch):
    def broken(status):
        raise KeyError("a bug in the status page")

    monkeypatch.setattr(status_module, "render_html", broken)
    base = running()
    assert fetch(f"{base}/")[0] == 500
    assert internal_errors(base)["http"] == 1.0
    assert fetch(f"{base}/metrics")[0] == 200


def test_the_http_server_that_fails_is_started_again_on_the_same_port(running, monkeypatch, caplog):
    real = WebServer._main
    failures = []

    async def main(self, loop):
        if not failures:
            failures.append(1)
            raise RuntimeError("the loop failed")
        await real(self, loop)

    monkeypatch.setattr(WebServer, "_main", main)
    caplog.set_level(logging.ERROR, logger="exporter.supervise")
    base = running()
    wait_until(lambda: fetch(f"{base}/healthz")[0] == 200)
    assert internal_errors(base)["http"] == 1.0
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        "internal error in http: internal: the loop failed"
    ]
