"""Reloading the configuration on SIGHUP and POST /-/reload, JSON logs, and a quick SIGTERM."""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import timedelta

from exporter.demo.traffic import random_requests

from .support.exporters import parse_samples
from .support.fake_proxy import FakeProxy
from .support.ground_truth import mismatches
from .support.process import Running


def write_config(path, *, tag: bool = True, targets=(), lifecycle: bool = True, extra: str = "") -> None:
    path.write_text(
        "database:\n  dsn: ${TEST_LITELLM_DSN}\n"
        f"web:\n  enable_lifecycle: {str(lifecycle).lower()}\n"
        "collectors:\n"
        f"  usage:\n    entities:\n      tag: {{enabled: {str(tag).lower()}}}\n"
        f"  proxy:\n    targets: {json.dumps(list(targets))}\n    timeout: 2s\n" + extra
    )


def start(config, dsn: str, tmp_path) -> Running:
    return Running(tmp_path, dsn, "--log-format", "json", config=config)


def test_sighup_and_post_reload_keep_counters_and_every_scrape(tmp_path, litellm_dsn, writer, rng, world, clock, conn):
    writer.record(*random_requests(rng, world, 200, clock.now - timedelta(days=2), clock.now))
    writer.flush(clock.now)
    proxy = FakeProxy("healthy")
    config = tmp_path / "config.yaml"
    write_config(config)
    exporter = start(config, litellm_dsn, tmp_path)
    failures: list[int] = []
    stop = threading.Event()

    def scrape_all_along() -> None:
        while not stop.is_set():
            status, _ = exporter.get("/metrics")
            if status != 200:
                failures.append(status)
            time.sleep(0.01)

    try:
        exporter.wait_until(lambda: exporter.get("/ready")[0] == 200)
        scraper = threading.Thread(target=scrape_all_along)
        scraper.start()
        before = exporter.get("/metrics")[1]
        assert "litellm_tag_spend_usd_total" in before and "litellm_proxy_up" not in before

        write_config(config, tag=False, targets=[proxy.url])
        exporter.process.send_signal(signal.SIGHUP)
        exporter.wait_until(lambda: "litellm_proxy_up" in exporter.get("/metrics")[1])
        exporter.wait_until(lambda: "litellm_tag_spend_usd_total" not in exporter.get("/metrics")[1])
        after = exporter.get("/metrics")[1]
        assert mismatches(conn, parse_samples(after), ("litellm", "litellm_key", "litellm_team")) == []
        assert parse_samples(after)["litellm_proxy_up"] == {frozenset({("target", proxy.url)}): 1.0}

        # A broken file is refused and the running configuration kept.
        config.write_text("database:\n  dsn: ${TEST_LITELLM_DSN}\n  max_conns: many\n")
        status, body = exporter.get("/-/reload", method="POST")
        assert status == 500 and "database.max_conns: expected an integer, got 'many'" in body
        assert "litellm_proxy_up" in exporter.get("/metrics")[1]

        write_config(config, tag=True, targets=[proxy.url])
        status, body = exporter.get("/-/reload", method="POST")
        assert (status, body) == (200, "configuration reloaded\n")
        exporter.wait_until(lambda: "litellm_tag_spend_usd_total" in exporter.get("/metrics")[1])
        assert mismatches(conn, exporter.samples()) == []
    finally:
        stop.set()
        proxy.close()
        started = time.monotonic()
        exporter.process.send_signal(signal.SIGTERM)
        assert exporter.process.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    assert failures == []
    lines = exporter.stderr().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = [e["message"] for e in entries]
    assert "reload: configuration reloaded" in messages
    assert any(m.startswith("reload: kept the running configuration: database.max_conns") for m in messages)


def test_post_reload_is_off_by_default(tmp_path, litellm_dsn):
    config = tmp_path / "config.yaml"
    write_config(config, lifecycle=False)
    exporter = start(config, litellm_dsn, tmp_path)
    try:
        exporter.wait_until(lambda: exporter.get("/healthz")[0] == 200)
        assert exporter.get("/-/reload", method="POST")[0] == 405
    finally:
        exporter.process.send_signal(signal.SIGTERM)
        assert exporter.process.wait(timeout=10) == 0
