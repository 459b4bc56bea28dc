"""The series budget: caps count whole entities, and what a cap leaves out is reported here.

A usage family shows its top entities by all-time spend, each with all its series, and folds
the rest into one ``__other__`` entity; a budget family shows its top rows. Which entities are
shown is decided by the collectors (from the database alone); this module only keeps the
figures about it, shared by the collectors so that each metric is one family.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Iterable

from .families import Family, build

# The id label value of the entity that sums everything a cap leaves out.
OTHER = "__other__"
# Carried by ``__other__`` series only: a digest of the shown entities, so that a change of
# membership starts a new overflow series instead of moving one down (a fall reads as a reset).
OVERFLOW_LABEL = "overflow_set"


def membership_digest(members: Iterable[str]) -> str:
    """A short, stable name for a set of shown entities: the same on every replica."""
    digest = hashlib.sha256("\n".join(sorted(members)).encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:10]


class CapReport:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._over: dict[str, int] = {}
        self._changes = Counter[str]()

    def over_cap(self, family: str, count: int) -> None:
        """``count`` entities of ``family`` are left out (folded into ``__other__``) now."""
        with self._lock:
            self._over[family] = count

    def membership_changed(self, family: str) -> None:
        with self._lock:
            self._changes[family] += 1

    def forget(self, families: Iterable[str]) -> None:
        """Stop reporting families that are no longer exported (a reload turned them off)."""
        with self._lock:
            for family in families:
                self._over.pop(family, None)

    def families(self) -> list[Family]:
        with self._lock:
            over = sorted(self._over.items())
            changes = sorted(self._changes.items())
        return [
            build(
                "litellm_exporter_entities_over_cap",
                "Entities (ids, or budget rows) that the family's max_series cap leaves out of the snapshot;"
                " usage families sum them into the __other__ entity.",
                "gauge",
                ("family",),
                [((name,), float(count)) for name, count in over],
            ),
            build(
                "litellm_exporter_cap_membership_changes",
                "Times the set of entities a usage family shows changed (only ever at a resync).",
                "counter",
                ("family",),
                [((name,), float(count)) for name, count in changes],
            ),
        ]
