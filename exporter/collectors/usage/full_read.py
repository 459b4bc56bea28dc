"""A full read of the usage tables: each table ranked (one measure, grouped by entity) and
summed (one pass, folded by the entities shown), the tables side by side on connections sharing
one snapshot where the server allows."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import psycopg
from psycopg import sql

from ... import catalog
from ...db import Database, SnapshotUnavailable
from .engine import Progress, Reader, folded, hash_aggregates, window_query
from .queries import Reading, View, decode_folded, rank_query
from .ranking import Entry, Ranking, contenders, ranked, top
from .state import Membership, SourceState, entity_totals, fold, raw
from .tables import Source

log = logging.getLogger(__name__)


def read_in_full(
    reader: Reader,
    db: Database,
    conn: psycopg.Connection,
    sources: list[Source],
    now: datetime,
    progress: Progress,
    *,
    helpers: int,
) -> dict[str, SourceState]:
    """Read ``sources`` in full: side by side on ``helpers`` more connections sharing this
    transaction's snapshot (SnapshotUnavailable where the server will not export it), else one
    after another."""
    queue = list(reversed(sources))
    states: dict[str, SourceState] = {}

    def work(c: psycopg.Connection) -> None:
        while True:
            try:
                source = queue.pop()  # atomic: list.pop holds the GIL
            except IndexError:
                return
            state, rows = read_full(reader, c, source, now)
            if state is not None:
                states[source.table] = state
            if c is not conn:
                reader.count("helper")  # a table a helper connection read
            progress.table_read(rows)

    snapshot = db.export_snapshot(conn) if helpers > 0 else None
    if snapshot is None:
        work(conn)
    else:
        with ThreadPoolExecutor(helpers, thread_name_prefix="usage-read") as pool:
            futures = [pool.submit(_help, db, snapshot, work) for _ in range(helpers)]
            try:
                work(conn)
            finally:
                queue.clear()  # on a failure here, the helpers stop after their table
                errors = [f.exception() for f in futures]
            for error in errors:
                if error is not None:
                    raise error
    return states


def _help(db: Database, snapshot: str, work: Callable[[psycopg.Connection], None]) -> None:
    """A helper connection's share of a full read, in the poll's snapshot."""
    try:
        with db.in_snapshot(snapshot) as conn:
            hash_aggregates(conn)  # as the poll's own transaction does
            work(conn)
    except SnapshotUnavailable as exc:
        # The poll's own connection reads what this one would have.
        log.debug("usage: a helper connection could not share the snapshot: %s", exc)


def read_full(
    reader: Reader, conn: psycopg.Connection, source: Source, now: datetime
) -> tuple[SourceState | None, int]:
    """One source read in full: each capped view's entities ranked (one measure, grouped by
    entity), then every view's sums in one pass, folded by the entities shown. Returns the
    state and the rows read."""
    views = reader.views(source)
    reading = reader.reading(conn, source, views)
    if reading is None:
        return None, 0
    cuts = reader.cuts(reading, now)
    params = cuts.params()
    # A capped view is ranked before the pass that sums, so that the pass can fold its
    # entities in SQL, unless its column is grouped by as it is anyway (model_group), or
    # the planner's statistics say it has no more entities than the cap: those are ranked
    # from the sums.
    grouped = raw(views)
    first = [
        i
        for i, v in enumerate(views)
        if v.cap is not None and v.id not in grouped and not _few(conn, source, reading, v)
    ]
    rankings: list[Ranking | None] = [None for _ in views]
    members: list[frozenset[str] | None] = [None for _ in views]
    if first:
        keep = tuple(contenders(views[i].cap or 0) for i in first)
        entries: dict[int, list[Entry]] = {i: [] for i in first}
        counts: dict[int, int] = {}
        for j, entity, old, total, count in conn.execute(
            rank_query(reading, tuple(views[i] for i in first), keep), params
        ):
            entries[first[j]].append((sys.intern(entity), old, total))
            counts[first[j]] = count
        reader.count("rank")
        for i in first:
            best = top(entries[i], len(entries[i]))
            rankings[i], members[i] = ranked(best, counts.get(i, 0), views[i].cap or 0)
    query, extra = folded(reading, views, tuple(members), None)
    rows = conn.execute(query, {**params, **extra}).fetchall()
    found = decode_folded(rows, views, tuple(members), len(reading.measures))
    reader.count("full")
    for i, view in enumerate(views):
        if view.cap is None or i in first:
            continue
        olds, later = entity_totals(found, i, reading.rank)
        ids = olds.keys() | later.keys()
        candidates = ((e, olds.get(e, 0), olds.get(e, 0) + later.get(e, 0)) for e in ids)
        rankings[i], shown = ranked(top(candidates, contenders(view.cap) + 1), len(ids), view.cap)
        members[i] = shown
        if shown is not None:
            for part in found.parts:
                part[i] = fold(view, part[i], shown)
    memberships = tuple(
        Membership(m, r.entities - (v.cap or 0)) if m is not None and r is not None else Membership()
        for v, m, r in zip(views, members, rankings, strict=True)
    )
    seen = None
    if reading.updated is not None and catalog.leading_index(conn, reading.table, "updated_at"):
        query = sql.SQL("SELECT max(updated_at) FROM {}").format(sql.Identifier(reading.table))
        seen = conn.execute(query).fetchone()
    state = SourceState(
        reading,
        views,
        memberships,
        cuts,
        tuple(found.old),
        tuple(found.recent),
        tuple(found.window),
        tuple(rankings),
        *window_query(reading, views, memberships, cuts),
        updated_seen=seen[0] if seen else None,
        latest_update=found.latest_update,
    )
    return state, sum(row[-2] for row in rows)


def _few(conn: psycopg.Connection, source: Source, reading: Reading, view: View) -> bool:
    """Whether the planner's statistics say a view's table has no more entities than its cap."""
    column = dict(source.columns).get(view.id)
    if reading.table != source.table or column is None or view.cap is None:
        return False
    row = conn.execute(
        "SELECT CASE WHEN s.n_distinct >= 0 THEN s.n_distinct ELSE -s.n_distinct * c.reltuples END"
        " FROM pg_stats s JOIN pg_class c ON c.oid = to_regclass(quote_ident(s.tablename))"
        " WHERE s.schemaname = current_schema() AND s.tablename = %s AND s.attname = %s",
        (source.table, column),
    ).fetchone()
    return row is not None and row[0] is not None and 0 <= row[0] <= view.cap
