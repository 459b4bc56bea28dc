"""Helpers for driving an exporter in the tests: a clock they move, configs, polls, scrapes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from exporter import config as config_module
from exporter.app import Exporter
from exporter.families import Family, Histogram


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


def collector(exporter: Exporter, name: str) -> Any:
    """One of the exporter's collectors, by name."""
    return next(c for c in exporter.runner.collectors if c.name == name)


def poll(exporter: Exporter) -> None:
    """Run one poll of every collector and fail the test if any failed."""
    for collector in exporter.runner.collectors:
        assert exporter.runner.poll_once(collector), f"collector {collector.name} failed"


Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def scrape(exporter: Exporter) -> Samples:
    """The bytes /metrics serves, parsed back with prometheus-client's own parser, by sample name."""
    return parse_samples(exporter.exposition.render("")[0].decode())


def samples_of(families: Iterable[Family]) -> Samples:
    """What the families must read as once served, straight from their values (histograms by
    their buckets, sum and count): the reference the served bytes are held against."""
    samples: Samples = {}
    for family in families:
        for values, value in family.samples:
            labels = family.labels_of(values)
            if isinstance(value, Histogram):
                for le, count in value.buckets:
                    bound = "+Inf" if le == float("inf") else repr(float(le))
                    samples.setdefault(f"{family.name}_bucket", {})[frozenset({**labels, "le": bound}.items())] = count
                samples.setdefault(f"{family.name}_sum", {})[frozenset(labels.items())] = value.total
                samples.setdefault(f"{family.name}_count", {})[frozenset(labels.items())] = value.buckets[-1][1]
            else:
                samples.setdefault(family.sample_name, {})[frozenset(labels.items())] = float(value)
    return samples


def parse_samples(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples
