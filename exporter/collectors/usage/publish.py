"""The usage families as published: one counter per measure and view, labelled by the ids of
the entities shown (with aliases, and a key's team), ``__other__`` for the rest; rebuilt only
for the views whose sums or aliases changed, and never below what they published before."""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ... import catalog
from ...cardinality import OTHER, OVERFLOW_LABEL
from ...config import UsageConfig
from ...entities import BY_NAME, TABLE, Entity
from ...families import Family, build
from .queries import View
from .state import Membership, SourceState
from .tables import ALL_SOURCES, SPEND_SOURCES, SUMS_TYPE, Group, Sums

# The entities whose ids are labelled by aliases (a key's alias and team, a team's alias), and
# the tables those come from: deleted rows first, so that a live row wins.
_ALIASED = tuple(e for e in TABLE if e.record is not None and e.record.aliases)
METADATA_TABLES = tuple(t for e in _ALIASED if e.record for t in (e.record.deleted, e.record.table) if t)

# Per entity, per id shown: the aliases that label it, in ``Record.aliases``' order.
Aliases = dict[str, dict[str, tuple[str, ...]]]


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
    """The aliases of the entities shown only."""

    def shown(entity: str) -> list[str]:
        ids: set[str] = set()
        for state in states.values():
            for index, view in enumerate(state.views):
                if view.entity == entity:
                    ids.update(g[0] for d in (state.old[index], state.recent[index], state.window[index]) for g in d)
        ids.discard(OTHER)
        return sorted(ids)

    found = catalog.columns(conn, METADATA_TABLES)
    aliases: Aliases = {}
    for entity in _ALIASED:
        record, ids, labels = entity.record, shown(entity.name), aliases.setdefault(entity.name, {})
        if record is None or not ids:
            continue
        (id_column,) = record.id
        select = sql.SQL(", ").join(
            [sql.Identifier(id_column)]
            + [sql.SQL("coalesce({}, '')").format(sql.Identifier(a)) for a in record.aliases]
        )
        for table in (record.deleted, record.table):
            if table is None or table not in found:
                continue
            # Deleted rows oldest first, so that the newest and a live one win.
            order = sql.SQL(" ORDER BY deleted_at" if table == record.deleted else "")
            query = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s){}").format(
                select, sql.Identifier(table), sql.Identifier(id_column), order
            )
            for row in conn.execute(query, (ids,)):
                labels[row[0]] = tuple(row[1:])
    return aliases


class Publisher:
    """The families of the engine's sums, and what they last published."""

    def __init__(self) -> None:
        self._published: Published = {}
        # Per view: what its families were built from, and them; most polls change nothing.
        self._built: dict[str, _Built] = {}
        self._aliases: Aliases = {}

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

    def _id_labels(self, entity: Entity | None, entity_id: str) -> tuple[str, ...]:
        if entity is None:
            return (entity_id,)
        shown = sys.intern(entity_id[: entity.id_prefix]) if entity.id_prefix else entity_id
        if entity.record is None or not entity.record.aliases:
            return (shown,)
        aliases = self._aliases.get(entity.name, {}).get(entity_id, ("",) * len(entity.record.aliases))
        return (shown, *aliases)

    def _view_families(self, state: SourceState, index: int, view: View, published: Published) -> list[Family]:
        metadata = self._aliases.get(view.entity) if view.entity else None
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
        entity = BY_NAME[view.entity] if view.entity else None
        id_labels = entity.labels if entity else (view.id,)
        describe = entity.described_by if entity else ""
        labels = id_labels + view.extras + (OVERFLOW_LABEL,)
        digest = state.memberships[index].digest
        series: dict[tuple[str, ...], Sums] = {}
        for group, values in state.totals(index).items():
            entity_id, extras = group[0], group[1:]
            if entity_id == OTHER:
                key = (OTHER,) + ("",) * (len(id_labels) - 1) + extras + (digest,)
            else:
                key = self._id_labels(entity, entity_id) + extras + ("",)
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
    for source in SPEND_SOURCES:
        for view in source.views:
            if view.entity is not None and not config.entity(view.entity).enabled:
                continue
            state = states.get(source.table)
            samples.append(((view.family, state.reading.table if state else "none"), 1.0))
    return build(
        "litellm_exporter_source_info",
        "The table each usage family is read from: a daily rollup table, LiteLLM_SpendLogs, or none.",
        "gauge",
        ("family", "source"),
        samples,
    )
