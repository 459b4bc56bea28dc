"""LiteLLM's real database schema, built from the migrations that ``litellm-proxy-extras`` ships.

Used by the demo and the tests; the exporter itself never creates anything.
"""

from __future__ import annotations

import hashlib
import uuid
from importlib import resources
from pathlib import Path

import psycopg

from . import install_hint

PACKAGE = "litellm_proxy_extras"


class SchemaPackageMissing(Exception):
    """litellm-proxy-extras is not installed."""


def migration_files(package: str = PACKAGE) -> list[Path]:
    """Every ``migration.sql`` the installed package ships, in the order LiteLLM applies them."""
    try:
        root = Path(str(resources.files(package) / "migrations"))
    except ModuleNotFoundError:
        name = package.replace("_", "-")
        raise SchemaPackageMissing(
            f"the Python package {name}, which ships LiteLLM's migrations, is not installed ({install_hint(name)})"
        ) from None
    return sorted(p / "migration.sql" for p in root.iterdir() if (p / "migration.sql").is_file())


# Where ``prisma migrate deploy``, which LiteLLM runs, records each migration it applied.
_HISTORY = """
CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id" VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum" VARCHAR(64) NOT NULL,
    "finished_at" TIMESTAMPTZ,
    "migration_name" VARCHAR(255) NOT NULL,
    "logs" TEXT,
    "rolled_back_at" TIMESTAMPTZ,
    "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count" INTEGER NOT NULL DEFAULT 0
)
"""


def apply_migrations(dsn: str, files: list[Path] | None = None) -> int:
    """Apply the migrations to an empty database, recording each as Prisma does; returns how
    many were applied."""
    files = migration_files() if files is None else files
    # One file at a time in autocommit: a few are a single CREATE INDEX CONCURRENTLY,
    # which cannot run inside a transaction.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_HISTORY)
        for path in files:
            text = path.read_bytes()
            conn.execute(text)  # bytes: the files are UTF-8, whatever the database encoding
            conn.execute(
                'INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, applied_steps_count)'
                " VALUES (%s, %s, now(), %s, 1)",
                (str(uuid.uuid4()), hashlib.sha256(text).hexdigest(), path.parent.name),
            )
    return len(files)
