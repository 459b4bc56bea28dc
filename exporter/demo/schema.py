"""LiteLLM's real database schema, built from the migrations that ``litellm-proxy-extras`` ships.

Used by the demo and the tests; the exporter itself never creates anything.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import psycopg

PACKAGE = "litellm_proxy_extras"


class SchemaPackageMissing(Exception):
    """litellm-proxy-extras is not installed."""


def migration_files(package: str = PACKAGE) -> list[Path]:
    """Every ``migration.sql`` the installed package ships, in the order LiteLLM applies them."""
    try:
        root = Path(str(resources.files(package) / "migrations"))
    except ModuleNotFoundError:
        raise SchemaPackageMissing(
            f"the Python package {package.replace('_', '-')} is not installed (pip install 'litellm-exporter[demo]')"
        ) from None
    return sorted(p / "migration.sql" for p in root.iterdir() if (p / "migration.sql").is_file())


def apply_migrations(dsn: str, files: list[Path] | None = None) -> int:
    """Apply the migrations to an empty database; returns how many were applied."""
    files = migration_files() if files is None else files
    # One file at a time in autocommit: a few are a single CREATE INDEX CONCURRENTLY,
    # which cannot run inside a transaction.
    with psycopg.connect(dsn, autocommit=True) as conn:
        for path in files:
            conn.execute(path.read_bytes())  # bytes: the files are UTF-8, whatever the database encoding
    return len(files)
