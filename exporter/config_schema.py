"""The configuration's keys: the strict schema of the YAML document (``ROOT``), with every
default and what each key means stated once. ``config`` builds the immutable runtime objects
from what it validates; the shipped ``config.yaml`` and the README's table are checked against
it key by key.
"""

from __future__ import annotations

from collections.abc import Callable

from . import schema
from .entities import BUDGETS, USAGE, Entity
from .otlp import settings as otlp_settings
from .schema import Field

DEFAULT_PORT = 8748
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"


# Request latencies of LLM calls run from a quarter second to minutes.
DEFAULT_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
DEFAULT_TTFT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def _section(fields: dict[str, Field]) -> Field:
    """An optional section: absent means every key takes its default."""
    return Field(schema.section(fields), {})


def _per_entity(entities: tuple[Entity, ...], fields: Callable[[Entity], dict[str, Field]]) -> Field:
    return _section({entity.name: _section(fields(entity)) for entity in entities})


def _entity_fields(switch: str, flag: Field | None, flag_name: str, cap: int | None, cap_doc: str) -> dict[str, Field]:
    """An entity's keys: its switch, the flag it has where it applies, and its cap."""
    return {
        "enabled": Field(schema.boolean(), True, switch),
        **({flag_name: flag} if flag is not None else {}),
        "max_series": Field(schema.integer(minimum=1), cap, cap_doc),
    }


ROOT = schema.section(
    {
        "database": _section(
            {
                "dsn": Field(
                    schema.string(),
                    doc="PostgreSQL URL or `key=value` connection string (the proxy's `DATABASE_URL`);"
                    " `--dsn` overrides it; its password never appears in a log line",
                ),
                "min_conns": Field(schema.integer(minimum=0, maximum=100), 1, "connections the pool keeps open"),
                "max_conns": Field(schema.integer(minimum=1, maximum=100), 4, "connections the pool opens at most"),
                "connect_timeout": Field(
                    schema.duration(maximum=300), 5.0, "to connect, and to wait for a pooled connection"
                ),
                "statement_timeout": Field(
                    schema.duration(maximum=3600), 10.0, "enforced by the server on every query"
                ),
                "is_required": Field(
                    schema.boolean(),
                    False,
                    "true: refuse to start while the database is unreachable; false: start, report"
                    " `litellm_db_up 0`, recover by itself",
                ),
            }
        ),
        "web": _section(
            {
                "listen": Field(
                    schema.listen_address(),
                    DEFAULT_LISTEN,
                    "address to serve on (localhost only unless you say otherwise; `:8748` for every interface)",
                ),
                "config_file": Field(
                    schema.string(),
                    None,
                    "TLS and basic auth, in the exporter-toolkit format (see [Security](#security))",
                ),
                "enable_lifecycle": Field(schema.boolean(), False, "accept `POST /-/reload`"),
                "max_connections": Field(
                    schema.integer(minimum=1, maximum=10000),
                    1024,
                    "connections held at once, idle ones included; past it new ones are refused",
                ),
                "request_timeout": Field(
                    schema.duration(maximum=300),
                    10.0,
                    "a connection whose request (TLS handshake and head) has not arrived this long after"
                    " it connected is closed",
                ),
            }
        ),
        "collectors": _section(
            {
                "max_gauge_age": Field(
                    schema.duration(), 300.0, "gauges older than this are dropped while their collector fails"
                ),
                "usage": _section(
                    {
                        "interval": Field(schema.duration(), 30.0, "how often the usage counters are polled"),
                        "late_margin": Field(
                            schema.duration(maximum=7 * 86400),
                            3600.0,
                            "daily rows dated on or after the date of (now minus this), UTC, are summed again on"
                            " every poll: today's, and yesterday's for this long after midnight",
                        ),
                        "resync_interval": Field(
                            schema.duration(minimum=1),
                            3600.0,
                            "how often the days of `look_back` are summed again and the shown entities chosen"
                            " again, aligned to the clock",
                        ),
                        "look_back": Field(
                            schema.duration(maximum=366 * 86400),
                            2 * 86400.0,
                            "at each resync, the rows of this many days before the window (whole days) are"
                            " summed again, for the late flushes and retried batches that still land on them;"
                            " older rows are read only by a full re-read",
                        ),
                        "full_resync_interval": Field(
                            schema.duration(minimum=1),
                            86400.0,
                            "how often every table is read again in full (as at start-up, SIGHUP or"
                            " /-/reload), aligned to the clock: what changed before the look-back counts then",
                        ),
                        "read_connections": Field(
                            schema.integer(minimum=1, maximum=16),
                            2,
                            "connections a full read uses at once, each reading whole tables, within one"
                            " snapshot; those beyond the first are opened for the full read and closed after it",
                        ),
                        "global_max_series": Field(
                            schema.integer(minimum=1),
                            100,
                            "model groups the global families show, the top by all-time spend; the rest are"
                            " summed into `__other__`",
                        ),
                        "source": Field(
                            schema.choice("auto", "daily_tables", "spend_logs"),
                            "auto",
                            "`auto`: each daily table where this LiteLLM has it with every measure, else counters"
                            " derived from `LiteLLM_SpendLogs`; `daily_tables` or `spend_logs`: only that",
                        ),
                        "spend_logs_late_margin": Field(
                            schema.duration(maximum=86400),
                            600.0,
                            "spend-log rows are summed again on every poll while their `startTime` is within this"
                            " of the last resync, or later",
                        ),
                        "entities": _per_entity(
                            USAGE,
                            lambda entity: _entity_fields(
                                "export this entity's usage families",
                                None
                                if entity.model_group is None
                                else Field(schema.boolean(), entity.model_group, "add a `model_group` label"),
                                "model_group",
                                entity.usage_max_series,
                                "entities (ids) the family shows, the top by all-time spend, each whole; the"
                                " rest are summed into `__other__` (see [Series budget](#series-budget))",
                            ),
                        ),
                    }
                ),
                "budgets": _section(
                    {
                        "interval": Field(schema.duration(), 30.0, "how often the budget gauges are read"),
                        "entities": _per_entity(
                            BUDGETS,
                            lambda entity: _entity_fields(
                                "export this entity's budget gauges",
                                None
                                if entity.always_limited
                                else Field(
                                    schema.boolean(), True, "only rows with a budget, a limit, an expiry or a block"
                                ),
                                "only_with_limits",
                                entity.budget_max_series,
                                "rows exported, the top by spend in the current period, each with all its gauges",
                            ),
                        ),
                    }
                ),
                "latency": _section(
                    {
                        "enabled": Field(schema.boolean(), True, "the latency histograms"),
                        "interval": Field(schema.duration(), 30.0, "how often they are polled"),
                        "late_margin": Field(
                            schema.duration(maximum=86400),
                            600.0,
                            "how late a spend-log row may land and still be counted",
                        ),
                        "buckets": Field(
                            schema.buckets(), list(DEFAULT_BUCKETS), "request-duration histogram bounds, in seconds"
                        ),
                        "ttft_buckets": Field(
                            schema.buckets(),
                            list(DEFAULT_TTFT_BUCKETS),
                            "time-to-first-token histogram bounds, in seconds",
                        ),
                    }
                ),
                "proxy": _section(
                    {
                        "targets": Field(schema.url_list(), [], "LiteLLM proxy base URLs to probe"),
                        "timeout": Field(schema.duration(maximum=5), 5.0, "per-probe limit (at most 5s)"),
                        "interval": Field(schema.duration(), 15.0, "how often the proxies are probed"),
                    }
                ),
                "database": _section({"interval": Field(schema.duration(), 15.0, "how often the database is probed")}),
                "proxy_state": _section(
                    {
                        "enabled": Field(
                            schema.boolean(),
                            True,
                            "the proxy's workers (`LiteLLM_ProxyWorkerHeartbeat`) and model deployments' latest"
                            " health checks (`LiteLLM_HealthCheckTable`), where this LiteLLM has them",
                        ),
                        "interval": Field(schema.duration(), 15.0, "how often they are read"),
                        "max_deployments": Field(
                            schema.integer(minimum=1),
                            500,
                            "model deployments whose latest health check is exported, the most recently checked",
                        ),
                    }
                ),
            }
        ),
        "otlp": Field(otlp_settings.SECTION, {}),
    }
)
