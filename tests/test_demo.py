"""``litellm-exporter demo``: one command to live metrics, and nothing left behind."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from .support.process import free_port


def demo_databases(admin_dsn: str) -> set[str]:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'litellm_demo_%'")}


def test_demo_serves_live_metrics_and_drops_its_database(admin_dsn, tmp_path):
    before = demo_databases(admin_dsn)
    port = free_port()
    err = (tmp_path / "demo.err").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter.cli",
            "demo",
            "--dsn",
            admin_dsn,
            "--listen",
            f"127.0.0.1:{port}",
            "--poll-interval",
            "0.5",
            "--rate",
            "20",
        ],
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    try:
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        def total_spend() -> float:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
            return sum(
                s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name == "litellm_spend_usd_total"
            )

        deadline = time.monotonic() + 120
        first = None
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "demo.err").read_text()
            try:
                spend = total_spend()
            except OSError:
                spend = 0.0
            if spend > 0 and first is None:
                first = spend
            elif first is not None and spend > first:
                break  # live traffic is moving the counters
            time.sleep(0.5)
        else:
            raise AssertionError("the demo's counters never moved")
        ours = re.search(r"dbname=(litellm_demo_\w+)", (tmp_path / "demo.err").read_text()).group(1)
        assert ours in demo_databases(admin_dsn) - before
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        err.close()
    log = (tmp_path / "demo.err").read_text()
    assert "applying" in log and "LiteLLM migrations" in log
    # It says what to do next: where to look, how to scrape it, where the dashboards are.
    assert f"metrics     http://127.0.0.1:{port}/metrics" in log
    assert f'- targets: ["127.0.0.1:{port}"]' in log
    assert "grafana/dashboards/" in log and "litellm-exporter --dsn" in log
    assert "wrote " in log and " requests, " in log
    # Written to a file, not a terminal: whole lines, no carriage returns; and it says it stopped.
    assert "\r" not in log
    assert log.splitlines()[-2:] == [
        "stopping: the exporter, then the scratch database ...",
        "litellm-exporter demo stopped",
    ]
    assert "Traceback" not in log
    # Only this demo's database is checked: another run may share the server.
    assert ours not in demo_databases(admin_dsn)


def test_as_root_the_demo_explains_the_system_user_the_embedded_server_needs(monkeypatch, capsys):
    from exporter.demo import command, scratch

    @contextlib.contextmanager
    def no_server():
        raise scratch.EmbeddedUnavailable("(not started in this test)")
        yield ""

    monkeypatch.setattr(command, "embedded_postgres", no_server)
    monkeypatch.setattr(command.os, "geteuid", lambda: 0)
    with pytest.raises(SystemExit), command._server(None):
        pass
    err = capsys.readouterr().err
    assert err.startswith(command.AS_ROOT + "\n")
    assert "useradd" in err and "--dsn" in err
    monkeypatch.setattr(command.os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit), command._server(None):
        pass
    assert "root" not in capsys.readouterr().err
