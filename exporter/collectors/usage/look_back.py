"""A resync that reads what changed: the look-back and the window of one table, the days
leaving the look-back added to the old part, and its capped views ranked again from the
contenders the engine keeps (``ranking``) plus what the look-back adds, without reading the
old part again but for the entities that enter the shown set."""

from __future__ import annotations

import dataclasses
import logging
import sys
from array import array
from datetime import datetime

import psycopg
from psycopg import sql

from ...cardinality import OTHER
from .engine import Reader, folded, window_query
from .queries import (
    Reading,
    View,
    decode_folded,
    entity_sums_query,
    old_totals_query,
    other_group,
    rank_delta_query,
)
from .ranking import rerank
from .state import Membership, SourceState, add, entity_totals, fold, raw
from .tables import SUMS_TYPE, Group, Sums

log = logging.getLogger(__name__)


def look_back(reader: Reader, conn: psycopg.Connection, previous: SourceState, now: datetime) -> SourceState | None:
    """A resync of one source that reads only the look-back and the window (and the days
    that leave the look-back for the old part); None where only a full read will do.

    In order: the ranking measure of every active entity (what decides who is shown), the
    old part refolded for the entities that enter or leave the shown set, then one pass
    over the rows since the last look-back's start, split into what joins the old part,
    the look-back and the window."""
    reading, views = previous.reading, previous.views
    cuts = reader.cuts(reading, now)
    if cuts.old_end < previous.cuts.old_end or cuts.start < previous.cuts.start:
        return None  # the clock went back
    seen = previous.updated_seen
    if seen is not None:
        # Through the index: only the rows written since the last look.
        query = sql.SQL(
            "SELECT max(updated_at), coalesce(bool_or(date < %(old_end)s), false) FROM {} WHERE updated_at > %(seen)s"
        ).format(sql.Identifier(reading.table))
        row = conn.execute(query, {"seen": seen, "old_end": cuts.old_end}).fetchone()
        reader.count("updated_at")
        if row is not None and row[1]:
            log.info("usage: rows of %s older than the look-back changed: reading it in full", reading.table)
            return None
        if row is not None and row[0] is not None:
            seen = row[0]
    params = {**cuts.params(), "lo": previous.cuts.old_end}
    members = [m.members for m in previous.memberships]
    old = list(previous.old)
    rankings = list(previous.rankings)
    memberships = list(previous.memberships)
    capped = [i for i, v in enumerate(views) if v.cap is not None and rankings[i] is not None]
    # A view folded in SQL is ranked first, from the look-back's totals per entity; one whose
    # entities the pass below returns apart (all shown, or a column grouped by as it is) is
    # ranked from that pass itself.
    grouped = raw(views)
    first = [i for i in capped if members[i] is not None and views[i].id not in grouped]
    after = [i for i in capped if i not in first]

    def rerank_view(i: int, moved: dict[str, int], added: dict[str, int]) -> bool:
        """Choose view i's shown entities again and refold its old part; False where only a
        full read can."""
        view, ranking = views[i], rankings[i]
        assert view.cap is not None and ranking is not None

        def lookup(ids: list[str]) -> dict[str, int]:
            reader.count("lookup")
            query = old_totals_query(reading, view, "" in ids)
            return dict(conn.execute(query, {"ids": ids, "old_end": cuts.old_end}).fetchall())

        result = rerank(ranking, view.cap, moved, added, lookup)
        if result is None:
            log.info("usage: the ranking of %s is a tie at its cap: reading %s in full", view.key, reading.table)
            return False
        kept, shown = result
        rankings[i] = kept
        if shown != members[i]:
            if shown is None:
                return False  # fewer entities than the cap: every one's own sums are needed
            # The old part as it stands (before ``lo``); what joins it now is folded by the
            # new shown set.
            old[i] = refold(reader, conn, reading, view, old[i], members[i], shown, params)
        members[i] = shown
        memberships[i] = Membership(shown, max(0, kept.entities - view.cap)) if shown else Membership()
        return True

    if first:
        moved: dict[int, dict[str, int]] = {i: {} for i in first}
        added: dict[int, dict[str, int]] = {i: {} for i in first}
        query = rank_delta_query(reading, tuple(views[i] for i in first))
        for j, entity, before, later in conn.execute(query, params):
            if before:
                moved[first[j]][entity] = before
            added[first[j]][entity] = later
        reader.count("rank")
        if not all(rerank_view(i, moved[i], added[i]) for i in first):
            return None
    unfolded = tuple(None if i in after else m for i, m in enumerate(members))
    query, extra = folded(reading, views, unfolded, "lo")
    rows = conn.execute(query, {**params, **extra}).fetchall()
    found = decode_folded(rows, views, unfolded, len(reading.measures))
    reader.count("look_back")
    for i in after:
        if not rerank_view(i, *entity_totals(found, i, reading.rank)):
            return None
        shown = members[i]
        if shown is not None:
            for part in found.parts:
                part[i] = fold(views[i], part[i], shown)
    for i, joining in enumerate(found.old):
        if joining:
            # The days leaving the look-back join the old part, counted as they are now.
            reader.count("shift")
            old[i] = dict(old[i])
            for group, values in joining.items():
                add(old[i], group, values)
    latest = found.latest_update
    if latest is None or (previous.latest_update is not None and previous.latest_update > latest):
        latest = previous.latest_update
    window_query_, window_params = window_query(reading, views, tuple(memberships), cuts)
    return dataclasses.replace(
        previous,
        memberships=tuple(memberships),
        cuts=cuts,
        old=tuple(old),
        recent=tuple(found.recent),
        window=tuple(found.window),
        rankings=tuple(rankings),
        window_query=window_query_,
        window_params=window_params,
        updated_seen=seen,
        latest_update=latest,
    )


def refold(
    reader: Reader,
    conn: psycopg.Connection,
    reading: Reading,
    view: View,
    old: dict[Group, Sums],
    before: frozenset[str] | None,
    after: frozenset[str],
    params: dict[str, object],
) -> dict[Group, Sums]:
    """The old part of a view whose shown entities changed from ``before`` (None: all) to
    ``after``: an entity that leaves is added to ``__other__``; one that enters has its old
    rows summed by id, and taken out of ``__other__``."""
    result: dict[Group, Sums] = {}
    for group, values in old.items():
        if group[0] == OTHER or group[0] in after:
            result[group] = values
    for group, values in old.items():
        if group[0] != OTHER and group[0] not in after:
            add(result, other_group(view, group), values)
    entering = sorted(after - before) if before is not None else []
    if entering:
        query = entity_sums_query(reading, view, "" in entering)
        rows = conn.execute(query, {**params, "ids": entering}).fetchall()
        reader.count("entering")
        for row in rows:
            group = tuple(map(sys.intern, row[: view.width]))
            values = array(SUMS_TYPE, row[view.width :])
            add(result, group, values)
            add(result, other_group(view, group), values, -1)
    return result
