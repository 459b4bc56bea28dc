"""Read-only access to the LiteLLM database through a psycopg connection pool."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import IsolationLevel, sql
from psycopg.abc import Buffer, PQGen
from psycopg.adapt import Dumper, Loader
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from .config import DatabaseConfig

T = TypeVar("T")

APPLICATION_NAME = "litellm-exporter"
# Seconds the pool keeps retrying a connection, its delays doubling from one: capped so that no
# retry is scheduled far in the future while the database is away.
_RECONNECT_CAP = 2.0

log = logging.getLogger(__name__)
# The pool logs every failed connection attempt, over several lines; the runner logs one
# line per change of state instead.
logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)


def redact_dsn(dsn: str) -> str:
    """The DSN with any password removed, for log lines and error messages."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo("", **params)


class _RawText(Loader):
    def load(self, data: Buffer) -> str:
        return bytes(data).decode("utf-8", errors="surrogateescape")


class _RawTextDumper(Dumper):
    def dump(self, obj: str) -> bytes:
        return obj.encode("utf-8", errors="surrogateescape")


class NoAnswer(psycopg.OperationalError):
    """The server (or the network to it) went silent: nothing came back within the deadline."""


class BoundedConnection(psycopg.Connection[Any]):
    """A connection on which no wait for the server lasts forever.

    The server's statement_timeout ends a slow statement, but not a silent network: a server
    that stops sending without a reset (a dropped route, a frozen host, a black-holing firewall)
    would hold a poll, and its pool connection, until TCP gives up hours later. So each exchange
    with the server (a statement and its results) is given ``answer_within`` seconds, after
    which the connection is closed and the poll fails as the database being unavailable."""

    answer_within: float | None = None
    where = "the database"

    # (psycopg's own default interval: how often a wait wakes to look for an interruption.)
    def wait(self, gen: PQGen[T], interval: float = 0.1, timeout: float | None = None) -> T:
        if timeout is not None or self.answer_within is None:
            return super().wait(gen, interval, timeout)
        try:
            return super().wait(gen, interval, self.answer_within)
        except psycopg.errors._WaitTimeout:  # psycopg's own deadline; not a public name
            self.pgconn.finish()  # mid-exchange: the connection can never be used again
            raise NoAnswer(
                f"{self.where} sent nothing back for {self.answer_within:g}s (a silent network or server):"
                " the connection was closed"
            ) from None


class SnapshotUnavailable(Exception):
    """Another connection could not be given a transaction's snapshot."""


class Database:
    """A connection pool whose every transaction is read-only and time-limited on the server."""

    def __init__(self, config: DatabaseConfig) -> None:
        self._config = config
        # Set inside every transaction, not as startup options or session settings: PgBouncer and
        # RDS Proxy refuse startup options, and a pooler in transaction mode hands each
        # transaction whichever server connection is free, so only a transaction's own settings
        # are sure to be the ones its queries run under.
        self._statement_timeout = f"{max(1, round(config.statement_timeout * 1000))}ms"
        # A statement the server ends by its statement_timeout answers in about that time; more
        # than a connect timeout past it, the server or the network to it has gone silent.
        self._answer_within = config.statement_timeout + config.connect_timeout
        self._conninfo = conninfo = make_conninfo(
            config.dsn,
            application_name=APPLICATION_NAME,
            connect_timeout=max(1, round(config.connect_timeout)),
        )
        self._address = address(conninfo)
        self._pool = ConnectionPool(
            conninfo,
            connection_class=BoundedConnection,
            min_size=config.min_conns,
            max_size=config.max_conns,
            open=False,
            name=APPLICATION_NAME,
            timeout=config.connect_timeout,
            configure=self._configure,
            check=ConnectionPool.check_connection,
            # The pool's own reconnection backs off exponentially up to this long, then gives up
            # until a collector asks again; the runner's watcher finds a database that came back.
            reconnect_timeout=_RECONNECT_CAP,
        )

    def _bound(self, conn: BoundedConnection) -> None:
        conn.where = self._address
        conn.answer_within = self._answer_within

    def _configure(self, conn: BoundedConnection) -> None:
        self._bound(conn)
        if conn.info.encoding == "ascii":
            # A SQL_ASCII database stores any bytes, invalid UTF-8 included, and psycopg hands
            # them over undecoded. Bytes that are not UTF-8 are kept as surrogates, so that an id
            # sent back (a shown entity, an alias lookup) matches its row; labels show U+FFFD.
            for name in ("text", "varchar", "bpchar", "name"):
                conn.adapters.register_loader(name, _RawText)
            conn.adapters.register_dumper(str, _RawTextDumper)
        # BEGIN ... READ ONLY on every transaction, which a pooler passes through.
        conn.read_only = True
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.autocommit = False
        # A prepared statement lives on one server connection; behind a pooler in transaction
        # mode the next transaction may be on another, where it does not exist.
        conn.prepare_threshold = None

    @property
    def display_dsn(self) -> str:
        return redact_dsn(self._config.dsn)

    @property
    def pool(self) -> ConnectionPool[BoundedConnection]:
        return self._pool

    def unreachable(self) -> str | None:
        """Why a new connection to the database cannot be made now, in a few words; None when it
        can. The cheap check the runner's watcher makes while the database is away, outside the
        pool, whose own errors say only that it waited."""
        try:
            with BoundedConnection.connect(self._conninfo, autocommit=True) as conn:
                self._bound(conn)
                conn.execute("SELECT 1")
            return None
        except psycopg.Error as exc:
            return connection_problem(exc, self._conninfo)

    def refresh(self) -> None:
        """Drop the pool's connections that died while the database was away, and open new ones."""
        self._pool.check()

    def open(self, *, wait: bool) -> None:
        """Open the pool; with ``wait``, fail unless a connection can be made now."""
        self._pool.open(wait=wait, timeout=self._config.connect_timeout)

    def close(self) -> None:
        self._pool.close(timeout=2.0)

    @contextmanager
    def snapshot(self) -> Iterator[psycopg.Connection]:
        """A read-only, repeatable-read transaction: every query inside sees one snapshot."""
        with self._pool.connection(timeout=self._config.connect_timeout) as conn, conn.transaction():
            self._settings(conn)
            yield conn

    def _settings(self, conn: psycopg.Connection) -> None:
        # JIT compilation costs seconds on the wide aggregates of a full read and saves nothing
        # on the rest, which are short.
        conn.execute(
            "SELECT set_config('statement_timeout', %s, true), set_config('jit', 'off', true)",
            (self._statement_timeout,),
        )

    def export_snapshot(self, conn: psycopg.Connection) -> str:
        """The snapshot of ``conn``'s transaction, for other connections to read in
        (``in_snapshot``). SnapshotUnavailable where the server refuses: that leaves the
        transaction aborted (a savepoint would not do: PostgreSQL exports no snapshot from one)."""
        try:
            row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                raise  # the connection itself failed
            raise SnapshotUnavailable(str(exc)) from None
        assert row is not None
        return str(row[0])

    @contextmanager
    def in_snapshot(self, snapshot: str) -> Iterator[psycopg.Connection]:
        """A read-only transaction that sees the exported ``snapshot``, on a connection of its
        own (outside the pool, which the other collectors keep using; closed after). Raises
        SnapshotUnavailable where it cannot be had soon: no connection, or a pooler in
        transaction mode with no server connection to give while the poll's own transaction
        holds one. The poll's connection then reads what this one would have."""
        try:
            conn = BoundedConnection.connect(self._conninfo)
        except psycopg.Error as exc:
            raise SnapshotUnavailable(connection_problem(exc, self._conninfo)) from None
        imported = False
        try:
            self._configure(conn)
            conn.answer_within = self._config.connect_timeout
            with conn.transaction():
                try:
                    # First in the transaction, as PostgreSQL requires; a literal, as SET takes no
                    # parameters.
                    conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
                except psycopg.Error as exc:
                    if isinstance(exc, psycopg.OperationalError):
                        raise
                    raise SnapshotUnavailable(str(exc)) from None
                conn.answer_within = self._answer_within
                imported = True
                self._settings(conn)
                yield conn
        except NoAnswer as exc:
            if imported:
                raise
            raise SnapshotUnavailable(str(exc)) from None
        finally:
            conn.close()


def address(conninfo: str) -> str:
    """``HOST:PORT`` of a connection string, with libpq's defaults."""
    params = conninfo_to_dict(conninfo)
    return f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"


def connection_problem(exc: BaseException, conninfo: str) -> str:
    """Why a connection attempt failed, from libpq's message, in a few words for one line."""
    params = conninfo_to_dict(conninfo)
    host, port = address(conninfo).rsplit(":", 1)
    user, dbname = params.get("user") or "(default)", params.get("dbname") or "(default)"
    text = " ".join(str(exc).split())
    detail = text.rsplit(" failed: ", 1)[-1]
    lowered = text.lower()
    found: str
    if "resolve host" in lowered or "could not translate host name" in lowered:
        found = f"the host name {host} could not be resolved"
    elif "connection refused" in lowered:
        found = f"connection refused by {host}:{port} (nothing listens there: is PostgreSQL, or the pooler, up?)"
    elif "password authentication failed" in lowered or "no password supplied" in lowered:
        found = f'authentication failed for role "{user}": {detail}'
    elif "role" in lowered and "does not exist" in lowered:
        found = f'authentication failed: role "{user}" does not exist'
    elif "database" in lowered and "does not exist" in lowered:
        found = f'the database "{dbname}" does not exist on {host}:{port}'
    elif any(t in lowered for t in ("too many clients", "too many connections", "connection slots are reserved")):
        found = f"{host}:{port} has too many clients already (max_connections): {detail}"
    elif "ssl" in lowered:
        found = f"TLS: {detail} (set sslmode in the DSN to what the server requires)"
    elif "timeout" in lowered or "timed out" in lowered:
        found = f"{host}:{port} did not answer in time"
    else:
        found = detail
    return found


class CommitWatch(Generic[T]):
    """Tells a collector whether any transaction has committed since its last successful poll,
    and keeps what that poll computed.

    Two snapshots with the same ``txid_current_snapshot()`` (the same next transaction id and the
    same transactions in progress) see exactly the same rows in every table, so a poll that finds
    the one it last read from can serve what it computed then, at the cost of one tiny query.
    """

    def __init__(self) -> None:
        self._last: str | None = None
        self._current: str | None = None
        self.result: T | None = None

    def unchanged(self, conn: psycopg.Connection) -> bool:
        """Call first in the transaction, so that it describes the snapshot the poll reads."""
        row = conn.execute("SELECT txid_current_snapshot()::text").fetchone()
        self._current = row[0] if row else None
        return self._current is not None and self._current == self._last

    def polled(self, result: T | None = None) -> None:
        """The poll that called ``unchanged`` succeeded: remember what it read, and ``result``."""
        self._last = self._current
        self.result = result

    def forget(self) -> None:
        """Make the next poll read everything again (a reload changed what is read)."""
        self._last = None
