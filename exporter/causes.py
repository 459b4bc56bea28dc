"""Which cause of failure each part of the exporter fails with, so that a cause is logged once
when it starts and once when it ends: however many collectors share it (the database is down),
and however many polls or pushes it lasts."""

from __future__ import annotations

import threading


class Causes:
    """Per part (a collector, the database watcher, the OTLP pusher), the cause it fails with now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_part: dict[str, str] = {}

    def failing(self, part: str, cause: str) -> bool:
        """``part`` fails with ``cause``; True when that is news (no other part has it now)."""
        with self._lock:
            before = self._by_part.get(part)
            self._by_part[part] = cause
            return before != cause and sum(1 for c in self._by_part.values() if c == cause) == 1

    def recovered(self, part: str) -> str | None:
        """``part`` no longer fails; the cause it had when no other part still has it."""
        with self._lock:
            cause = self._by_part.pop(part, None)
            return cause if cause is not None and cause not in self._by_part.values() else None
