"""Fixtures: a throwaway database per test, cloned from one that LiteLLM's migrations built."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import config as config_module
from exporter.app import Exporter
from exporter.litellm_schema import apply_migrations
from exporter.spend_writer import Entities, SpendWriter, World, seed_world

from . import pg


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    with pg.admin_dsn() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def litellm_template(admin_dsn: str) -> Iterator[str]:
    """A database holding LiteLLM's schema, to clone per test."""
    name = pg.unique_name("litellm_exporter_tmpl")
    dsn = pg.create_database(admin_dsn, name)
    try:
        apply_migrations(dsn)
        yield name
    finally:
        pg.drop_database(admin_dsn, name)


@pytest.fixture
def litellm_dsn(admin_dsn: str, litellm_template: str) -> Iterator[str]:
    name = pg.unique_name("litellm_exporter_test")
    dsn = pg.create_database(admin_dsn, name, template=litellm_template)
    try:
        yield dsn
    finally:
        pg.drop_database(admin_dsn, name)


@pytest.fixture
def conn(litellm_dsn: str) -> Iterator[psycopg.Connection]:
    """A writing connection, playing the LiteLLM proxy."""
    with psycopg.connect(litellm_dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def writer(conn: psycopg.Connection) -> SpendWriter:
    return SpendWriter(conn)


@pytest.fixture
def entities(conn: psycopg.Connection) -> Entities:
    return Entities(conn)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(20261124)


@pytest.fixture
def world(conn: psycopg.Connection, rng: random.Random) -> World:
    return seed_world(conn, rng)


class FakeClock:
    """The collectors' notion of now, moved by the test instead of by sleeping."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc))


def make_config(dsn: str, **usage: object) -> config_module.Config:
    base = config_module.parse({"database": {"dsn": dsn, "statement_timeout": "5s"}})
    if usage:
        base = dataclasses.replace(base, usage=dataclasses.replace(base.usage, **usage))
    return base


@pytest.fixture
def make_exporter(litellm_dsn: str, clock: FakeClock) -> Iterator[Callable[..., Exporter]]:
    """Builds exporters on the test database whose pools are opened but that poll only when asked."""
    made: list[Exporter] = []

    def factory(config: config_module.Config | None = None, **usage: object) -> Exporter:
        exporter = Exporter(config or make_config(litellm_dsn, **usage), clock=clock)
        exporter.db.open(wait=True)
        made.append(exporter)
        return exporter

    yield factory
    for exporter in made:
        exporter.db.close()


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
