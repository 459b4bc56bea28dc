"""Fixtures: a throwaway database per test, cloned from one that LiteLLM's migrations built."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter import config as config_module
from exporter.app import Exporter
from exporter.demo.entities import Entities, seed_world
from exporter.demo.schema import apply_migrations
from exporter.demo.traffic import World
from exporter.demo.writer import SpendWriter

from .support import pg
from .support.exporters import FakeClock, make_config
from .support.tcp_proxy import TcpProxy

LEAST_PRIVILEGE = Path(__file__).resolve().parent.parent / "docs" / "least-privilege.sql"

# Fixtures that reach a PostgreSQL server: the shared one (everything a test database is made
# from starts at admin_dsn) or a cluster of a test's own.
DATABASE_FIXTURES = frozenset({"admin_dsn", "own_cluster", "primary_and_standby"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``fast`` every test that reaches no database: ``pytest -m fast`` runs in seconds."""
    for item in items:
        if DATABASE_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.fast)


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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc))


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


@pytest.fixture
def tcp_proxy(litellm_dsn: str) -> Iterator[TcpProxy]:
    """A TCP hop to the test database that a test can cut (``down``) or black-hole (``hang``)."""
    params = conninfo_to_dict(litellm_dsn)
    proxy = TcpProxy(params.get("host") or "127.0.0.1", int(params.get("port") or 5432))
    yield proxy
    proxy.close()


@pytest.fixture
def proxied_dsn(litellm_dsn: str, tcp_proxy: TcpProxy) -> str:
    params = conninfo_to_dict(litellm_dsn)
    params.update(host="127.0.0.1", port=str(tcp_proxy.port))
    return make_conninfo(**params)


@pytest.fixture
def exporter_role_dsn(litellm_dsn: str, conn: psycopg.Connection) -> Iterator[str]:
    """The test database as the least-privileged role of docs/least-privilege.sql."""
    conn.execute(LEAST_PRIVILEGE.read_text())
    conn.execute(LEAST_PRIVILEGE.read_text())  # running it again is harmless
    params = conninfo_to_dict(litellm_dsn)
    params["user"] = "litellm_exporter"
    params.pop("password", None)
    yield make_conninfo(**params)
    conn.execute("DROP OWNED BY litellm_exporter")
    conn.execute(f"REVOKE ALL ON DATABASE {conn.info.dbname} FROM litellm_exporter")
    conn.execute("DROP ROLE litellm_exporter")
