"""The exporter's threads, supervised: none of them dies silently.

A part (a collector's poller, the database watcher, the HTTP server) that raises where it should
not is logged once with its traceback, counted in ``litellm_exporter_internal_errors_total``, and
started again after a pause that doubles up to a minute. A part that keeps failing (``LIMIT``
times within ``WINDOW`` seconds) makes ``/healthz`` fail, so that a liveness probe restarts the
process: the one remedy left for a fault the exporter cannot clear by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from .errors import describe
from .families import Family, build

log = logging.getLogger(__name__)

WINDOW = 600.0
LIMIT = 5
FIRST_PAUSE = 1.0
LONGEST_PAUSE = 60.0


class Supervisor:
    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._errors: dict[str, int] = {}
        self._recent: dict[str, deque[float]] = {}
        self._seen: set[tuple[str, str]] = set()
        self._threads: dict[str, threading.Thread] = {}
        self._stopping: dict[str, threading.Event] = {}

    def start(self, component: str, target: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """Run ``target`` on a thread named ``component`` until ``stop`` is set, restarting it
        whenever it raises (or returns before ``stop`` is set)."""
        with self._lock:
            self._errors.setdefault(component, 0)
            self._recent.setdefault(component, deque())
            self._stopping[component] = stop
        thread = threading.Thread(target=self._run, args=(component, target, stop), name=component, daemon=True)
        with self._lock:
            self._threads[component] = thread
        thread.start()
        return thread

    def thread(self, component: str) -> threading.Thread | None:
        with self._lock:
            return self._threads.get(component)

    def _run(self, component: str, target: Callable[[], None], stop: threading.Event) -> None:
        pause = FIRST_PAUSE
        while not stop.is_set():
            try:
                target()
                if stop.is_set():
                    return
                raise RuntimeError("returned while the exporter is running")
            except Exception as exc:
                self.internal_error(component, exc, restarting_in=pause)
            stop.wait(pause)
            pause = min(LONGEST_PAUSE, pause * 2)

    def internal_error(self, component: str, exc: BaseException, *, restarting_in: float | None = None) -> None:
        """Count an exception that no part of the exporter should have let through, and log it:
        with its traceback the first time it is seen, in one line after that."""
        what = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._errors[component] = self._errors.get(component, 0) + 1
            recent = self._recent.setdefault(component, deque())
            recent.append(self._monotonic())
            first = (component, what) not in self._seen
            self._seen.add((component, what))
        then = f"; restarting it in {restarting_in:g}s" if restarting_in is not None else ""
        message = f"internal error in {component}: {describe(exc)}{then}"
        if first:
            log.error(message, exc_info=exc)
        else:
            log.error("%s (seen before)", message)

    def problems(self) -> list[str]:
        """Why the process should be restarted, one sentence per part; empty while all is well."""
        now = self._monotonic()
        found = []
        with self._lock:
            for component, recent in self._recent.items():
                while recent and now - recent[0] > WINDOW:
                    recent.popleft()
                if len(recent) >= LIMIT:
                    found.append(f"{component} failed {len(recent)} times in the last {WINDOW / 60:g} minutes")
            for component, thread in self._threads.items():
                if not thread.is_alive() and not self._stopping[component].is_set():
                    found.append(f"{component} is not running")
        return found

    def families(self) -> list[Family]:
        with self._lock:
            counts = sorted(self._errors.items())
        return [
            build(
                "litellm_exporter_internal_errors",
                "Unexpected exceptions inside the exporter, by the part that raised; the part is restarted.",
                "counter",
                ("component",),
                [((component,), float(count)) for component, count in counts],
            )
        ]
