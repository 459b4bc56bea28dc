"""The SQL that sums the usage tables of the catalogue (``tables``).

Every sum is computed by PostgreSQL and grouped by the labels the families publish, so what
reaches Python is about one row per series, never one per daily row or request. One table is
read by one query per poll (``folded_query``): a plain ``GROUP BY`` by every label its families
use together, which PostgreSQL runs with parallel workers; each family is summed from its rows
in Python. The rankings that decide the entities a capped family shows are grouped by entity,
one measure, and only the top of them reaches Python (``rank_query``, ``rank_delta_query``).
"""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from ...cardinality import OTHER
from ...catalog import SPEND_LOGS
from .tables import FINER, SPEND_LOG_MEASURES, SUMS_TYPE, Group, Measure, Source, Sums


@dataclass(frozen=True)
class View:
    """One family group's grouping of a source, as configured: the entity id it is keyed by,
    the columns grouped beside it, and its cap (entities shown; None for no cap)."""

    family: str
    id: str
    extras: tuple[str, ...]
    cap: int | None
    entity: str | None = None
    key: str = ""  # the spec's unique key

    @property
    def width(self) -> int:
        return 1 + len(self.extras)


@dataclass(frozen=True)
class Reading:
    """How one source's rows are read: the daily table's, or LiteLLM_SpendLogs'."""

    table: str
    measures: tuple[Measure, ...]
    relation: sql.Composable  # FROM clause
    position: sql.Composable  # the column a poll's window is cut on: date, or startTime
    start_type: sql.Composable  # the cast of the window's start parameter
    # logical name -> expression, NULL where the row has none ('' where the table lacks the
    # column); grouping on the bare column is cheaper, and NULL joins '' after grouping.
    columns: dict[str, sql.Composable]
    values: tuple[sql.Composable, ...]  # one expression per measure
    rank: int  # the measure capped views rank their entities by
    updated: sql.Composable | None  # updated_at, where the table has it
    required: sql.Composable  # extra WHERE condition, or empty


def _column(column: str) -> sql.Composable:
    # ::text is no cast at all on a text column; status codes are integers.
    return sql.SQL("d.{}::text").format(sql.Identifier(column))


def _exact(value: sql.Composable, measure: Measure) -> sql.Composable:
    """A row's value of a measure as a whole number of its units (``tables.Sums``)."""
    if measure.money:
        return sql.SQL("round(({})::float8 * {})::int8").format(value, sql.Literal(measure.units))
    return sql.SQL("({})::int8").format(value)


def daily_reading(source: Source, columns: set[str], *, per_entity_only: bool = False) -> Reading | None:
    """How a daily table is read; ``per_entity_only``: no view of it is global, so the measures
    only global families publish are not summed at all."""
    if not set(source.required) <= columns:
        return None  # too old a table (LiteLLM 0.1.0's had no request counts)
    measures = tuple(
        m
        for m in source.measures
        if set(m.needs) <= columns and (m.per_entity or not per_entity_only or m.column == source.rank)
    )
    values = tuple(
        _exact(sql.SQL(" + ").join(sql.SQL("d.{}").format(sql.Identifier(c)) for c in m.needs), m) for m in measures
    )
    return Reading(
        table=source.table,
        measures=measures,
        relation=sql.SQL("{} d").format(sql.Identifier(source.table)),
        position=sql.SQL("d.date"),
        start_type=sql.SQL("text"),
        columns={name: _column(column) if column in columns else sql.Literal("") for name, column in source.columns},
        values=values,
        rank=[m.column for m in measures].index(source.rank),
        updated=sql.SQL("d.updated_at") if "updated_at" in columns else None,
        required=sql.SQL(""),
    )


def spend_log_reading(source: Source, columns: set[str]) -> Reading | None:
    if source.spend_log_columns is None:
        return None
    if source.spend_log_required and source.spend_log_required not in columns:
        return None  # e.g. organization_id, which older spend logs do not have
    expressions: dict[str, sql.Composable] = {}
    relation: sql.Composable = sql.SQL('"LiteLLM_SpendLogs" s')
    for name, column in source.spend_log_columns:
        if column == "tag":
            expressions[name] = sql.SQL("t.tag")
            # One row per tag of the request, as LiteLLM's daily tag table counts them.
            relation = sql.SQL(
                '"LiteLLM_SpendLogs" s CROSS JOIN LATERAL jsonb_array_elements_text(CASE WHEN'
                " jsonb_typeof(s.request_tags) = 'array' THEN s.request_tags ELSE '[]'::jsonb END) AS t(tag)"
            )
        elif column in columns:
            expressions[name] = sql.SQL("s.{}").format(sql.Identifier(column))
        else:
            expressions[name] = sql.Literal("")
    failed = sql.SQL("CASE WHEN s.status = 'failure' THEN 1 ELSE 0 END") if "status" in columns else sql.SQL("0")
    return Reading(
        table=SPEND_LOGS,
        measures=SPEND_LOG_MEASURES,
        relation=relation,
        position=sql.SQL('s."startTime"'),
        start_type=sql.SQL("timestamp"),
        columns=expressions,
        values=tuple(
            _exact(v, m)
            for v, m in zip(
                (sql.SQL("s.spend"), sql.SQL("1"), failed, sql.SQL("s.prompt_tokens"), sql.SQL("s.completion_tokens")),
                SPEND_LOG_MEASURES,
                strict=True,
            )
        ),
        rank=0,  # spend
        updated=None,
        required=(
            sql.SQL(" AND coalesce(s.{}, '') <> ''").format(sql.Identifier(source.spend_log_required))
            if source.spend_log_required
            else sql.SQL("")
        ),
    )


def _bound(reading: Reading, op: str, param: str) -> sql.Composable:
    return sql.SQL("{} {} {}::{}").format(reading.position, sql.SQL(op), sql.Placeholder(param), reading.start_type)


def _span(reading: Reading, lo: str | None, hi: str | None) -> sql.Composable:
    """The rows on or after the parameter ``lo`` and before ``hi`` (either may be open)."""
    parts: list[sql.Composable] = [sql.SQL("TRUE")]
    if lo:
        parts.append(_bound(reading, ">=", lo))
    if hi:
        parts.append(_bound(reading, "<", hi))
    return sql.Composed([sql.SQL(" AND ").join(parts), reading.required])


def _id_expr(reading: Reading, column: str) -> sql.Composable:
    return sql.SQL("coalesce({}, '')").format(reading.columns[column])


# Where a full read puts a row's sums: the state's three parts (see the collector).
OLD, RECENT, WINDOW = 0, 1, 2


def _by_ids(
    reading: Reading, views: tuple[View, ...], sums: dict[str, sql.Composable | None], lo: str | None
) -> tuple[sql.Composed, list[sql.Identifier]]:
    """The common table ``r`` of the rankings: the ranking measure summed (in float8) by every
    view's id together, once per name of ``sums`` (over the rows its condition holds for, or
    all), over the rows on or after ``lo`` (None: all); with the ids' column names."""
    ids = [sql.Identifier(f"i{j}") for j in range(len(views))]
    rank = reading.values[reading.rank]
    grouped = sql.SQL("r AS MATERIALIZED (SELECT {ids}, {sums} FROM {rel} WHERE {span} GROUP BY {keys})").format(
        ids=sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(_id_expr(reading, v.id), i) for v, i in zip(views, ids, strict=True)
        ),
        sums=sql.SQL(", ").join(
            sql.SQL("sum({}::float8){} AS {}").format(
                rank,
                sql.SQL(" FILTER (WHERE {})").format(condition) if condition is not None else sql.SQL(""),
                sql.Identifier(name),
            )
            for name, condition in sums.items()
        ),
        rel=reading.relation,
        span=_span(reading, lo, None),
        keys=sql.SQL(", ").join(sql.Literal(j + 1) for j in range(len(views))),
    )
    return grouped, ids


def rank_query(reading: Reading, views: tuple[View, ...], keep: tuple[int, ...]) -> sql.Composed:
    """The top ``keep[j] + 1`` entities of each capped view ``views[j]`` by their all-time total
    of the ranking measure, ties by id, with their old totals (before ``%(old_end)s``) and how
    many entities the view has. Rows: j, id, old total, total, entities (in no order).

    The table is grouped once by a plain ``GROUP BY`` of one measure, which PostgreSQL runs with
    parallel workers, by every view's id together: the entities of one table go together (a key
    has one user), so that the groups are about as many as the most numerous of them (measured:
    cheaper than grouping by each id apart, or than ``GROUPING SETS``). Only the top few reach
    Python. The sums are float8, whose partial sums the workers hand over for nothing (a bigint
    sum's are numerics): exact while an entity's total stays below 2**53 units (nine million
    dollars), and only an order beyond that."""
    old = _bound(reading, "<", "old_end")
    grouped, ids = _by_ids(reading, views, {"old": old, "total": None}, lo=None)
    parts = [
        sql.SQL(
            "(SELECT {j}, {i}, coalesce(sum(old), 0)::int8 AS old, coalesce(sum(total), 0)::int8 AS total,"
            ' count(*) OVER () FROM r GROUP BY {i} ORDER BY total DESC, {i} COLLATE "C" LIMIT {keep})'
        ).format(j=sql.Literal(j), i=i, keep=sql.Literal(k + 1))
        for j, (i, k) in enumerate(zip(ids, keep, strict=True))
    ]
    return sql.SQL("WITH {} {}").format(grouped, sql.SQL(" UNION ALL ").join(parts))


def old_totals_query(reading: Reading, view: View, with_empty: bool) -> sql.Composed:
    """The old totals of the ranking measure of the entities ``%(ids)s`` of a view (before
    ``%(old_end)s``), through the entity's index. Rows: id, old total."""
    return sql.SQL("SELECT {id}, coalesce(sum({rank}), 0)::int8 FROM {rel} WHERE {match} AND {span} GROUP BY 1").format(
        id=_id_expr(reading, view.id),
        rank=reading.values[reading.rank],
        rel=reading.relation,
        match=_matching(reading, view, with_empty),
        span=_span(reading, None, "old_end"),
    )


def _matching(reading: Reading, view: View, with_empty: bool) -> sql.Composable:
    """Rows of the entities ``%(ids)s`` of a view; ``with_empty``: the empty id is one of them,
    which also stands for NULL."""
    id_expr = reading.columns[view.id]
    match = sql.SQL("{} = ANY(%(ids)s::text[])").format(id_expr)
    if with_empty:
        match = sql.SQL("({} OR {} IS NULL)").format(match, id_expr)
    return match


def _slots(views: tuple[View, ...]) -> list[str]:
    """The logical columns a full read groups by: every view's id and extras, once each."""
    return list(dict.fromkeys(name for v in views for name in (v.id, *v.extras)))


def folded_query(
    reading: Reading,
    views: tuple[View, ...],
    members: tuple[frozenset[str] | None, ...],
    folded: frozenset[str],
    lo: str | None = None,
) -> tuple[sql.Composed, dict[str, object]]:
    """Every view's sums, split into the old part, the look-back and the window, from one pass.

    One plain ``GROUP BY`` (run with parallel workers, where ``GROUPING SETS`` are not) by the
    part and every column any view groups by, the ids named in ``folded`` already folded into
    ``__other__`` outside their view's members, so that the groups are about as many as the
    series the views serve together, not as many as the entities. ``decode_folded`` sums each
    view from them (folding the other capped ids). ``lo``: only the rows on or after that
    parameter (a resync's, a poll's). Rows: part, one value per slot (``_slots``), the sums,
    the row count, the newest updated_at."""
    params: dict[str, object] = {}
    slots = []
    for name in _slots(views):
        expr = _id_expr(reading, name)
        if name in folded:
            i = next(i for i, v in enumerate(views) if v.id == name)
            params[f"m{i}"] = sorted(members[i] or ())
            expr = sql.SQL("CASE WHEN {e} = ANY({m}::text[]) THEN {e} ELSE {other} END").format(
                e=expr, m=sql.Placeholder(f"m{i}"), other=sql.Literal(OTHER)
            )
        slots.append(expr)
    updated = reading.updated if reading.updated is not None else sql.SQL("NULL::timestamp")
    part: sql.Composable = sql.SQL("CASE WHEN {old} THEN {o} WHEN {recent} THEN {r} ELSE {w} END").format(
        old=_bound(reading, "<", "old_end"),
        recent=_bound(reading, "<", "start"),
        o=sql.Literal(OLD),
        r=sql.Literal(RECENT),
        w=sql.Literal(WINDOW),
    )
    if lo == "start":
        part = sql.Literal(WINDOW)  # a poll's: the window alone
    query = sql.SQL(
        "SELECT {part}, {slots}, {sums}, count(*),"
        " extract(epoch FROM max({updated}))::float8 FROM {rel} WHERE {span} GROUP BY {keys}"
    ).format(
        part=part,
        slots=sql.SQL(", ").join(slots),
        sums=sql.SQL(", ").join(sql.SQL("coalesce(sum({}), 0)::int8").format(v) for v in reading.values),
        updated=updated,
        rel=reading.relation,
        span=_span(reading, lo, None),
        keys=sql.SQL(", ").join(sql.Literal(j + 1) for j in range(len(slots) + 1)),
    )
    return query, params


@dataclass(frozen=True)
class Folded:
    """Rows of ``folded_query`` decoded: per part of the table (``OLD``, ``RECENT``, ``WINDOW``),
    one dict per view (group -> sums and row count); and the window's newest update."""

    old: list[dict[Group, Sums]]
    recent: list[dict[Group, Sums]]
    window: list[dict[Group, Sums]]
    latest_update: float | None

    @property
    def parts(self) -> tuple[list[dict[Group, Sums]], ...]:
        """The parts, in the order of their numbers (``OLD``, ``RECENT``, ``WINDOW``)."""
        return (self.old, self.recent, self.window)


def decode_folded(
    rows: list[tuple[Any, ...]], views: tuple[View, ...], members: tuple[frozenset[str] | None, ...], measures: int
) -> Folded:
    """Rows of ``folded_query``, the entities outside a view's ``members`` (where not None)
    summed as ``__other__``."""
    slots = _slots(views)
    picks = [[1 + slots.index(name) for name in (v.id, *v.extras)] for v in views]
    first, end = 1 + len(slots), 1 + len(slots) + measures + 1
    # Per part and view: each group's rows, summed column by column at the end (in C, by
    # zip and sum, rather than value by value).
    collected: list[list[dict[Group, list[tuple[int, ...]]]]] = [[{} for _ in views] for _ in range(3)]
    # Per view: the group a row's values of the view's columns make, computed once.
    groups: list[dict[tuple[str, ...], Group]] = [{} for _ in views]
    latest: float | None = None
    for row in rows:
        values = row[first:end]
        part = collected[row[0]]
        for i, pick in enumerate(picks):
            key = tuple(row[k] for k in pick)
            group = groups[i].get(key)
            if group is None:
                group = tuple(map(sys.intern, key))
                shown = members[i]
                if group[0] == OTHER or (shown is not None and group[0] not in shown):
                    group = other_group(views[i], group)
                groups[i][key] = group
            bucket = part[i].get(group)
            if bucket is None:
                part[i][group] = [values]
            else:
                bucket.append(values)
        updated = row[-1]
        if row[0] == WINDOW and updated is not None and (latest is None or updated > latest):
            latest = updated
    old, recent, window = (
        [
            {group: array(SUMS_TYPE, map(sum, zip(*bucket, strict=True))) for group, bucket in view.items()}
            for view in part
        ]
        for part in collected
    )
    return Folded(old, recent, window, latest)


def other_group(view: View, group: Group) -> Group:
    """The overflow entity's group for an entity's group: it keeps one series per model group
    (and status code, ...), nothing finer, as the SQL folds it."""
    return (OTHER, *("" if extra in FINER else value for extra, value in zip(view.extras, group[1:], strict=True)))


def rank_delta_query(reading: Reading, views: tuple[View, ...]) -> sql.Composed:
    """Per entity of each capped view ``views[j]`` with rows on or after ``%(lo)s``, its
    ranking measure over them, split at ``%(old_end)s``. Rows: j, id, before, on or after.
    Grouped as ``rank_query`` is, by every view's id together, by plain ``GROUP BY``."""
    before = _bound(reading, "<", "old_end")
    grouped, ids = _by_ids(reading, views, {"before": before, "after": sql.SQL("NOT {}").format(before)}, lo="lo")
    parts = [
        sql.SQL(
            "SELECT {j}, {i}, coalesce(sum(before), 0)::int8, coalesce(sum(after), 0)::int8 FROM r GROUP BY {i}"
        ).format(j=sql.Literal(j), i=i)
        for j, i in enumerate(ids)
    ]
    return sql.SQL("WITH {} {}").format(grouped, sql.SQL(" UNION ALL ").join(parts))


def entity_sums_query(reading: Reading, view: View, with_empty: bool) -> sql.Composed:
    """The sums of the entities ``%(ids)s`` of one view over the rows before ``%(lo)s``, by the
    view's groups: (id, extras..., sums..., row count)."""
    return sql.SQL("SELECT {id}{extras}, {sums}, count(*) FROM {rel} WHERE {match} AND {span} GROUP BY {keys}").format(
        id=_id_expr(reading, view.id),
        extras=sql.SQL("").join(sql.SQL(", {}").format(_id_expr(reading, x)) for x in view.extras),
        sums=sql.SQL(", ").join(sql.SQL("coalesce(sum({}), 0)::int8").format(v) for v in reading.values),
        rel=reading.relation,
        match=_matching(reading, view, with_empty),
        span=_span(reading, None, "lo"),
        keys=sql.SQL(", ").join(sql.Literal(j + 1) for j in range(view.width)),
    )
