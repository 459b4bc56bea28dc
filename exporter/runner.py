"""Runs each collector on its own interval in the background and keeps its latest snapshot.

A scrape only ever reads these snapshots, so it never waits on the database.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from . import __version__
from .causes import Causes
from .collectors.base import Collector
from .config import Config
from .db import Database
from .errors import Reason, classify, describe
from .families import Family, build, gauge
from .supervise import Supervisor

log = logging.getLogger(__name__)


@dataclass
class _State:
    families: tuple[Family, ...] = ()
    polled: bool = False
    success: bool = False
    duration: float = 0.0
    last_success: float | None = None
    families_at: float | None = None  # monotonic time the families were produced
    failures: Counter[Reason] = field(default_factory=Counter)
    failing_reason: Reason | None = None
    last_poll: float | None = None  # wall-clock time the last poll finished
    last_error: str | None = None  # the last failed poll's reason and message, until one succeeds


@dataclass(frozen=True)
class CollectorStatus:
    """One collector as the status page shows it."""

    name: str
    enabled: bool
    interval: float
    last_poll: float | None
    last_success: float | None
    duration: float | None
    success: bool | None
    error: str | None
    failures: int
    progress: str | None = None


class Runner:
    def __init__(
        self,
        db: Database,
        collectors: Sequence[Collector],
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        max_gauge_age: float | None = None,
        self_metrics: Sequence[Callable[[], list[Family]]] = (),
        supervisor: Supervisor | None = None,
    ) -> None:
        self._extra_self_metrics = list(self_metrics)
        self._supervisor = supervisor or Supervisor()
        # Called with a collector's new families after each successful poll, on its thread.
        self._listeners: list[Callable[[Sequence[Family]], None]] = []
        self._db = db
        self._monotonic = monotonic
        self._max_gauge_age = max_gauge_age
        self._collectors = list(collectors)
        self._wall_clock = wall_clock
        self._states = {c.name: _State() for c in self._collectors}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Set to make a collector poll now rather than at the end of its interval.
        self._wake = {c.name: threading.Event() for c in self._collectors}
        # Set while the database does not answer: the watcher then looks for it on a short,
        # fixed schedule, and wakes every collector the moment it answers.
        self._database_down = threading.Event()
        self._database_problem: str | None = None
        self._causes = Causes()
        # Why a connection cannot be made, asked once for every collector that fails at once.
        self._cause_lock = threading.Lock()
        self._cause_checked: tuple[float, str | None] | None = None
        self._threads: list[threading.Thread] = []
        self._generation = 0
        # Held through a poll, so that a reload never changes a collector halfway through one.
        self._poll_locks = {c.name: threading.Lock() for c in self._collectors}

    def on_snapshot(self, listener: Callable[[Sequence[Family]], None]) -> None:
        """Call ``listener`` with every successful poll's families, on the poller's thread."""
        self._listeners.append(listener)

    @property
    def collectors(self) -> list[Collector]:
        """The enabled collectors (a reload can enable or disable one)."""
        return [c for c in self._collectors if c.enabled]

    def set_max_gauge_age(self, seconds: float | None) -> None:
        with self._lock:
            self._max_gauge_age = seconds
            self._generation += 1

    def start(self) -> None:
        # The watcher's first look, at once: a database that refuses connections is said in the
        # first second, not after the pool's connect timeout.
        self._database_down.set()
        self._threads.append(self._supervisor.start("database-watch", self._watch_database, self._stop))
        for collector in self._collectors:
            loop = functools.partial(self._loop, collector)
            self._threads.append(self._supervisor.start(f"collector-{collector.name}", loop, self._stop))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._database_down.set()  # so that the watcher sees the stop
        for wake in self._wake.values():
            wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _loop(self, collector: Collector) -> None:
        wake = self._wake[collector.name]
        while not self._stop.is_set():
            started = time.monotonic()
            wake.clear()
            if collector.enabled:
                self.poll_once(collector)
            elapsed = time.monotonic() - started
            wake.wait(max(0.0, collector.interval - elapsed))

    # How often the watcher tries to reach a database that does not answer.
    WATCH_INTERVAL = 0.5

    def _watch_database(self) -> None:
        while not self._stop.is_set():
            self._database_down.wait()
            if self._stop.is_set():
                return
            cause = self._connection_problem(fresh=True)
            self._database_problem = cause
            if cause is not None:
                text = self._cannot_connect(cause)
                if self._causes.failing("database", text):
                    log.warning("%s", text)
            else:
                if self._causes.recovered("database") is not None:
                    log.info("the database at %s answers again: polling every collector now", self._db.display_dsn)
                self._database_down.clear()
                self._db.refresh()
                for wake in self._wake.values():
                    wake.set()
            # Never more often than this, even when polls keep failing while it answers.
            self._stop.wait(self.WATCH_INTERVAL)

    def _cannot_connect(self, cause: str) -> str:
        return f"{Reason.DATABASE_UNAVAILABLE.value}: cannot connect to {self._db.display_dsn}: {cause}"

    # How long a connection attempt's finding answers for a collector's failure: the watcher
    # looks every WATCH_INTERVAL while the database is away, so collectors mostly reuse its
    # finding, and none older than this is given as the cause of a new failure.
    CAUSE_TTL = 2 * WATCH_INTERVAL

    def _connection_problem(self, *, fresh: bool = False) -> str | None:
        """Why a new connection cannot be made (None: it can): the watcher's last finding, or one
        attempt shared by every collector that fails at once, not one each."""
        with self._cause_lock:
            now = self._monotonic()
            checked = self._cause_checked
            if fresh or checked is None or now - checked[0] > self.CAUSE_TTL:
                checked = self._cause_checked = (now, self._db.unreachable())
            return checked[1]

    def _failure_text(self, reason: Reason, exc: BaseException) -> str:
        """The reason and what went wrong, in one line: the same in the log, /status and /ready."""
        if reason is Reason.DATABASE_UNAVAILABLE:
            # The pool says only that it waited; a connection attempt says why.
            cause = self._connection_problem()
            if cause is not None:
                return self._cannot_connect(cause)
        return describe(exc)

    def reconfigure(self, config: Config) -> None:
        for collector in self._collectors:
            with self._poll_locks[collector.name]:
                collector.reconfigure(config)
        self.set_max_gauge_age(config.max_gauge_age)

    def poll_once(self, collector: Collector) -> bool:
        """Run one poll of one collector and record its outcome; True when it succeeded."""
        with self._poll_locks[collector.name]:
            return self._poll(collector)

    def _poll(self, collector: Collector) -> bool:
        started = time.perf_counter()
        try:
            families = collector.poll(self._db)
        except Exception as exc:  # every failure is reported as a metric, never raised
            duration = time.perf_counter() - started
            replacement = collector.on_failure(self._db, exc)
            reason = classify(exc)
            text = self._failure_text(reason, exc)
            with self._lock:
                self._generation += 1
                state = self._states[collector.name]
                state.polled = True
                state.success = False
                state.duration = duration
                state.failures[reason] += 1
                state.last_poll = self._wall_clock()
                state.last_error = text
                if reason is Reason.DATABASE_UNAVAILABLE:
                    self._database_down.set()
                if replacement is not None:
                    # What a collector reports about its own failure is current, never stale.
                    state.families = tuple(replacement)
                    state.families_at = None
                state.failing_reason = reason
            # One line per cause and change, however many collectors share the cause; nothing
            # for a poll that the exporter's own shutdown ended.
            if self._causes.failing(collector.name, text) and not self._stop.is_set():
                # A failure no reason names is a fault of the exporter's own: its traceback, once.
                log.warning("collector %s failed: %s", collector.name, text, exc_info=reason is Reason.INTERNAL)
            return False
        duration = time.perf_counter() - started
        for listener in self._listeners:
            try:
                listener(families)
            except Exception as exc:  # a scrape renders what a listener could not
                log.warning("rendering %s's families ahead of the scrape failed: %s", collector.name, describe(exc))
        with self._lock:
            self._generation += 1
            state = self._states[collector.name]
            recovered = state.failing_reason is not None
            state.families = tuple(families)
            state.polled = True
            state.success = True
            state.duration = duration
            state.last_success = state.last_poll = self._wall_clock()
            state.families_at = self._monotonic()
            state.failing_reason = None
            state.last_error = None
        # Said by the last of the parts that shared the cause (this collector, or the watcher).
        cause = self._causes.recovered(collector.name)
        if recovered and cause is not None:
            log.info("collector %s recovered from: %s", collector.name, cause)
        return True

    def ready(self) -> bool:
        """What /ready answers: every collector has completed a poll successfully at least once,
        and none found the database wrong."""
        return not self.not_ready()

    @property
    def database_problem(self) -> str | None:
        """Why the database cannot be reached, while it cannot (the watcher's last try)."""
        return self._database_problem if self._database_down.is_set() else None

    def status(self) -> list[CollectorStatus]:
        with self._lock:
            return [
                CollectorStatus(
                    name=c.name,
                    enabled=c.enabled,
                    interval=c.interval,
                    last_poll=(state := self._states[c.name]).last_poll,
                    last_success=state.last_success,
                    duration=state.duration if state.polled else None,
                    success=state.success if state.polled else None,
                    error=state.last_error,
                    failures=sum(state.failures.values()),
                    progress=c.progress,
                )
                for c in self._collectors
            ]

    def problems(self) -> list[str]:
        """What the collectors found wrong with the database, one sentence each."""
        return list(dict.fromkeys(p for p in (c.problem for c in self.collectors) if p))

    def not_ready(self) -> list[str]:
        """Why /ready fails, one line each (empty once every collector has polled successfully):
        what the collectors found wrong with the database (the root cause: the failures it causes
        are not listed again); else the collectors that failed and why, then those that have not
        finished a first poll yet."""
        found = self.problems()
        if found:
            return found
        failed: dict[str, list[str]] = {}
        waiting = []
        by_name = {c.name: c for c in self.collectors}
        enabled = set(by_name)
        with self._lock:
            for name, state in self._states.items():
                if name not in enabled or state.last_success is not None:
                    continue
                if state.last_error is not None:
                    failed.setdefault(state.last_error, []).append(name)
                else:
                    progress = by_name[name].progress
                    waiting.append(f"{name} ({progress})" if progress else name)
        for error, names in failed.items():
            which = f"collector {names[0]}" if len(names) == 1 else f"collectors {', '.join(names)}"
            found.append(f"{which} failed: {error}")
        if waiting:
            found.append(f"waiting for the first poll of: {', '.join(waiting)}")
        return found

    def snapshot_key(self) -> tuple[int, tuple[str, ...]]:
        """Changes whenever what families() returns may have: a poll, or gauges going stale."""
        with self._lock:
            return self._generation, tuple(self._stale(self._states))

    def _stale(self, states: dict[str, _State]) -> list[str]:
        if self._max_gauge_age is None:
            return []
        now = self._monotonic()
        return [
            name
            for name, state in states.items()
            if state.families_at is not None and now - state.families_at > self._max_gauge_age
        ]

    def families(self) -> list[Family]:
        """Every collector's latest snapshot followed by the exporter's own metrics."""
        # A collector a reload disabled (no proxy targets left) stops reporting altogether.
        enabled = {c.name for c in self.collectors}
        with self._lock:
            states = {
                name: replace(self._states[name], failures=Counter(self._states[name].failures)) for name in enabled
            }
        stale = set(self._stale(states))
        result: list[Family] = []
        for name, state in states.items():
            # Counters stay true while the database is away (they only ever grow there);
            # a gauge that old may no longer be, so it is dropped rather than served stale.
            result.extend(f for f in state.families if not (name in stale and f.kind == "gauge"))
        result.extend(self._self_metrics(states))
        for extra in (self._supervisor.families, *self._extra_self_metrics):
            result.extend(extra())
        return result

    def _self_metrics(self, states: dict[str, _State]) -> list[Family]:
        polled = {name: s for name, s in states.items() if s.polled}
        return [
            gauge("litellm_exporter_build_info", "The exporter's version; always 1.", 1.0, version=__version__),
            build(
                "litellm_exporter_collector_success",
                "Whether the collector's last poll succeeded (1) or failed (0).",
                "gauge",
                ("collector",),
                (((name,), 1.0 if s.success else 0.0) for name, s in polled.items()),
            ),
            build(
                "litellm_exporter_collector_duration_seconds",
                "How long the collector's last poll took.",
                "gauge",
                ("collector",),
                (((name,), s.duration) for name, s in polled.items()),
            ),
            build(
                "litellm_exporter_collector_last_success_timestamp_seconds",
                "When the collector's last successful poll finished, as a Unix time.",
                "gauge",
                ("collector",),
                (((name,), s.last_success) for name, s in states.items() if s.last_success is not None),
            ),
            build(
                "litellm_exporter_collector_failures",
                "Failed polls of the collector since the exporter started, by reason.",
                "counter",
                ("collector", "reason"),
                (
                    ((name, reason.value), float(count))
                    for name, s in states.items()
                    for reason, count in sorted(s.failures.items())
                ),
            ),
        ]
