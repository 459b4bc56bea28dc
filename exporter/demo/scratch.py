"""Scratch databases, for the demo and the tests: an embedded server, create, drop."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo


class EmbeddedUnavailable(Exception):
    """The pgserver package, which ships PostgreSQL's binaries, is not installed."""


@contextmanager
def embedded_postgres() -> Iterator[str]:
    """A PostgreSQL server of our own in a temporary directory; yields its DSN."""
    try:
        import pgserver
    except ImportError:
        raise EmbeddedUnavailable(
            "the embedded PostgreSQL is not installed (pip install 'litellm-exporter[demo]')"
        ) from None
    with tempfile.TemporaryDirectory(prefix="litellm-exporter-pg-") as data:
        server = pgserver.get_server(data, cleanup_mode="stop")  # type: ignore[attr-defined]
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def with_database(dsn: str, dbname: str) -> str:
    return make_conninfo(dsn, dbname=dbname)


def create_database(admin: str, name: str, template: str | None = None) -> str:
    """Create a database on the server of ``admin``; returns its DSN."""
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(query)
    return with_database(admin, name)


def drop_database(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
