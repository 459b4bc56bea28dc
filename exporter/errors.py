"""The one place where failures are sorted into the reasons the self-metrics report."""

from __future__ import annotations

import enum
import http.client

import psycopg
import psycopg.errors
import psycopg_pool


class Reason(str, enum.Enum):
    """Why a collector's poll failed; the value is the ``reason`` label."""

    DATABASE_UNAVAILABLE = "database_unavailable"
    STATEMENT_TIMEOUT = "statement_timeout"
    SCHEMA_MISMATCH = "schema_mismatch"
    PERMISSION_DENIED = "permission_denied"
    # The server or a pooler in between broke the protocol (PgBouncer reports its own errors,
    # such as query_wait_timeout, this way): not the same as a database that is down.
    PROTOCOL_ERROR = "protocol_error"
    QUERY_ERROR = "query_error"
    INTERNAL = "internal"


class SchemaMismatch(Exception):
    """The database lacks a table or column a collector needs."""


def classify(exc: BaseException) -> Reason:
    if isinstance(exc, SchemaMismatch):
        return Reason.SCHEMA_MISMATCH
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return Reason.STATEMENT_TIMEOUT
    if isinstance(exc, (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn)):
        return Reason.SCHEMA_MISMATCH
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return Reason.PERMISSION_DENIED
    if isinstance(exc, psycopg.errors.ProtocolViolation):
        return Reason.PROTOCOL_ERROR
    if isinstance(exc, (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed, psycopg.OperationalError)):
        return Reason.DATABASE_UNAVAILABLE
    if isinstance(exc, psycopg.Error):
        return Reason.QUERY_ERROR
    return Reason.INTERNAL


def describe(exc: BaseException) -> str:
    """A one-line description for a log line, without a traceback."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{classify(exc).value}: {text}"


class PushFailure(str, enum.Enum):
    """Why an OTLP push failed; the value is the ``reason`` label."""

    UNREACHABLE = "unreachable"  # no connection: refused, reset, name not resolved, TLS
    TIMEOUT = "timeout"  # no answer within otlp.timeout
    THROTTLED = "throttled"  # 429
    SERVER_ERROR = "server_error"  # 5xx
    REJECTED = "rejected"  # any other answer than 2xx: the request itself is refused

    @property
    def retryable(self) -> bool:
        """Whether to send the same request again: OTLP's list is 429, 502, 503, 504 and no
        answer at all; every 5xx is retried here, since a server's error may pass, and the
        retries end when the next push is due anyway."""
        return self is not PushFailure.REJECTED


def classify_push(status: int | None, exc: BaseException | None = None) -> PushFailure:
    """A push's failure from the HTTP status it got, or the exception that gave it none."""
    if status is None:
        if isinstance(exc, TimeoutError) or "timed out" in str(exc):
            return PushFailure.TIMEOUT
        if isinstance(exc, http.client.HTTPException):
            return PushFailure.SERVER_ERROR  # it answered, but not in HTTP
        return PushFailure.UNREACHABLE
    if status == 429:
        return PushFailure.THROTTLED
    if status >= 500:
        return PushFailure.SERVER_ERROR
    return PushFailure.REJECTED
