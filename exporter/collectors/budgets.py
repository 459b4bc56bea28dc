"""Budget and limit gauges: the current state of every key, user, team, organisation, end
user, team member and tag, read from LiteLLM's entity tables on every poll.

Entities whose budget lives in ``LiteLLM_BudgetTable`` (through ``budget_id``) are joined
to it. A NULL in the database is no sample: an entity without a budget has no
``max_budget`` series, never a 0 or ``+Inf`` one.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .. import catalog
from ..cardinality import CapReport
from ..config import BudgetsConfig, Config
from ..db import CommitWatch, Database
from ..entities import BY_NAME, KEY_HASH_LENGTH
from ..families import Family, build
from .base import Collector

_EPOCH = "extract(epoch FROM {})::float8"


@dataclass(frozen=True)
class _Spec:
    """One entity: how to read it and which labels name it."""

    entity: str
    describe: str
    labels: tuple[str, ...]
    label_sql: tuple[str, ...]
    table: str
    spend: str | None
    max_budget: str | None
    soft_budget: str | None
    reset_at: str | None
    tpm_limit: str | None
    rpm_limit: str | None
    blocked: str | None = None
    expires: str | None = None


BUDGET_TABLE = "LiteLLM_BudgetTable"
WINDOW_TABLE = "LiteLLM_BudgetWindowSpend"
_REFERENCE = re.compile(r"\b([eb])\.(\w+)\b")


def _in_budget_table(
    entity: str,
    describe: str,
    labels: tuple[str, ...],
    label_sql: tuple[str, ...],
    table: str,
    blocked: str | None = None,
) -> _Spec:
    """An entity whose budget and limits live in LiteLLM_BudgetTable, through its budget_id."""
    return _Spec(
        entity,
        describe,
        labels,
        label_sql,
        table,
        "e.spend",
        "b.max_budget",
        "b.soft_budget",
        "b.budget_reset_at",
        "b.tpm_limit",
        "b.rpm_limit",
        blocked=blocked,
    )


SPECS = (
    _Spec(
        "key",
        "virtual key",
        ("key_hash", "key_alias", "team_id"),
        (f"left(e.token, {KEY_HASH_LENGTH})", "coalesce(e.key_alias, '')", "coalesce(e.team_id, '')"),
        "LiteLLM_VerificationToken",
        "e.spend",
        "coalesce(e.max_budget, b.max_budget)",
        "b.soft_budget",
        "coalesce(e.budget_reset_at, b.budget_reset_at)",
        "coalesce(e.tpm_limit, b.tpm_limit)",
        "coalesce(e.rpm_limit, b.rpm_limit)",
        blocked="coalesce(e.blocked, false)",
        expires="e.expires",
    ),
    _Spec(
        "user",
        "internal user",
        ("user_id",),
        ("e.user_id",),
        "LiteLLM_UserTable",
        "e.spend",
        "e.max_budget",
        None,
        "e.budget_reset_at",
        "e.tpm_limit",
        "e.rpm_limit",
    ),
    _Spec(
        "team",
        "team",
        ("team_id", "team_alias"),
        ("e.team_id", "coalesce(e.team_alias, '')"),
        "LiteLLM_TeamTable",
        "e.spend",
        "e.max_budget",
        "e.soft_budget",
        "e.budget_reset_at",
        "e.tpm_limit",
        "e.rpm_limit",
        blocked="e.blocked",
    ),
    _in_budget_table(
        "organization",
        "organization",
        ("organization_id", "organization_alias"),
        ("e.organization_id", "coalesce(e.organization_alias, '')"),
        "LiteLLM_OrganizationTable",
    ),
    _in_budget_table(
        "end_user", "end user", ("end_user",), ("e.user_id",), "LiteLLM_EndUserTable", blocked="e.blocked"
    ),
    _in_budget_table(
        "team_member", "team member", ("team_id", "user_id"), ("e.team_id", "e.user_id"), "LiteLLM_TeamMembership"
    ),
    _in_budget_table("tag", "tag", ("tag",), ("e.tag_name",), "LiteLLM_TagTable"),
)

# The value columns read for every entity, in this order after the label columns, and the
# gauge each becomes; budget_remaining_usd is derived from the first two.
_GAUGES = (
    ("spend", "budget_spend_usd"),
    ("max_budget", "max_budget_usd"),
    ("soft_budget", "soft_budget_usd"),
    ("reset_at", "budget_reset_timestamp_seconds"),
    ("tpm_limit", "tpm_limit"),
    ("rpm_limit", "rpm_limit"),
    ("blocked", "blocked"),
    ("expires", "expires_timestamp_seconds"),
)


def _adapt(spec: _Spec, found: dict[str, set[str]]) -> _Spec | None:
    """The spec with every expression that needs a column this schema lacks replaced by None:
    LiteLLM's schema gained soft budgets, blocks and limits over time."""
    if spec.table not in found:
        return None
    have = {"e": found[spec.table], "b": found.get(BUDGET_TABLE, set()) if "budget_id" in found[spec.table] else set()}

    def keep(expr: str | None) -> str | None:
        if expr is None:
            return None
        return expr if all(col in have[alias] for alias, col in _REFERENCE.findall(expr)) else None

    labels = tuple(keep(expr) or "''" for expr in spec.label_sql)
    return dataclasses.replace(
        spec,
        label_sql=labels,
        spend=keep(spec.spend),
        max_budget=keep(spec.max_budget),
        soft_budget=keep(spec.soft_budget),
        reset_at=keep(spec.reset_at),
        tpm_limit=keep(spec.tpm_limit),
        rpm_limit=keep(spec.rpm_limit),
        blocked=keep(spec.blocked),
        expires=keep(spec.expires),
    )


def _select(spec: _Spec, only_with_limits: bool, limit: int | None) -> sql.Composed:
    """The rows, the ``limit`` spending most in their current period first (ties by labels),
    each with the number of rows there are in all as its last column."""

    def epoch(expr: str | None) -> str:
        return _EPOCH.format(expr) if expr else "NULL::float8"

    def number(expr: str | None) -> str:
        return f"({expr})::float8" if expr else "NULL::float8"

    blocked = f"CASE WHEN {spec.blocked} THEN 1.0 ELSE 0.0 END" if spec.blocked else "NULL::float8"
    values = (
        number(spec.spend),
        number(spec.max_budget),
        number(spec.soft_budget),
        epoch(spec.reset_at),
        number(spec.tpm_limit),
        number(spec.rpm_limit),
        blocked,
        epoch(spec.expires),
    )
    # The expressions are this module's own SQL; the tables are identifiers.
    source = sql.SQL("{} e").format(sql.Identifier(spec.table))
    if any(expr and "b." in expr for expr in values):
        source = sql.SQL("{} LEFT JOIN {} b ON b.budget_id = e.budget_id").format(source, sql.Identifier(BUDGET_TABLE))
    where = ""
    if only_with_limits:
        conditions = [
            f"{expr} IS NOT NULL"
            for expr in (spec.max_budget, spec.soft_budget, spec.tpm_limit, spec.rpm_limit, spec.expires)
            if expr
        ]
        if spec.blocked:
            conditions.append(f"{spec.blocked} IS TRUE")
        where = " WHERE " + (" OR ".join(conditions) or "FALSE")
    order = ", ".join(str(i + 1) for i in range(len(spec.label_sql)))
    cap = f" ORDER BY {len(spec.label_sql) + 1} DESC NULLS LAST, {order} LIMIT {int(limit)}" if limit else ""
    return sql.SQL("SELECT {}, {}, count(*) OVER () FROM {}{}{}").format(
        sql.SQL(", ".join(spec.label_sql)), sql.SQL(", ".join(values)), source, sql.SQL(where), sql.SQL(cap)
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
            found = catalog.columns(conn, [spec.table for spec in SPECS] + [BUDGET_TABLE, WINDOW_TABLE])
            for declared in SPECS:
                entity = self._config.entities[declared.entity]
                spec = _adapt(declared, found) if entity.enabled else None
                if spec is not None:
                    # The cap keeps whole rows: the entities spending most in their current period.
                    found_rows = conn.execute(_select(spec, entity.only_with_limits, entity.max_series)).fetchall()
                    rows = {
                        tuple(str(v) for v in row[: len(spec.labels)]): row[len(spec.labels) : -1] for row in found_rows
                    }
                    total = found_rows[0][-1] if found_rows else 0
                    over[BY_NAME[spec.entity].budget_family] = total - len(found_rows)
                    families += _families(spec, rows)
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
        labels = ("entity_type", "entity_id", "window")
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


def _families(spec: _Spec, rows: dict[tuple[str, ...], tuple[float | None, ...]]) -> list[Family]:
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

    the = f"The {spec.describe}'s"
    docs = {
        "budget_spend_usd": f"{the} spend in US dollars in its current budget period (LiteLLM's spend column).",
        "max_budget_usd": f"{the} maximum budget in US dollars per budget period.",
        "soft_budget_usd": f"{the} soft budget in US dollars: crossing it alerts, it does not block.",
        "budget_remaining_usd": f"{the} max budget minus its spend; negative when overspent.",
        "budget_reset_timestamp_seconds": f"When the {spec.describe}'s budget period next resets, as a Unix time.",
        "tpm_limit": f"{the} tokens-per-minute limit.",
        "rpm_limit": f"{the} requests-per-minute limit.",
        "blocked": f"Whether the {spec.describe} is blocked (1) or not (0).",
        "expires_timestamp_seconds": f"When the {spec.describe} expires, as a Unix time.",
    }
    families = []
    for name, found in samples.items():
        # A family the entity cannot have (a user's soft budget, a tag's expiry) is left out.
        if not found and not _applies(spec, name):
            continue
        families.append(build(f"{BY_NAME[spec.entity].family}_{name}", docs[name], "gauge", spec.labels, found))
    return families


def _applies(spec: _Spec, name: str) -> bool:
    return {
        "soft_budget_usd": spec.soft_budget is not None,
        "tpm_limit": spec.tpm_limit is not None,
        "rpm_limit": spec.rpm_limit is not None,
        "blocked": spec.blocked is not None,
        "expires_timestamp_seconds": spec.expires is not None,
    }.get(name, True)
