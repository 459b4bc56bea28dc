"""A PostgreSQL server for the tests, and LiteLLM's real schema built from its migrations.

The server is, in order: the one named by ``LITELLM_EXPORTER_TEST_DSN``; a local one on
127.0.0.1:5432 if it answers; else an embedded one started from the ``pgserver`` wheel.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from exporter.demo.scratch import (
    ClusterUnavailable,
    LocalCluster,
    create_database,
    drop_database,
    embedded_postgres,
    with_database,
)

__all__ = ["admin_dsn", "create_database", "drop_database", "local_cluster", "unique_name", "with_database"]

ENV_DSN = "LITELLM_EXPORTER_TEST_DSN"
LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


@contextmanager
def admin_dsn() -> Iterator[str]:
    """A DSN of a server where the tests may create and drop databases."""
    explicit = os.environ.get(ENV_DSN)
    if explicit:
        yield explicit
    elif _answers(LOCAL_DSN):
        yield LOCAL_DSN
    else:
        with embedded_postgres() as dsn:
            yield dsn


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def local_cluster(settings: str = "") -> LocalCluster:
    """A PostgreSQL cluster of the test's own (which it may restart, or stream from): skipped
    where the server's binaries are missing, except in CI, where that fails."""
    try:
        return LocalCluster(settings)
    except ClusterUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
