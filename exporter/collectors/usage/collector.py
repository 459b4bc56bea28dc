"""Usage counters: all-time sums of LiteLLM's daily spend rollup tables.

Each counter equals ``sum(column)`` over its daily table, grouped by the family's labels. So
that neither a poll nor a resync costs more as the history grows, every table is cut in three
by date, and each part is read as often as it can change:

* the window, from the date of (now minus ``late_margin``): today's rows, and yesterday's for
  a while after midnight. Summed again by PostgreSQL on every poll that finds something
  committed (``db.CommitWatch``); a poll with nothing committed reads no table at all.
* the look-back, the ``look_back`` days before the window: days that are over but may still
  get a late flush or a retried batch. Summed again at every resync (``resync_interval``,
  hourly), and when the window moves on at midnight; read through the ``date`` index.
* the old part, every date before that: summed once by a full read, at start-up, on a reload
  and on a slow schedule of its own (``full_resync_interval``, daily). As the look-back moves
  on, the day leaving it is added to the old part. A row that changes there is counted at the
  next full read, or, where an index on ``updated_at`` exists, at the next resync, which then
  reads that table in full.

Every read, and each resync, is aligned to the wall clock so that replicas do it together.

A capped family shows the top ``max_series`` entities by all-time spend, ties by id; the rest
are summed into one ``__other__`` entity. A full read ranks them in SQL (a pass of one measure,
grouped by entity) before the pass that sums everything, folded by the entities shown; a resync
ranks them again from the old totals of the contenders the engine keeps (``ranking``), plus
what the look-back and the window add. An entity that enters the shown set has its old rows
summed by id (through the entity's index) and taken out of ``__other__``.

All sums are grouped in SQL by the labels the families publish, so that what reaches Python
is about one row per series, never one per daily row, and only the top of each ranking.

Where this LiteLLM has no daily table for an entity (or one without request counts), or the
configuration asks for it, the same cuts are applied to LiteLLM_SpendLogs, on ``startTime``,
the window starting ``spend_logs_late_margin`` before each resync.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone

import psycopg

from ...cardinality import CapReport
from ...catalog import SPEND_LOGS
from ...config import Config, UsageConfig
from ...db import CommitWatch, Database, SnapshotUnavailable
from ...entities import BY_NAME
from ...families import Family
from ..base import Collector
from .engine import Progress, Reader, hash_aggregates, read_window
from .full_read import read_in_full
from .look_back import look_back
from .publish import Publisher, read_aliases
from .state import SourceState
from .tables import Source

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class UsageCollector(Collector):
    name = "usage"

    def __init__(self, config: UsageConfig, *, clock: Clock = utc_now, caps: CapReport | None = None) -> None:
        self._reader = Reader(config)
        self._caps = caps or CapReport()
        self.interval = config.interval
        self._clock = clock
        self._states: dict[str, SourceState] = {}
        self._resync_slot: int | None = None
        self._full_slot: int | None = None
        # While no transaction has committed since the last poll, every sum is what it was.
        self._commits: CommitWatch[None] = CommitWatch()
        self._publisher = Publisher()
        self._missing_logged: set[str] = set()
        self._progress: Progress | None = None
        self._share = True  # whether full reads may share their snapshot with helper connections

    @property
    def reads(self) -> Counter[str]:
        """What the database was asked, by kind of read, since start."""
        return self._reader.reads

    def state(self, table: str) -> SourceState | None:
        return self._states.get(table)

    @property
    def progress(self) -> str | None:
        progress = self._progress
        return f"full read: {progress.text()}" if progress is not None else None

    def _slot(self, now: datetime, interval: float) -> int:
        # Aligned to the Unix epoch, so that every replica reads in the same poll interval.
        return int(now.timestamp() // interval)

    def _resync_due(self, now: datetime) -> bool:
        if self._resync_slot is None or self._slot(now, self._reader.config.resync_interval) != self._resync_slot:
            return True
        # A daily window whose first date has passed out of the late margin: shrink it.
        return any(
            state.reading.table != SPEND_LOGS and state.cuts.start != self._reader.cuts(state.reading, now).start
            for state in self._states.values()
        )

    def reconfigure(self, config: Config) -> None:
        self._reader.config = config.usage
        self.interval = config.usage.interval
        # A reload (SIGHUP, /-/reload) reads everything again: what an operator asks for when
        # something was changed by hand, and what a change of cuts or caps needs.
        self.request_resync()
        self._caps.forget(BY_NAME[name].family for name, entity in config.usage.entities.items() if not entity.enabled)

    def request_resync(self, *, full: bool = True) -> None:
        """Make the next poll read every table in full (or, not ``full``, resync: read the
        look-back), and choose every shown entity again."""
        if full:
            self._full_slot = None
        self._resync_slot = None
        self._commits.forget()

    # -- polling -----------------------------------------------------------------------

    def poll(self, db: Database) -> list[Family]:
        try:
            return self._poll(db)
        except SnapshotUnavailable as exc:
            # Said once: from now on full reads use the poll's connection alone.
            self._share = False
            log.info("usage: this server does not share snapshots (%s): full reads use one connection", exc)
            return self._poll(db)

    def _poll(self, db: Database) -> list[Family]:
        now = self._clock()
        full_slot = self._slot(now, self._reader.config.full_resync_interval)
        full = self._full_slot != full_slot
        resync = full or self._resync_due(now)
        states: dict[str, SourceState] = {}
        with db.snapshot() as conn:
            if self._commits.unchanged(conn) and not resync and self._states:
                return self._families()
            hash_aggregates(conn)
            sources = self._reader.sources()
            in_full: list[Source] = []
            for source in sources:
                previous = self._states.get(source.table)
                state: SourceState | None = None
                if full or previous is None:
                    in_full.append(source)
                    continue
                state = look_back(self._reader, conn, previous, now) if resync else read_window(conn, previous)
                if state is None:
                    in_full.append(source)  # what the look-back found needs a full read
                else:
                    states[source.table] = state
            # A table missing at the last look (the proxy may not have migrated yet) costs a
            # catalogue query per poll until it appears, then one full read.
            states.update(self._read_in_full(db, conn, in_full, now, side_by_side=full))
            aliases = read_aliases(conn, states)
        # State changes only after every read succeeded: a failed poll leaves it untouched.
        self._log_missing(sources, states)
        if resync:
            self._report_memberships(states)
            self._resync_slot = self._slot(now, self._reader.config.resync_interval)
        if full:
            self._full_slot = full_slot
        self._states = states
        self._commits.polled()
        self._publisher.aliases(aliases)
        return self._families()

    def _log_missing(self, sources: list[Source], states: dict[str, SourceState]) -> None:
        """One line for the tables this poll found missing that were there (or unseen) before,
        one more for those of newer LiteLLM versions: not a line per table."""
        if not states:
            return  # none at all: not LiteLLM's database, which the database collector names
        missing = [s for s in sources if s.table not in states]
        new = [s for s in missing if s.table not in self._missing_logged]
        counted = [s.table for s in new if s.spend_log_columns is not None]
        newer = [s.table for s in new if s.spend_log_columns is None]
        if counted:
            what = ", ".join(counted)
            log.warning("no usable %s (nor a way to derive them): their usage counters are not exported", what)
        if newer:
            # Tables of newer LiteLLM versions: an older schema simply has none of their families.
            log.info("not in this LiteLLM's schema: %s: their families are not exported", ", ".join(newer))
        self._missing_logged = {s.table for s in missing}

    def _report_memberships(self, states: dict[str, SourceState]) -> None:
        for table, state in states.items():
            old = self._states.get(table)
            for index, view in enumerate(state.views):
                if view.cap is None:
                    continue
                membership = state.memberships[index]
                self._caps.over_cap(view.key, membership.over)
                if old is not None and view in old.views:
                    before = old.memberships[old.views.index(view)]
                    if before.members != membership.members:
                        self._caps.membership_changed(view.key)

    def _read_in_full(
        self, db: Database, conn: psycopg.Connection, sources: list[Source], now: datetime, *, side_by_side: bool
    ) -> dict[str, SourceState]:
        """Read ``sources`` in full: at start-up and at a full resync side by side on up to
        ``read_connections`` connections, where the server shares the snapshot."""
        if not sources:
            return {}
        shared = side_by_side and self._share
        helpers = min(self._reader.config.read_connections, len(sources)) - 1 if shared else 0
        progress = self._progress = Progress(len(sources))
        try:
            states = read_in_full(self._reader, db, conn, sources, now, progress, helpers=helpers)
        finally:
            self._progress = None
        if side_by_side and states:
            rows = f"{progress.rows:,}"
            log.info("usage: %d tables read in full (%s rows) in %.1fs", len(states), rows, progress.elapsed)
        return states

    def _families(self) -> list[Family]:
        return self._publisher.families(self._states, self._reader.config)
