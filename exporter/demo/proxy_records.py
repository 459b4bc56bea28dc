"""What a LiteLLM proxy records about itself: its workers' heartbeats, model deployments' health
checks, and the spend of budgets with several windows.

This module writes; the exporter itself never imports it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import psycopg

from .writer import naive_utc


class ProxyRecords:
    """What the proxy writes about itself, as LiteLLM 1.110 writes it: worker heartbeats (by
    the database's clock), model health checks and multi-window budget spend."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def beat(self, worker_id: str, hostname: str, *, seconds_ago: float = 0.0) -> None:
        # LiteLLM's own statement: INSERT ... ON CONFLICT (worker_id) DO UPDATE, stamped NOW()
        # (in the session's time zone, the column having none).
        self._conn.execute(
            'INSERT INTO "LiteLLM_ProxyWorkerHeartbeat" (worker_id, hostname, last_heartbeat_at)'
            " VALUES (%(w)s, %(h)s, now() - make_interval(secs => %(s)s))"
            " ON CONFLICT (worker_id) DO UPDATE SET last_heartbeat_at = excluded.last_heartbeat_at",
            {"w": worker_id, "h": hostname, "s": seconds_ago},
        )

    def stop(self, worker_id: str) -> None:
        """A clean shutdown deletes the worker's row."""
        self._conn.execute('DELETE FROM "LiteLLM_ProxyWorkerHeartbeat" WHERE worker_id = %s', (worker_id,))

    def health_check(
        self,
        model_name: str,
        model_id: str | None,
        *,
        healthy: bool,
        checked_at: datetime,
        response_time_ms: float | None = 150.0,
        endpoints: int = 1,
    ) -> None:
        """One row per check, as GET /health?model=NAME and background health checks save it."""
        self._conn.execute(
            'INSERT INTO "LiteLLM_HealthCheckTable" (health_check_id, model_name, model_id, status, healthy_count,'
            " unhealthy_count, error_message, response_time_ms, checked_by, checked_at, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'background_health_check', %s, %s, %s)",
            (
                str(uuid.uuid4()),
                model_name,
                model_id,
                "healthy" if healthy else "unhealthy",
                endpoints if healthy else 0,
                0 if healthy else endpoints,
                None if healthy else "litellm.APIConnectionError: connection refused",
                response_time_ms,
                naive_utc(checked_at),
                naive_utc(checked_at),
                naive_utc(checked_at),
            ),
        )

    def window_spend(self, entity_type: str, entity_id: str, window: str, window_start: datetime, spend: float) -> None:
        """Add spend to a budget window (a new window start replaces the old one's spend)."""
        start = naive_utc(window_start)
        self._conn.execute(
            'INSERT INTO "LiteLLM_BudgetWindowSpend" AS w (entity_type, entity_id, window_duration, window_start,'
            " spend, updated_at) VALUES (%s, %s, %s, %s, %s, now())"
            " ON CONFLICT (entity_type, entity_id, window_duration) DO UPDATE SET"
            " spend = CASE WHEN w.window_start = excluded.window_start THEN w.spend + excluded.spend"
            " ELSE excluded.spend END, window_start = excluded.window_start, updated_at = now()",
            (entity_type, entity_id, window, start, spend),
        )
