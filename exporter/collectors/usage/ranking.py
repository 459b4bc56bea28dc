"""Which entities a capped family shows, and what the engine keeps to choose them again.

A capped family shows the top ``cap`` entities by their all-time total of the ranking measure
(spend, mostly), ties by id; the rest are summed into ``__other__``. A full read ranks every
entity in SQL, but the engine keeps only the contenders, the entities near the top, each with
its old total (over the rows before the look-back), and a bound on the old total of everyone
else: memory follows the caps, not the number of entities.

A resync adds what the look-back and the window hold, per active entity, from the database.
An entity the engine does not keep could only have moved among the shown if the bound plus
what it added reaches the last shown entity's total: for those few the database is asked their
exact old totals (by id, through the entity's index), and they become contenders. Should the
bound alone reach the last shown total (a flat ranking whose boundary is a tie), only a full
read can tell, and the resync says so.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

# Per entity: (id, old total, all-time total).
Entry = tuple[str, int, int]


def contenders(cap: int) -> int:
    """How many entities a ranking keeps for a cap: the shown ones and at least 2,000 more (a
    few hundred kilobytes), so that the boundary can move without asking the database, and so
    that a table of a few thousand entities (teams) is kept whole."""
    return cap + max(cap, 2000)


def _order(item: tuple[str, int]) -> tuple[int, str]:
    # Largest total first, ties by id: what SQL's ORDER BY total DESC, id COLLATE "C" gives.
    return (-item[1], item[0])


@dataclass(frozen=True)
class Ranking:
    """A capped view's contenders (id -> old total) and the bound on every other entity's old
    total: at most ``floor``, and where exactly ``floor``, with an id not below ``floor_id``
    (None: no such knowledge). ``complete``: every entity is a contender. ``entities``: how
    many the view had at the last full read, or has been seen to have since."""

    old: Mapping[str, int]
    floor: int
    floor_id: str | None
    entities: int
    complete: bool


def ranked(entries: Iterable[Entry], count: int, cap: int) -> tuple[Ranking, frozenset[str] | None]:
    """The ranking of a full read from its top entries in rank order (at least
    ``contenders(cap) + 1`` of them, where there are so many) and the number of entities; with
    the entities shown (None: all of them, there being no more than the cap)."""
    keep = contenders(cap)
    old: dict[str, int] = {}
    shown: list[str] = []
    floor, floor_id = 0, None
    for place, (entity, entity_old, total) in enumerate(entries):
        if place == keep:
            floor, floor_id = total, entity  # every entity after this one has no more
            break
        old[entity] = entity_old
        if place < cap:
            shown.append(entity)
    ranking = Ranking(old, floor, floor_id, count, complete=len(old) >= count)
    return ranking, frozenset(shown) if count > cap else None


def top(entries: Iterable[Entry], count: int) -> list[Entry]:
    """``count`` entries in rank order: for rankings computed in Python."""
    return heapq.nsmallest(count, entries, key=lambda e: (-e[2], e[0]))


def rerank(
    ranking: Ranking,
    cap: int,
    moved: Mapping[str, int],
    added: Mapping[str, int],
    lookup: Callable[[list[str]], Mapping[str, int]],
) -> tuple[Ranking, frozenset[str] | None] | None:
    """The ranking after a resync: ``moved`` per entity is what left the look-back for the old
    part, ``added`` what the look-back and the window hold now; ``lookup`` gives entities'
    exact old totals. None where only a full read can tell who is shown."""
    old = dict(ranking.old)
    floor, floor_id = ranking.floor, ranking.floor_id
    outside = 0
    for entity, value in moved.items():
        if entity in old:
            old[entity] += value
        elif value > outside:
            outside = value
    if outside:
        floor, floor_id = floor + outside, None

    def last_shown() -> tuple[int, str] | None:
        totals = ((entity, value + added.get(entity, 0)) for entity, value in old.items())
        best = heapq.nsmallest(cap, totals, key=_order)
        return (best[-1][1], best[-1][0]) if len(best) == cap else None

    def may_rank(bound: int, entity: str | None, last: tuple[int, str] | None) -> bool:
        # Could an entity whose total is at most ``bound`` (and, at ``bound``, whose id is at
        # least ``entity``; None: any id) be ahead of the last shown one?
        if last is None:
            return True
        total, last_id = last
        return bound > total or (bound == total and (entity is None or entity < last_id))

    last = last_shown()
    # An entity not kept and not active now could only be ahead if the bound itself is.
    if not ranking.complete and may_rank(floor, floor_id, last):
        return None
    new = [e for e in added if e not in old]
    unsure = sorted(e for e in new if may_rank(floor + added[e], e, last))
    if unsure:
        exact = lookup(unsure)
        for entity in unsure:
            old[entity] = exact.get(entity, 0)
    # New entities appear in the window first: while every one has been looked up, the ranking
    # still holds every entity.
    complete = ranking.complete and len(unsure) == len(new)
    # Those not looked up are new too where the ranking held every entity (and, where it did
    # not, there are more entities than it keeps anyway).
    entities = max(ranking.entities, len(old) + (len(new) - len(unsure) if ranking.complete else 0))
    totals = {entity: value + added.get(entity, 0) for entity, value in old.items()}
    order = sorted(totals.items(), key=_order)
    shown = frozenset(entity for entity, _ in order[:cap]) if entities > cap else None
    keep = contenders(cap)
    if len(order) > 2 * keep:
        # Looked-up entities accumulate: drop the least, raising the bound to cover them.
        for entity, _ in order[keep:]:
            if old[entity] >= floor:
                floor, floor_id = old[entity], None
            del old[entity]
        complete = False
    return Ranking(old, floor, floor_id, entities, complete), shown
