"""Budget and limit gauges: the current state of every key, user, team, organisation, end
user, team member and tag, read from LiteLLM's entity tables on every poll.

Entities whose budget lives in ``LiteLLM_BudgetTable`` (through ``budget_id``) are joined
to it. A NULL in the database is no sample: an entity without a budget has no
``max_budget`` series, never a 0 or ``+Inf`` one.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from .. import catalog
from ..cardinality import CapReport
from ..config import BudgetsConfig, Config
from ..db import CommitWatch, Database
from ..entities import BUDGETS, BY_NAME, Entity, Record
from ..families import Family, build
from .base import Collector

_EPOCH = "extract(epoch FROM {})::float8"
BUDGET_TABLE = "LiteLLM_BudgetTable"
WINDOW_TABLE = "LiteLLM_BudgetWindowSpend"
# The entities read from their own tables (budget windows are read apart: ``_windows``).
ENTITIES = tuple(e for e in BUDGETS if e.record is not None)
# The values read for every entity, in this order after the label columns, and the gauge each
# becomes; budget_remaining_usd is derived from spend and max_budget.
_GAUGES = (
    ("spend", "budget_spend_usd"),
    ("max_budget", "max_budget_usd"),
    ("soft_budget", "soft_budget_usd"),
    ("budget_reset_at", "budget_reset_timestamp_seconds"),
    ("tpm_limit", "tpm_limit"),
    ("rpm_limit", "rpm_limit"),
    ("blocked", "blocked"),
    ("expires", "expires_timestamp_seconds"),
)
_TIMES = {"budget_reset_at", "expires"}
# What may be set in the budget table instead, or as a default beside the entity's own column.
_BUDGET_COLUMNS = {"max_budget", "soft_budget", "budget_reset_at", "tpm_limit", "rpm_limit"}
# Any of these set is a limit (``only_with_limits``); so is being blocked.
_LIMITS = ("max_budget", "soft_budget", "tpm_limit", "rpm_limit", "expires")


@dataclass(frozen=True)
class _Reading:
    """How one entity's rows are read from this schema: the label expressions, and per value
    its expression (None where this schema has no such column). LiteLLM's schema gained soft
    budgets, blocks and limits over time, and moved budgets into ``LiteLLM_BudgetTable``
    (through ``budget_id``) for some entities: a value is the entity's own column where it has
    one, else the budget table's, else (keys have both) the first of them set."""

    entity: Entity
    record: Record
    label_sql: tuple[str, ...]
    values: dict[str, str | None]
    joins_budget: bool


def _reading(entity: Entity, found: dict[str, set[str]]) -> _Reading | None:
    record = entity.record
    if record is None or record.table not in found:
        return None
    own = found[record.table]
    budget = found.get(BUDGET_TABLE, set()) if "budget_id" in own else set()
    prefix = entity.id_prefix
    label_sql = tuple(f"left(e.{c}, {prefix})" if prefix else f"e.{c}" for c in record.id) + tuple(
        f"coalesce(e.{c}, '')" if c in own else "''" for c in record.aliases
    )
    values: dict[str, str | None] = {}
    for column, _ in _GAUGES:
        found_in = [f"e.{column}"] if column in own else []
        if column in _BUDGET_COLUMNS and column in budget:
            found_in.append(f"b.{column}")
        values[column] = (
            None if not found_in else found_in[0] if len(found_in) == 1 else f"coalesce({', '.join(found_in)})"
        )
    return _Reading(entity, record, label_sql, values, joins_budget=bool(_BUDGET_COLUMNS & budget))


def _select(reading: _Reading, only_with_limits: bool, limit: int | None) -> sql.Composed:
    """The rows, the ``limit`` spending most in their current period first (ties by labels),
    each with the number of rows there are in all as its last column."""

    def value(column: str, expr: str | None) -> str:
        if expr is None:
            return "NULL::float8"
        if column == "blocked":
            return f"CASE WHEN {expr} THEN 1.0 ELSE 0.0 END"
        return _EPOCH.format(expr) if column in _TIMES else f"({expr})::float8"

    values = [value(column, expr) for column, expr in reading.values.items()]
    # The expressions are this module's own SQL; the tables are identifiers.
    source = sql.SQL("{} e").format(sql.Identifier(reading.record.table))
    if reading.joins_budget:
        source = sql.SQL("{} LEFT JOIN {} b ON b.budget_id = e.budget_id").format(source, sql.Identifier(BUDGET_TABLE))
    where = ""
    if only_with_limits:
        conditions = [f"{reading.values[c]} IS NOT NULL" for c in _LIMITS if reading.values[c]]
        if reading.values["blocked"]:
            conditions.append(f"{reading.values['blocked']} IS TRUE")
        where = " WHERE " + (" OR ".join(conditions) or "FALSE")
    width = len(reading.label_sql)
    order = ", ".join(str(i + 1) for i in range(width))
    cap = f" ORDER BY {width + 1} DESC NULLS LAST, {order} LIMIT {int(limit)}" if limit else ""
    return sql.SQL("SELECT {}, {}, count(*) OVER () FROM {}{}{}").format(
        sql.SQL(", ".join(reading.label_sql)), sql.SQL(", ".join(values)), source, sql.SQL(where), sql.SQL(cap)
    )


class BudgetsCollector(Collector):
    name = "budgets"

    def __init__(self, config: BudgetsConfig, *, caps: CapReport | None = None) -> None:
        self._config = config
        self.interval = config.interval
        self._caps = caps or CapReport()
        self._commits: CommitWatch[list[Family]] = CommitWatch()

    def reconfigure(self, config: Config) -> None:
        self._config = config.budgets
        self.interval = config.budgets.interval
        self._caps.forget(BY_NAME[name].budget_family for name, e in self._config.entities.items() if not e.enabled)
        self._commits.forget()

    def poll(self, db: Database) -> list[Family]:
        families: list[Family] = []
        # What the caps leave out, reported only once the whole poll has succeeded.
        over: dict[str, int] = {}
        with db.snapshot() as conn:
            if self._commits.unchanged(conn) and self._commits.result is not None:
                return self._commits.result  # nothing committed since: every gauge is what it was
            tables = [e.record.table for e in ENTITIES if e.record] + [BUDGET_TABLE, WINDOW_TABLE]
            found = catalog.columns(conn, tables)
            for entity in ENTITIES:
                settings = self._config.entities[entity.name]
                reading = _reading(entity, found) if settings.enabled else None
                if reading is not None:
                    # The cap keeps whole rows: the entities spending most in their current period.
                    query = _select(reading, settings.only_with_limits, settings.max_series)
                    found_rows = conn.execute(query).fetchall()
                    width = len(reading.label_sql)
                    rows = {tuple(str(v) for v in row[:width]): row[width:-1] for row in found_rows}
                    total = found_rows[0][-1] if found_rows else 0
                    over[entity.budget_family] = total - len(found_rows)
                    families += _families(reading, rows)
            windows = self._config.entities["budget_window"]
            if windows.enabled and WINDOW_TABLE in found:
                window_families, over[BY_NAME["budget_window"].budget_family] = self._windows(conn, windows.max_series)
                families += window_families
        for family, count in over.items():
            self._caps.over_cap(family, count)
        self._commits.polled(families)
        return families

    def _windows(self, conn: psycopg.Connection, limit: int | None) -> tuple[list[Family], int]:
        """Spend in the current window of each multi-window budget, the largest first."""
        query = sql.SQL(
            "SELECT entity_type, entity_id, window_duration, spend::float8, {start}, count(*) OVER () FROM {table}"
            " ORDER BY spend DESC, entity_type, entity_id, window_duration{limit}"
        ).format(
            start=sql.SQL(_EPOCH.format("window_start")),
            table=sql.Identifier(WINDOW_TABLE),
            limit=sql.SQL(" LIMIT {}").format(sql.Literal(limit)) if limit else sql.SQL(""),
        )
        rows = conn.execute(query).fetchall()
        labels = BY_NAME["budget_window"].labels
        ordered = sorted(((str(r[0]), str(r[1]), str(r[2])), r[3], r[4]) for r in rows)
        return [
            build(
                "litellm_budget_window_spend_usd",
                "Spend in US dollars in the current window of a budget with several windows"
                " (LiteLLM_BudgetWindowSpend).",
                "gauge",
                labels,
                [(key, spend) for key, spend, _ in ordered],
            ),
            build(
                "litellm_budget_window_start_timestamp_seconds",
                "When the current window of a budget with several windows started, as a Unix time.",
                "gauge",
                labels,
                [(key, start) for key, _, start in ordered if start is not None],
            ),
        ], (rows[0][-1] - len(rows)) if rows else 0


def _families(reading: _Reading, rows: dict[tuple[str, ...], tuple[float | None, ...]]) -> list[Family]:
    samples: dict[str, list[tuple[tuple[str, ...], float]]] = {name: [] for _, name in _GAUGES}
    samples["budget_remaining_usd"] = []
    for labels, row in sorted(rows.items()):
        values = dict(zip((column for column, _ in _GAUGES), row, strict=True))
        for column, name in _GAUGES:
            value = values[column]
            if value is not None:
                samples[name].append((labels, value))
        max_budget, spend = values["max_budget"], values["spend"]
        if max_budget is not None and spend is not None:
            samples["budget_remaining_usd"].append((labels, max_budget - spend))

    noun = reading.entity.noun
    the = f"The {noun}'s"
    docs = {
        "budget_spend_usd": f"{the} spend in US dollars in its current budget period (LiteLLM's spend column).",
        "max_budget_usd": f"{the} maximum budget in US dollars per budget period.",
        "soft_budget_usd": f"{the} soft budget in US dollars: crossing it alerts, it does not block.",
        "budget_remaining_usd": f"{the} max budget minus its spend; negative when overspent.",
        "budget_reset_timestamp_seconds": f"When the {noun}'s budget period next resets, as a Unix time.",
        "tpm_limit": f"{the} tokens-per-minute limit.",
        "rpm_limit": f"{the} requests-per-minute limit.",
        "blocked": f"Whether the {noun} is blocked (1) or not (0).",
        "expires_timestamp_seconds": f"When the {noun} expires, as a Unix time.",
    }
    # A value read from no column is a family the entity cannot have (a user's soft budget).
    applies = {gauge: reading.values[column] is not None for column, gauge in _GAUGES}
    families = []
    for name, found in samples.items():
        if not found and name in applies and not applies[name]:
            continue
        families.append(build(f"{reading.entity.family}_{name}", docs[name], "gauge", reading.entity.labels, found))
    return families
