"""The SQL that sums the usage tables of the catalogue (``tables``).

Every sum is computed by PostgreSQL and grouped by the label sets the families publish, so
what reaches Python is one row per series, never one per daily row or request. One table is
read by one query per poll: the families it feeds are ``GROUPING SETS`` of that query.
"""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from ...cardinality import OTHER
from ...catalog import SPEND_LOGS
from .tables import FINER, SPEND_LOG_MEASURES, Group, Measure, Source, Sums


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
    rank: sql.Composable  # what capped views rank their entities by
    updated: sql.Composable | None  # updated_at, where the table has it
    required: sql.Composable  # extra WHERE condition, or empty


def _column(column: str) -> sql.Composable:
    # ::text is no cast at all on a text column; status codes are integers.
    return sql.SQL("d.{}::text").format(sql.Identifier(column))


def daily_reading(source: Source, columns: set[str]) -> Reading | None:
    if not set(source.required) <= columns:
        return None  # too old a table (LiteLLM 0.1.0's had no request counts)
    measures = tuple(m for m in source.measures if set(m.needs) <= columns)
    values = tuple(sql.SQL(" + ").join(sql.SQL("d.{}").format(sql.Identifier(c)) for c in m.needs) for m in measures)
    return Reading(
        table=source.table,
        measures=measures,
        relation=sql.SQL("{} d").format(sql.Identifier(source.table)),
        position=sql.SQL("d.date"),
        start_type=sql.SQL("text"),
        columns={name: _column(column) if column in columns else sql.Literal("") for name, column in source.columns},
        values=values,
        rank=values[[m.column for m in measures].index(source.rank)],
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
        values=(sql.SQL("s.spend"), sql.SQL("1"), failed, sql.SQL("s.prompt_tokens"), sql.SQL("s.completion_tokens")),
        rank=sql.SQL("s.spend"),
        updated=None,
        required=(
            sql.SQL(" AND coalesce(s.{}, '') <> ''").format(sql.Identifier(source.spend_log_required))
            if source.spend_log_required
            else sql.SQL("")
        ),
    )


def _mask(views: int, index: int) -> int:
    """What GROUPING(v0_id, v1_id, ...) returns for a row of the index-th grouping set."""
    return (1 << views) - 1 - (1 << (views - 1 - index))


def _ids(views: tuple[View, ...]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(f"v{i}_id") for i in range(len(views)))


def rank_query(reading: Reading, views: tuple[View, ...]) -> tuple[sql.Composed, dict[int, int]]:
    """The top entities of every capped view by all-time spend (ties by id), with how many
    entities each has. Rows: GROUPING mask, id, entities in the view; with the mask's view."""
    capped = tuple(v for v in views if v.cap is not None)
    inner = sql.SQL("SELECT {ids}, {spend} AS spend FROM {rel} WHERE TRUE{req} OFFSET 0").format(
        ids=sql.SQL(", ").join(
            sql.SQL("coalesce({}, '') AS {}").format(reading.columns[v.id], sql.Identifier(f"v{i}_id"))
            for i, v in enumerate(capped)
        ),
        spend=reading.rank,
        rel=reading.relation,
        req=reading.required,
    )
    limits = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(sql.Literal(_mask(len(capped), i)), sql.Literal(v.cap))
        for i, v in enumerate(capped)
    )
    query = sql.SQL(
        "SELECT w, id, n FROM ("
        " SELECT w, id, count(*) OVER (PARTITION BY w) AS n,"
        ' row_number() OVER (PARTITION BY w ORDER BY spend DESC, id COLLATE "C") AS r FROM ('
        "  SELECT GROUPING({ids}) AS w, coalesce({ids}) AS id, coalesce(sum(spend), 0) AS spend"
        "  FROM ({inner}) x GROUP BY GROUPING SETS ({sets})) g"
        ") ranked WHERE r <= CASE w {limits} END"
    ).format(
        ids=_ids(capped),
        inner=inner,
        sets=sql.SQL(", ").join(sql.SQL("({})").format(sql.Identifier(f"v{i}_id")) for i in range(len(capped))),
        limits=limits,
    )
    return query, {_mask(len(capped), i): views.index(v) for i, v in enumerate(capped)}


def sums_query(
    reading: Reading, views: tuple[View, ...], members: tuple[frozenset[str] | None, ...], *, window: bool
) -> tuple[sql.Composed, dict[str, object]]:
    """Every view's sums over the rows on or after the window's start (``window``) or before
    it (the base), an entity outside a view's members counted as ``__other__``.

    Rows: GROUPING mask, then each view's id and extras (NULL outside its own grouping set),
    then one sum per measure, then the newest updated_at (window only)."""
    params: dict[str, object] = {}
    joins: list[sql.Composable] = []
    select: list[sql.Composable] = []
    sets: list[sql.Composable] = []
    for i, view in enumerate(views):
        names = [f"v{i}_id"] + [f"v{i}_e{j}" for j in range(len(view.extras))]
        id_expr = sql.SQL("coalesce({}, '')").format(reading.columns[view.id])
        if members[i] is None:
            shown = [reading.columns[view.id]] + [reading.columns[e] for e in view.extras]
        else:
            params[f"m{i}"] = sorted(members[i])  # type: ignore[arg-type]
            joins.append(
                sql.SQL(" LEFT JOIN unnest({p}::text[]) AS {m}(id) ON {m}.id = {e}").format(
                    p=sql.Placeholder(f"m{i}"), m=sql.Identifier(f"m{i}"), e=id_expr
                )
            )
            outside = sql.SQL("{}.id IS NULL").format(sql.Identifier(f"m{i}"))
            shown = [sql.SQL("CASE WHEN {} THEN {} ELSE {} END").format(outside, sql.Literal(OTHER), id_expr)]
            for extra in view.extras:
                column = reading.columns[extra]
                # The overflow entity keeps one series per model group (and status code, ...),
                # nothing finer.
                shown.append(
                    column
                    if extra not in FINER
                    else sql.SQL("CASE WHEN {} THEN '' ELSE {} END").format(outside, column)
                )
        select += [sql.SQL("{} AS {}").format(e, sql.Identifier(n)) for e, n in zip(shown, names, strict=True)]
        sets.append(sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(n) for n in names)))
    select += [sql.SQL("{} AS {}").format(v, sql.Identifier(f"m_{k}")) for k, v in enumerate(reading.values)]
    track_updates = window and reading.updated is not None
    if track_updates:
        select.append(sql.SQL("{} AS updated").format(reading.updated))
    # OFFSET 0 keeps the subquery from being flattened: flattened, one column grouped under two
    # names (model_group, in several sets) becomes one, and GROUPING SETS mix them up.
    inner = sql.SQL("SELECT {select} FROM {rel}{joins} WHERE {pos} {op} {start}::{type}{req} OFFSET 0").format(
        select=sql.SQL(", ").join(select),
        rel=reading.relation,
        joins=sql.SQL("").join(joins),
        pos=reading.position,
        op=sql.SQL(">=" if window else "<"),
        start=sql.Placeholder("start"),
        type=reading.start_type,
        req=reading.required,
    )
    outputs: list[sql.Composable] = [sql.SQL("GROUPING({})").format(_ids(views))]
    for i, view in enumerate(views):
        names = [f"v{i}_id"] + [f"v{i}_e{j}" for j in range(len(view.extras))]
        outputs += [sql.SQL("coalesce({}, '')").format(sql.Identifier(n)) for n in names]
    # float8 sums: exact for integers below 2**53, and far cheaper for the server than numeric.
    outputs += [
        sql.SQL("coalesce(sum({}::float8), 0)").format(sql.Identifier(f"m_{k}")) for k in range(len(reading.values))
    ]
    outputs.append(sql.SQL("extract(epoch FROM max(updated))::float8") if track_updates else sql.SQL("NULL::float8"))
    query = sql.SQL("SELECT {out} FROM ({inner}) x GROUP BY GROUPING SETS ({sets})").format(
        out=sql.SQL(", ").join(outputs), inner=inner, sets=sql.SQL(", ").join(sets)
    )
    return query, params


def decode_sums(
    rows: list[tuple[Any, ...]], views: tuple[View, ...], measures: int
) -> tuple[list[dict[Group, Sums]], float | None]:
    """Rows of ``sums_query`` as one dict per view (group -> sums), and the newest update."""
    by_mask = {_mask(len(views), i): i for i in range(len(views))}
    offsets = []
    offset = 1
    for view in views:
        offsets.append(offset)
        offset += view.width
    result: list[dict[Group, Sums]] = [{} for _ in views]
    latest: float | None = None
    for row in rows:
        i = by_mask[row[0]]
        start = offsets[i]
        # One string object per distinct id, however many sums and series hold it.
        group = tuple(map(sys.intern, row[start : start + views[i].width]))
        values = array("d", row[offset : offset + measures])
        current = result[i].get(group)
        if current is None:
            result[i][group] = values
        else:  # NULL and '' grouped apart, one entity all the same
            for k, value in enumerate(values):
                current[k] += value
        updated = row[offset + measures]
        if updated is not None and (latest is None or updated > latest):
            latest = updated
    return result, latest
