"""The usage families as published: one counter per measure and view, labelled by the ids of
the entities shown (with aliases, and a key's team), ``__other__`` for the rest; rebuilt only
for the views whose sums or aliases changed, and never below what they published before."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ... import catalog
from ...cardinality import OTHER, OVERFLOW_LABEL
from ...config import UsageConfig
from ...entities import BY_NAME, KEY_HASH_LENGTH
from ...families import Family, build
from .queries import View
from .state import Membership, SourceState
from .tables import ALL_SOURCES, ENTITY_SOURCES, SUMS_TYPE, USER_SOURCE, Group, Source, Sums

# Where the labels of ids come from: aliases and a key's team.
METADATA_TABLES = (
    "LiteLLM_VerificationToken",
    "LiteLLM_DeletedVerificationToken",
    "LiteLLM_TeamTable",
    "LiteLLM_DeletedTeamTable",
    "LiteLLM_OrganizationTable",
)

# Per entity: the labels its id becomes where it is not the id's logical name.
_ID_LABELS = {
    "key": ("key_hash", "key_alias", "team_id"),
    "team": ("team_id", "team_alias"),
    "organization": ("organization_id", "organization_alias"),
}
_DESCRIBED = {
    "key": " by virtual key",
    "user": " by internal user",
    "team": " by team",
    "organization": " by organization",
    "end_user": " by end user (the caller's customer id)",
    "tag": " by request tag",
    "agent": " by agent",
    "task": " by task type",
    "tool": " by tool",
    "guardrail": " by guardrail",
    "policy": " by policy",
}


@dataclass(frozen=True)
class Aliases:
    """The labels of the shown entities' ids: a key's alias and team, a team's and an
    organisation's alias."""

    keys: dict[str, tuple[str, str]]
    teams: dict[str, str]
    organizations: dict[str, str]


# Per series (family, labels): the values published, one per measure.
Published = dict[tuple[str, tuple[str, ...]], Sums]


@dataclass(frozen=True)
class _Built:
    """One view's families as last built: what they were built from (its membership, base and
    window sums, and aliases), them, and the values they published."""

    membership: Membership
    old: dict[Group, Sums]
    recent: dict[Group, Sums]
    window: dict[Group, Sums]
    metadata: dict[str, Any] | None
    families: list[Family]
    published: Published

    def built_from(self, state: SourceState, index: int, metadata: object) -> bool:
        # The old and recent parts only change at a resync (new dicts), so identity says they
        # are the same; the window and the aliases are compared by value (a few thousand
        # entries at most).
        return (
            self.membership == state.memberships[index]
            and self.old is state.old[index]
            and self.recent is state.recent[index]
            and self.window == state.window[index]
            and self.metadata == metadata
        )


def read_aliases(conn: psycopg.Connection, states: dict[str, SourceState]) -> Aliases:
    """Aliases and a key's team, for the entities shown only."""

    def shown(entity: str) -> list[str]:
        ids: set[str] = set()
        for state in states.values():
            for index, view in enumerate(state.views):
                if view.entity == entity:
                    ids.update(g[0] for d in (state.old[index], state.recent[index], state.window[index]) for g in d)
        ids.discard(OTHER)
        return sorted(ids)

    found = catalog.columns(conn, METADATA_TABLES)

    def rows(table: str, select: str, where: str, ids: list[str], order: str = "") -> Iterable[tuple[Any, ...]]:
        if table not in found or not ids:
            return []
        query = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s){}").format(
            sql.SQL(select), sql.Identifier(table), sql.Identifier(where), sql.SQL(order)
        )
        return conn.execute(query, (ids,)).fetchall()

    key_meta: dict[str, tuple[str, str]] = {}
    keys = shown("key")
    # Deleted keys first, oldest first, so that the newest and a live key win.
    key_columns = "token, coalesce(key_alias, ''), coalesce(team_id, '')"
    for table in ("LiteLLM_DeletedVerificationToken", "LiteLLM_VerificationToken"):
        order = " ORDER BY deleted_at" if table.startswith("LiteLLM_Deleted") else ""
        for token, alias, team in rows(table, key_columns, "token", keys, order):
            key_meta[token] = (alias, team)
    team_alias: dict[str, str] = {}
    teams = shown("team")
    for table in ("LiteLLM_DeletedTeamTable", "LiteLLM_TeamTable"):
        order = " ORDER BY deleted_at" if table.startswith("LiteLLM_Deleted") else ""
        for team_id, alias in rows(table, "team_id, coalesce(team_alias, '')", "team_id", teams, order):
            team_alias[team_id] = alias
    org_alias: dict[str, str] = {}
    org_columns = "organization_id, coalesce(organization_alias, '')"
    orgs = shown("organization")
    for org_id, alias in rows("LiteLLM_OrganizationTable", org_columns, "organization_id", orgs):
        org_alias[org_id] = alias
    return Aliases(key_meta, team_alias, org_alias)


class Publisher:
    """The families of the engine's sums, and what they last published."""

    def __init__(self) -> None:
        self._published: Published = {}
        # Per view: what its families were built from, and them; most polls change nothing.
        self._built: dict[str, _Built] = {}
        self._aliases = Aliases({}, {}, {})

    def aliases(self, found: Aliases) -> None:
        """The aliases ``read_aliases`` found, for the families built from now on."""
        self._aliases = found

    def families(self, states: dict[str, SourceState], config: UsageConfig) -> list[Family]:
        families: list[Family] = []
        published: Published = {}
        for source in ALL_SOURCES:
            state = states.get(source.table)
            if state is None:
                continue
            for index, view in enumerate(state.views):
                families += self._view_families(state, index, view, published)
        self._published = published
        return [*families, _source_info(states, config), _latest_updates(states)]

    def _id_labels(self, kind: str | None, entity: str) -> tuple[str, ...]:
        if kind == "key":
            alias, team = self._aliases.keys.get(entity, ("", ""))
            return (sys.intern(entity[:KEY_HASH_LENGTH]), alias, team)
        if kind == "team":
            return (entity, self._aliases.teams.get(entity, ""))
        if kind == "organization":
            return (entity, self._aliases.organizations.get(entity, ""))
        return (entity,)

    def _metadata_for(self, kind: str | None) -> object:
        aliases = self._aliases
        return {"key": aliases.keys, "team": aliases.teams, "organization": aliases.organizations}.get(kind or "")

    def _view_families(self, state: SourceState, index: int, view: View, published: Published) -> list[Family]:
        metadata = self._metadata_for(view.entity)
        built = self._built.get(view.key)
        if built is not None and built.built_from(state, index, metadata):
            published.update(built.published)
            return built.families
        families, mine = self._build_view_families(state, index, view)
        published.update(mine)
        self._built[view.key] = _Built(
            state.memberships[index],
            state.old[index],
            state.recent[index],
            state.window[index],
            dict(metadata) if isinstance(metadata, dict) else None,
            families,
            mine,
        )
        return families

    def _build_view_families(self, state: SourceState, index: int, view: View) -> tuple[list[Family], Published]:
        """The view's families, and the values they publish per series."""
        published: Published = {}
        id_labels = _ID_LABELS.get(view.entity or "", (view.id,))
        describe = _DESCRIBED.get(view.entity or "", "")
        labels = id_labels + view.extras + (OVERFLOW_LABEL,)
        digest = state.memberships[index].digest
        series: dict[tuple[str, ...], Sums] = {}
        for group, values in state.totals(index).items():
            entity, extras = group[0], group[1:]
            if entity == OTHER:
                key = (OTHER,) + ("",) * (len(id_labels) - 1) + extras + (digest,)
            else:
                key = self._id_labels(view.entity, entity) + extras + ("",)
            current = series.get(key)
            if current is None:
                series[key] = values
            else:  # two keys whose hashes share their first characters: one series
                for k, value in enumerate(values):
                    current[k] += value
        # A counter must never go down; the tables only shrink when rows are deleted by hand or
        # by the tag table's optional retention, and that is not negative usage.
        previous = self._published
        ordered = []
        for key, values in sorted(series.items()):
            before = previous.get((view.key, key))
            kept = array(SUMS_TYPE, map(max, values, before)) if before is not None else values
            published[(view.key, key)] = kept
            ordered.append((key, kept))
        families = []
        for k, measure in enumerate(state.reading.measures):
            if view.entity is not None and not measure.per_entity:
                continue
            families.append(
                build(
                    f"{view.family}_{measure.name}",
                    f"{measure.documentation}{describe}, summed over {state.reading.table} (all time).",
                    "counter",
                    labels,
                    [(key, values[k] / measure.units * measure.scale) for key, values in ordered],
                    omit_empty=(OVERFLOW_LABEL,),
                )
            )
        return families, published


def _latest_updates(states: dict[str, SourceState]) -> Family:
    return build(
        "litellm_daily_spend_latest_update_timestamp_seconds",
        "The newest updated_at among a daily spend table's recent rows, as a Unix time.",
        "gauge",
        ("table",),
        [
            ((table,), state.latest_update)
            for table, state in sorted(states.items())
            if state.latest_update is not None and state.reading.table == table
        ],
    )


def _source_info(states: dict[str, SourceState], config: UsageConfig) -> Family:
    """Which table each usage family is read from, or "none" where this schema has none."""
    samples = []
    by_entity: dict[str | None, Source] = {None: USER_SOURCE, "key": USER_SOURCE, "user": USER_SOURCE}
    by_entity.update(ENTITY_SOURCES)
    for entity, source in by_entity.items():
        if entity is not None and not config.entity(entity).enabled:
            continue
        family = BY_NAME[entity].family if entity is not None else "litellm"
        state = states.get(source.table)
        samples.append(((family, state.reading.table if state else "none"), 1.0))
    return build(
        "litellm_exporter_source_info",
        "The table each usage family is read from: a daily rollup table, LiteLLM_SpendLogs, or none.",
        "gauge",
        ("family", "source"),
        samples,
    )
