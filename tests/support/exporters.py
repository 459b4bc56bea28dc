"""Helpers for driving an exporter in the tests: a clock they move, configs, polls, scrapes."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import config as config_module
from exporter.app import Exporter


class FakeClock:
    """The collectors' notion of now, moved by the test instead of by sleeping."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def make_config(dsn: str, **usage: object) -> config_module.Config:
    base = config_module.parse({"database": {"dsn": dsn, "statement_timeout": "5s"}})
    if usage:
        base = dataclasses.replace(base, usage=dataclasses.replace(base.usage, **usage))
    return base


def poll(exporter: Exporter) -> None:
    """Run one poll of every collector and fail the test if any failed."""
    for collector in exporter.runner.collectors:
        assert exporter.runner.poll_once(collector), f"collector {collector.name} failed"


Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def scrape(exporter: Exporter) -> Samples:
    """The exposition, parsed back with prometheus-client's own parser, by sample name."""
    return parse_samples(generate_latest(exporter.registry).decode())


def parse_samples(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples
