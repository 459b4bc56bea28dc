"""What the proxy writes about itself: its workers' heartbeats and its model deployments'
health checks, where this LiteLLM has the tables.

Both are current state, not history: LiteLLM deletes a worker's row when it stops cleanly
and prunes old health checks, so everything here is a gauge. The health-check table holds a
row per check and can grow large; only the newest row of each deployment is read, found
through LiteLLM's index on (model_id, model_name, checked_at DESC) by skipping from one
deployment to the next, never by reading the table.
"""

from __future__ import annotations

from psycopg import sql

from .. import catalog
from ..cardinality import CapReport
from ..config import Config, ProxyStateConfig
from ..db import CommitWatch, Database
from ..families import Family, build
from .base import Collector

HEARTBEATS = "LiteLLM_ProxyWorkerHeartbeat"
HEALTH_CHECKS = "LiteLLM_HealthCheckTable"

# LiteLLM counts a worker live while its heartbeat is newer than this
# (PROXY_WORKER_LIVENESS_WINDOW_SECONDS: three of its 60-second beats).
LIVENESS_WINDOW = 180.0

# Per hostname: workers beating within the window, workers whose row has gone stale (killed,
# not stopped: a clean stop deletes the row), and the newest beat. LiteLLM stamps a beat with
# the database's NOW() into a column without a time zone, so the stamp is in the server's time
# zone, not necessarily UTC: read it as LiteLLM's own liveness query does, by the database's
# clock in the same zone (::timestamptz), never by this host's.
_WORKERS = sql.SQL(
    "SELECT hostname,"
    " count(*) FILTER (WHERE last_heartbeat_at::timestamptz > now() - make_interval(secs => %(w)s)),"
    " count(*) FILTER (WHERE last_heartbeat_at::timestamptz <= now() - make_interval(secs => %(w)s)),"
    " extract(epoch FROM max(last_heartbeat_at)::timestamptz)::float8"
    ' FROM "LiteLLM_ProxyWorkerHeartbeat" GROUP BY hostname ORDER BY hostname'
)

# Each deployment once, by a skip scan of the index (a recursive step per deployment), then
# its newest check by the same index. model_id may be NULL (deployments from a config file
# without ids); NULLs sort last in the index and are skipped through separately. Every ORDER BY
# spells out the index's columns, so that the planner walks that index and no other.
_LATEST_CHECKS = sql.SQL(
    """
WITH RECURSIVE ids AS (
    (SELECT model_id, model_name FROM "LiteLLM_HealthCheckTable" WHERE model_id IS NOT NULL
     ORDER BY model_id, model_name LIMIT 1)
    UNION ALL
    SELECT n.model_id, n.model_name FROM ids CROSS JOIN LATERAL (
        SELECT h.model_id, h.model_name FROM "LiteLLM_HealthCheckTable" h
        WHERE (h.model_id, h.model_name) > (ids.model_id, ids.model_name)
        ORDER BY h.model_id, h.model_name LIMIT 1) n
), names AS (
    (SELECT model_name FROM "LiteLLM_HealthCheckTable" WHERE model_id IS NULL ORDER BY model_id, model_name LIMIT 1)
    UNION ALL
    SELECT n.model_name FROM names CROSS JOIN LATERAL (
        SELECT h.model_name FROM "LiteLLM_HealthCheckTable" h
        WHERE h.model_id IS NULL AND h.model_name > names.model_name ORDER BY h.model_id, h.model_name LIMIT 1) n
), latest AS (
    SELECT i.model_name, i.model_id, c.* FROM ids i CROSS JOIN LATERAL (
        SELECT h.status, h.healthy_count, h.unhealthy_count, h.response_time_ms, h.checked_at
        FROM "LiteLLM_HealthCheckTable" h WHERE h.model_id = i.model_id AND h.model_name = i.model_name
        ORDER BY h.model_id, h.model_name, h.checked_at DESC LIMIT 1) c
    UNION ALL
    SELECT n.model_name, NULL, c.* FROM names n CROSS JOIN LATERAL (
        SELECT h.status, h.healthy_count, h.unhealthy_count, h.response_time_ms, h.checked_at
        FROM "LiteLLM_HealthCheckTable" h WHERE h.model_id IS NULL AND h.model_name = n.model_name
        ORDER BY h.model_id, h.model_name, h.checked_at DESC LIMIT 1) c
)
SELECT model_name, coalesce(model_id, ''), status, healthy_count, unhealthy_count, response_time_ms,
       extract(epoch FROM checked_at)::float8, count(*) OVER ()
FROM latest ORDER BY checked_at DESC, model_name, model_id
LIMIT %(limit)s
"""
)


class ProxyStateCollector(Collector):
    name = "proxy_state"

    def __init__(self, config: ProxyStateConfig, *, caps: CapReport | None = None) -> None:
        self._config = config
        self._caps = caps or CapReport()
        self.interval = config.interval
        self._commits: CommitWatch[list[Family]] = CommitWatch()

    @property
    def enabled(self) -> bool:
        return self._config.enabled

    def reconfigure(self, config: Config) -> None:
        self._config = config.proxy_state
        self.interval = self._config.interval
        self._commits.forget()

    def poll(self, db: Database) -> list[Family]:
        over: int | None = None
        with db.snapshot() as conn:
            found = catalog.readable(conn, [HEARTBEATS, HEALTH_CHECKS])
            families: list[Family] = []
            if HEARTBEATS in found:
                # Liveness moves with the clock, not with commits: read on every poll (one row per host).
                families += _workers(conn.execute(_WORKERS, {"w": LIVENESS_WINDOW}).fetchall())
            if HEALTH_CHECKS in found:
                if self._commits.unchanged(conn) and self._commits.result is not None:
                    families += self._commits.result
                else:
                    rows = conn.execute(_LATEST_CHECKS, {"limit": self._config.max_deployments}).fetchall()
                    over = (rows[0][-1] - len(rows)) if rows else 0
                    deployments = _deployments(rows)
                    families += deployments
        # Only a poll that succeeded whole changes what is remembered and reported.
        if over is not None:
            self._commits.polled(deployments)
            self._caps.over_cap("litellm_deployment", over)
        return families


def _workers(rows: list[tuple[str, int, int, float]]) -> list[Family]:
    return [
        build(
            "litellm_proxy_workers_alive",
            f"Proxy worker processes whose heartbeat is newer than LiteLLM's liveness window ({LIVENESS_WINDOW:.0f}s),"
            " by host.",
            "gauge",
            ("hostname",),
            [((host,), alive) for host, alive, _, _ in rows],
        ),
        build(
            "litellm_proxy_workers_stale",
            "Proxy worker rows whose heartbeat is older than LiteLLM's liveness window: workers that died without"
            " stopping (a clean stop deletes the row), by host.",
            "gauge",
            ("hostname",),
            [((host,), stale) for host, _, stale, _ in rows],
        ),
        build(
            "litellm_proxy_worker_last_heartbeat_timestamp_seconds",
            "The newest heartbeat of any proxy worker on the host, as a Unix time.",
            "gauge",
            ("hostname",),
            [((host,), newest) for host, _, _, newest in rows],
        ),
    ]


def _deployments(rows: list[tuple[str, str, str, int, int, float | None, float, int]]) -> list[Family]:
    labels = ("model_name", "model_id")
    ordered = sorted(rows, key=lambda r: (r[0], r[1]))
    return [
        build(
            "litellm_deployment_healthy",
            "Whether the model deployment's latest health check found it healthy (1) or not (0).",
            "gauge",
            labels,
            [((r[0], r[1]), 1.0 if r[2] == "healthy" else 0.0) for r in ordered],
        ),
        build(
            "litellm_deployment_healthy_endpoints",
            "Endpoints the deployment's latest health check found healthy.",
            "gauge",
            labels,
            [((r[0], r[1]), r[3]) for r in ordered],
        ),
        build(
            "litellm_deployment_unhealthy_endpoints",
            "Endpoints the deployment's latest health check found unhealthy.",
            "gauge",
            labels,
            [((r[0], r[1]), r[4]) for r in ordered],
        ),
        build(
            "litellm_deployment_health_check_response_time_seconds",
            "How long the deployment's latest health check took to answer.",
            "gauge",
            labels,
            [((r[0], r[1]), r[5] / 1000) for r in ordered if r[5] is not None],
        ),
        build(
            "litellm_deployment_last_health_check_timestamp_seconds",
            "When the deployment was last health-checked, as a Unix time.",
            "gauge",
            labels,
            [((r[0], r[1]), r[6]) for r in ordered],
        ),
    ]
