"""What LiteLLM's schema holds here: LiteLLM has changed it dozens of times, so the collectors
ask the catalogue which tables and columns exist instead of assuming them."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

SPEND_LOGS = "LiteLLM_SpendLogs"


def columns(conn: psycopg.Connection, tables: Iterable[str]) -> dict[str, set[str]]:
    """The columns of each of ``tables`` that exists (a missing table is left out)."""
    found: dict[str, set[str]] = {}
    for table, column in conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ANY(%s)",
        (list(tables),),
    ):
        found.setdefault(table, set()).add(column)
    return found


def readable(conn: psycopg.Connection, tables: Iterable[str]) -> set[str]:
    """Which of ``tables`` exist and may be read: a cheap check for tables whose columns are
    known, on every poll (information_schema costs milliseconds)."""
    rows = conn.execute(
        # By oid: NULL for a missing table, where its name would raise an error.
        "SELECT t FROM unnest(%s::text[]) t"
        " WHERE coalesce(has_table_privilege(to_regclass(quote_ident(t)), 'SELECT'), false)",
        (list(tables),),
    ).fetchall()
    return {row[0] for row in rows}


def leading_index(conn: psycopg.Connection, table: str, column: str) -> bool:
    """Whether an index of ``table`` starts with ``column`` (so that a range of it is cheap)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a"
        " ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
        " WHERE i.indrelid = to_regclass(quote_ident(%s)) AND a.attname = %s)",
        (table, column),
    ).fetchone()
    return bool(row and row[0])
