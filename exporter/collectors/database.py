"""Probes of the LiteLLM database: is it up, how fast does it answer, how big is it, and is
the proxy still writing to it.

Everything here is read from the catalogue or through an index: the spend-log row count is
PostgreSQL's estimate (``pg_class.reltuples``), never ``count(*)``, and the newest
``startTime`` comes from the ``startTime`` index.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
from psycopg import sql

from .. import catalog
from ..catalog import SPEND_LOGS
from ..config import Config, DatabaseProbeConfig
from ..db import Database
from ..families import Family, build, gauge
from .base import Collector

log = logging.getLogger(__name__)

# Tables every LiteLLM database has had since its first schema: none of them, not LiteLLM's.
LITELLM_TABLES = ("LiteLLM_SpendLogs", "LiteLLM_VerificationToken", "LiteLLM_UserTable", "LiteLLM_TeamTable")

_UP_HELP = "Whether the exporter's last probe of the LiteLLM database succeeded (1) or not (0)."

# The table and, when it is range-partitioned, every partition below it.
_SPEND_LOGS_SIZE = """
WITH parts AS (
    SELECT to_regclass(%(t)s) AS oid
    UNION
    SELECT relid FROM pg_partition_tree(to_regclass(%(t)s))
)
SELECT
    sum(c.reltuples) FILTER (WHERE c.relkind = 'r' AND c.reltuples >= 0)::float8,
    sum(pg_total_relation_size(c.oid))::float8
FROM pg_class c JOIN parts p ON p.oid = c.oid
"""


class DatabaseCollector(Collector):
    name = "database"

    def __init__(self, config: DatabaseProbeConfig) -> None:
        self.interval = config.interval
        self._problem: str | None = None

    def reconfigure(self, config: Config) -> None:
        self.interval = config.database_probe.interval

    @property
    def problem(self) -> str | None:
        return self._problem

    def poll(self, db: Database) -> list[Family]:
        with db.snapshot() as conn:
            started = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            latency = time.perf_counter() - started
            version, size, name, in_recovery, lag = _one(
                conn,
                sql.SQL(
                    "SELECT current_setting('server_version'), pg_database_size(current_database())::float8,"
                    " current_database(), pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN"
                    " extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END"
                ),
            )
            (found,) = _one(
                conn,
                sql.SQL("SELECT bool_or(to_regclass(quote_ident(t)) IS NOT NULL) FROM unnest(%(t)s::text[]) t"),
                {"t": list(LITELLM_TABLES)},
            )
            rows, table_bytes = _one(conn, sql.SQL(_SPEND_LOGS_SIZE), {"t": f'"{SPEND_LOGS}"'})
            latest = None
            if table_bytes is not None:
                (latest,) = _one(
                    conn,
                    sql.SQL('SELECT extract(epoch FROM max("startTime"))::float8 FROM {}').format(
                        sql.Identifier(SPEND_LOGS)
                    ),
                )
            (tables,) = _one(
                conn,
                sql.SQL(
                    "SELECT count(*)::float8 FROM pg_catalog.pg_tables"
                    " WHERE schemaname = current_schema() AND tablename LIKE 'LiteLLM\\_%'"
                ),
            )
            migration = _latest_migration(conn)
        problem = None
        if not found:
            problem = (
                f'the database "{name}" has none of LiteLLM\'s tables ({", ".join(LITELLM_TABLES)}): it is not'
                " the database the LiteLLM proxy uses, or LiteLLM's migrations have not been applied to it"
            )
        if problem != self._problem and problem is not None:
            log.warning("%s", problem)
        self._problem = problem
        families = [
            gauge("litellm_db_up", _UP_HELP, 1.0),
            gauge("litellm_db_probe_duration_seconds", "How long a trivial query took on the last probe.", latency),
            gauge("litellm_db_info", "The database server's version; always 1.", 1.0, version=version),
            gauge("litellm_db_size_bytes", "The LiteLLM database's size on disk.", size),
            gauge("litellm_db_litellm_tables", "LiteLLM's tables in the schema the exporter reads.", tables),
            build(
                "litellm_db_schema_migration_info",
                "The newest LiteLLM migration applied to the database (Prisma's _prisma_migrations); always 1."
                " No sample where that table is missing or not readable.",
                "gauge",
                ("migration",),
                [((migration,), 1.0)] if migration else [],
            ),
            gauge(
                "litellm_db_in_recovery",
                "Whether the exporter reads a standby (1: a read replica in recovery) or a primary (0).",
                1.0 if in_recovery else 0.0,
            ),
            _optional(
                "litellm_db_replication_lag_seconds",
                "On a standby, the time since the last transaction it replayed was committed on the primary:"
                " what the counters lag behind by. No sample on a primary.",
                lag,
            ),
            _optional(
                "litellm_spend_logs_estimated_rows",
                "PostgreSQL's estimate of the rows in LiteLLM_SpendLogs (all partitions), from pg_class.",
                rows,
            ),
            _optional(
                "litellm_spend_logs_size_bytes",
                "LiteLLM_SpendLogs' size on disk with its indexes and partitions.",
                table_bytes,
            ),
            _optional(
                "litellm_spend_logs_latest_timestamp_seconds",
                "The newest startTime in LiteLLM_SpendLogs, as a Unix time: stops moving when the proxy stops writing.",
                latest,
            ),
        ]
        return families + pool_families(db)

    def on_failure(self, db: Database, exc: BaseException) -> list[Family]:
        return [gauge("litellm_db_up", _UP_HELP, 0.0), *pool_families(db)]


def _one(
    conn: psycopg.Connection[Any], query: sql.SQL | sql.Composed, params: dict[str, object] | None = None
) -> tuple[Any, ...]:
    """The one row an aggregate query returns."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, "an aggregate query returns a row"
    return tuple(row)


def _latest_migration(conn: psycopg.Connection) -> str | None:
    """The newest migration LiteLLM's ``prisma migrate deploy`` finished, where we may read it."""
    if not catalog.readable(conn, ["_prisma_migrations"]):
        return None
    row = conn.execute(
        "SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL"
        " ORDER BY migration_name DESC LIMIT 1"
    ).fetchone()
    return str(row[0]) if row else None


def _optional(name: str, documentation: str, value: float | None) -> Family:
    return build(name, documentation, "gauge", (), [((), value)] if value is not None else [])


def pool_families(db: Database) -> list[Family]:
    """The connection pool's state; it lives in this process, so it is there when the database is not."""
    stats = db.pool.get_stats()
    return [
        build(
            "litellm_exporter_db_pool_connections",
            "Connections in the exporter's pool, by state.",
            "gauge",
            ("state",),
            [
                (("open",), float(stats.get("pool_size", 0))),
                (("idle",), float(stats.get("pool_available", 0))),
            ],
        ),
        gauge("litellm_exporter_db_pool_max_connections", "The pool's maximum size.", float(stats.get("pool_max", 0))),
        gauge(
            "litellm_exporter_db_pool_requests_waiting",
            "Collectors waiting for a connection from the pool.",
            float(stats.get("requests_waiting", 0)),
        ),
        build(
            "litellm_exporter_db_pool_connection_errors",
            "Failed attempts to open a connection to the database.",
            "counter",
            (),
            [((), float(stats.get("connections_errors", 0)))],
        ),
        build(
            "litellm_exporter_db_pool_connections_lost",
            "Pooled connections found broken.",
            "counter",
            (),
            [((), float(stats.get("connections_lost", 0)))],
        ),
    ]
