"""The series budget: per-family caps that keep the top series by spend and count the rest."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Hashable
from typing import TypeVar

from .families import Family, build

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SeriesCap:
    """Shared by the collectors, so the drop metrics are one family each in the exposition."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._over: dict[str, int] = {}
        self._dropped = Counter[str]()

    def apply(self, family: str, items: dict[K, V], limit: int | None, weight: Callable[[K, V], float]) -> dict[K, V]:
        """The ``limit`` heaviest items (ties broken by key, so the choice is stable); the rest
        are dropped and counted under ``family``."""
        dropped = 0
        if limit is not None and len(items) > limit:
            ranked = sorted(items.items(), key=lambda kv: (-weight(*kv), repr(kv[0])))
            dropped = len(items) - limit
            items = dict(ranked[:limit])
        with self._lock:
            self._over[family] = dropped
            self._dropped[family] += dropped
        return items

    def families(self) -> list[Family]:
        with self._lock:
            over = sorted(self._over.items())
            dropped = sorted(self._dropped.items())
        return [
            build(
                "litellm_exporter_series_over_cap",
                "Series the family's max_series cap leaves out of the current snapshot.",
                "gauge",
                ("family",),
                [((name,), float(count)) for name, count in over],
            ),
            build(
                "litellm_exporter_series_dropped",
                "Series left out by the family's max_series cap, added up over every poll.",
                "counter",
                ("family",),
                [((name,), float(count)) for name, count in dropped],
            ),
        ]
