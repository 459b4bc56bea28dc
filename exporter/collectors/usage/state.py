"""What the usage engine keeps between polls, per source: sums per series by part (old,
look-back, window), who each capped view shows, and how its entities rank; and the small
operations on those sums that the full read and the look-back share."""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from ...cardinality import membership_digest
from .queries import Folded, Reading, View, other_group
from .ranking import Ranking
from .tables import SUMS_TYPE, Group, Sums


@dataclass(frozen=True)
class Membership:
    """The entities a capped view shows: None shows every entity (there are no more than the
    cap), with how many entities are left out and the overflow series' identity."""

    members: frozenset[str] | None = None
    over: int = 0

    @property
    def digest(self) -> str:
        return membership_digest(self.members) if self.members is not None else ""


@dataclass(frozen=True)
class Cuts:
    """Where a source's rows are cut (dates, or spend-log times): rows before ``old_end`` are
    the old part, rows on or after ``start`` the window, those between the look-back."""

    old_end: str
    start: str

    def params(self) -> dict[str, object]:
        return {"old_end": self.old_end, "start": self.start}


@dataclass(frozen=True)
class SourceState:
    """What the engine keeps per source: sums per series, and one total per ranked entity,
    never rows. Each sums array holds one value per measure, then the rows summed."""

    reading: Reading
    views: tuple[View, ...]
    memberships: tuple[Membership, ...]
    cuts: Cuts
    old: tuple[dict[Group, Sums], ...]
    recent: tuple[dict[Group, Sums], ...]
    window: tuple[dict[Group, Sums], ...]
    # Capped views: how their entities rank (None: not capped).
    rankings: tuple[Ranking | None, ...]
    # The window's query, composed once per resync.
    window_query: sql.Composed
    window_params: dict[str, object]
    # The newest updated_at at the last look, where an index on it makes looking cheap.
    updated_seen: datetime | None = None
    latest_update: float | None = None

    def totals(self, index: int) -> dict[Group, Sums]:
        totals = {group: array(SUMS_TYPE, values) for group, values in self.old[index].items()}
        for part in (self.recent[index], self.window[index]):
            for group, values in part.items():
                current = totals.get(group)
                if current is None:
                    totals[group] = array(SUMS_TYPE, values)
                else:
                    for k, value in enumerate(values):
                        current[k] += value
        return totals

    def kept(self) -> int:
        """Sums held, in all parts: what the engine's memory follows."""
        return sum(len(d) for part in (self.old, self.recent, self.window) for d in part)


def add(target: dict[Group, Sums], group: Group, values: Sums, sign: int = 1) -> None:
    """Add (or take away) ``values`` into ``target[group]``, never changing an array another
    state may hold; a group left with no rows is dropped."""
    current = target.get(group)
    merged = array(SUMS_TYPE, current) if current is not None else array(SUMS_TYPE, [0] * len(values))
    for k, value in enumerate(values):
        merged[k] += sign * value
    if merged[-1] <= 0:  # the row count: nothing is left of the group
        target.pop(group, None)
    else:
        target[group] = merged


def entity_totals(found: Folded, index: int, rank: int) -> tuple[dict[str, int], dict[str, int]]:
    """A view's ranking measure per entity, from its unfolded sums: in the old part, and in
    the look-back and the window together."""
    old: dict[str, int] = {}
    later: dict[str, int] = {}
    for target, part in ((old, found.old), (later, found.recent), (later, found.window)):
        for group, values in part[index].items():
            target[group[0]] = target.get(group[0], 0) + values[rank]
    return old, later


def raw(views: tuple[View, ...]) -> set[str]:
    """The columns some view groups by as they are: extras, and the ids of views without a cap.
    A capped id among them is folded in Python, not in SQL."""
    return {x for v in views for x in v.extras} | {v.id for v in views if v.cap is None}


def fold(view: View, groups: dict[Group, Sums], shown: frozenset[str]) -> dict[Group, Sums]:
    """A view's groups with the entities outside ``shown`` summed as ``__other__``."""
    folded: dict[Group, Sums] = {}
    for group, values in groups.items():
        add(folded, group if group[0] in shown else other_group(view, group), values)
    return folded
