"""Proxy probes against real HTTP servers that answer as LiteLLM's health endpoints do."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest

from exporter.collectors.proxy import ProxyCollector
from exporter.config import ProxyConfig, defaults

from .support.fake_proxy import FakeProxy
from .support.process import free_port


@pytest.fixture
def fake_proxy() -> Iterator:
    made: list[FakeProxy] = []

    def make(behaviour: str, delay: float = 0.0) -> FakeProxy:
        made.append(FakeProxy(behaviour, delay))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def proxy_config(**settings: object) -> ProxyConfig:
    return dataclasses.replace(defaults("postgresql://unused@localhost/litellm").proxy, **settings)


def by_target(families, name: str) -> dict[tuple[str, ...], float]:
    family = next(f for f in families if f.name == name)
    return dict(family.samples)


def test_probes_report_up_ready_database_and_version(fake_proxy):
    new, old, down, garbage = (fake_proxy(b) for b in ("healthy", "old", "db_down", "garbage"))
    refused = f"http://127.0.0.1:{free_port()}"
    targets = (new.url, old.url, down.url, garbage.url, refused)
    families = ProxyCollector(proxy_config(targets=targets, timeout=2.0)).poll(db=None)

    assert by_target(families, "litellm_proxy_up") == {
        (new.url,): 1.0,
        (old.url,): 1.0,
        (down.url,): 1.0,
        (garbage.url,): 1.0,
        (refused,): 0.0,
    }
    assert by_target(families, "litellm_proxy_ready") == {
        (new.url,): 1.0,
        (old.url,): 1.0,
        (down.url,): 0.0,
        (garbage.url,): 0.0,
        (refused,): 0.0,
    }
    assert by_target(families, "litellm_proxy_db_connected") == {(new.url,): 1.0, (old.url,): 1.0, (down.url,): 0.0}
    assert by_target(families, "litellm_proxy_info") == {(old.url, "1.55.8"): 1.0}
    assert set(by_target(families, "litellm_proxy_probe_duration_seconds")) == {(t,) for t in targets}
    for proxy in (new, old, down, garbage):
        assert proxy.paths == ["/health/liveliness", "/health/readiness"]  # never /health


def test_a_slow_proxy_does_not_delay_the_others(fake_proxy):
    slow = fake_proxy("healthy", delay=5.0)
    fast = fake_proxy("healthy")
    collector = ProxyCollector(proxy_config(targets=(slow.url, fast.url), timeout=1.0))
    started = time.monotonic()
    families = collector.poll(db=None)
    elapsed = time.monotonic() - started
    durations = by_target(families, "litellm_proxy_probe_duration_seconds")
    assert durations[(fast.url,)] < 0.5
    assert 0.9 <= durations[(slow.url,)] < 2.5
    assert elapsed < 2.5  # the probes ran side by side, each within its timeout
    assert by_target(families, "litellm_proxy_up") == {(slow.url,): 0.0, (fast.url,): 1.0}


def test_proxy_probes_are_served_by_the_exporter(fake_proxy, make_exporter, litellm_dsn):
    from exporter.config import parse

    from .support.exporters import poll, scrape

    proxy = fake_proxy("old")
    exporter = make_exporter(
        parse(
            {"database": {"dsn": litellm_dsn}, "collectors": {"proxy": {"targets": [proxy.url + "/"], "timeout": "2s"}}}
        )
    )
    poll(exporter)
    samples = scrape(exporter)
    assert samples["litellm_proxy_up"] == {frozenset({("target", proxy.url)}): 1.0}
    assert samples["litellm_proxy_info"] == {frozenset({("target", proxy.url), ("version", "1.55.8")}): 1.0}
    assert samples["litellm_exporter_collector_success"][frozenset({("collector", "proxy")})] == 1.0


def test_a_reload_without_targets_stops_every_proxy_series(fake_proxy, make_exporter, litellm_dsn):
    from exporter.config import parse

    from .support.exporters import poll, scrape

    proxy = fake_proxy("healthy")
    document = {"database": {"dsn": litellm_dsn}, "collectors": {"proxy": {"targets": [proxy.url]}}}
    exporter = make_exporter(parse(document))
    poll(exporter)
    assert "litellm_proxy_up" in scrape(exporter)
    exporter.reload(parse({"database": {"dsn": litellm_dsn}}))
    samples = scrape(exporter)
    assert not [name for name in samples if name.startswith("litellm_proxy_")]
    assert frozenset({("collector", "proxy")}) not in samples["litellm_exporter_collector_success"]
