"""Immutable runtime configuration, built from the validated YAML document.

Every default is stated once, in the schema below (``ROOT``): the runtime classes have none, the
shipped ``config.yaml`` is checked against it key by key, and the README's configuration table
is generated from it (``python -m exporter.config_docs``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from . import schema
from .otlp import settings as otlp_settings
from .otlp.settings import OtlpConfig
from .schema import Field, SchemaError

DEFAULT_PORT = 8748
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"


# Entities whose usage is counted: each has its families, a switch and a cap.
ENTITIES = ("key", "team", "user", "organization", "end_user", "tag", "agent", "task", "tool", "guardrail", "policy")
# Those whose tables have no model group to label by.
_WITHOUT_MODEL_GROUP = ("tool", "guardrail", "policy")


class ConfigError(Exception):
    """A configuration problem; each line of ``problems`` names the key it is about."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class DatabaseConfig:
    dsn: str
    min_conns: int
    max_conns: int
    connect_timeout: float
    statement_timeout: float
    is_required: bool


@dataclass(frozen=True)
class WebConfig:
    host: str
    port: int
    # An exporter-toolkit web config file: TLS, basic auth, extra headers.
    config_file: str | None
    # POST /-/reload, as Prometheus' --web.enable-lifecycle.
    enable_lifecycle: bool
    max_connections: int
    request_timeout: float


@dataclass(frozen=True)
class EntityConfig:
    enabled: bool
    model_group: bool
    max_series: int | None


@dataclass(frozen=True)
class UsageConfig:
    interval: float
    late_margin: float
    resync_interval: float
    look_back: float
    full_resync_interval: float
    read_connections: int
    global_max_series: int | None
    # auto: the daily tables where they are there and complete, else LiteLLM_SpendLogs.
    source: str
    spend_logs_late_margin: float
    entities: dict[str, EntityConfig]

    def entity(self, name: str) -> EntityConfig:
        return self.entities[name]


BUDGET_ENTITIES = ("key", "user", "team", "organization", "end_user", "team_member", "tag", "budget_window")
# Spend per window of multi-window budgets (LiteLLM_BudgetWindowSpend): every row has a budget.
_ALWAYS_LIMITED = ("budget_window",)


@dataclass(frozen=True)
class BudgetEntityConfig:
    enabled: bool
    # Only rows with a budget, a limit, an expiry or a block: 100k plain keys are not 100k series.
    only_with_limits: bool
    max_series: int | None


@dataclass(frozen=True)
class BudgetsConfig:
    interval: float
    entities: dict[str, BudgetEntityConfig]


@dataclass(frozen=True)
class DatabaseProbeConfig:
    interval: float


# Request latencies of LLM calls run from a quarter second to minutes.
DEFAULT_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
DEFAULT_TTFT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class LatencyConfig:
    enabled: bool
    interval: float
    late_margin: float
    buckets: tuple[float, ...]
    ttft_buckets: tuple[float, ...]


@dataclass(frozen=True)
class ProxyConfig:
    targets: tuple[str, ...]
    timeout: float
    interval: float


@dataclass(frozen=True)
class ProxyStateConfig:
    enabled: bool
    interval: float
    max_deployments: int


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig
    web: WebConfig
    usage: UsageConfig
    budgets: BudgetsConfig
    database_probe: DatabaseProbeConfig
    latency: LatencyConfig
    proxy: ProxyConfig
    proxy_state: ProxyStateConfig
    max_gauge_age: float
    otlp: OtlpConfig

    def with_overrides(
        self,
        *,
        listen: str | None = None,
        poll_interval: float | str | None = None,
        web_config: str | None = None,
        names: dict[str, str] | None = None,
    ) -> Config:
        """Apply command-line flags (or their environment variables, named in ``names`` by
        flag), which win over the file."""
        names = names or {}
        config = self
        if listen is not None:
            host, port = _validate_flag(names.get("--listen", "--listen"), listen, schema.listen_address())
            config = dataclasses.replace(config, web=dataclasses.replace(config.web, host=host, port=port))
        if web_config is not None:
            path = _validate_flag(names.get("--web-config", "--web-config"), web_config, schema.string())
            config = dataclasses.replace(config, web=dataclasses.replace(config.web, config_file=path))
        if poll_interval is not None:
            flag = names.get("--poll-interval", "--poll-interval")
            seconds = _validate_flag(flag, poll_interval, schema.duration())
            config = dataclasses.replace(
                config,
                **{
                    name: dataclasses.replace(getattr(config, name), interval=seconds)
                    for name in ("usage", "budgets", "database_probe", "latency", "proxy", "proxy_state")
                },
            )
        return config


# Entities shown per usage family (each with five counters per model group, the rest summed
# into __other__), and rows per budget family (up to nine gauges each): the README's series
# budget adds these up for a 10k-key, 1k-team deployment.
USAGE_MAX_SERIES = {
    "key": 500,
    "team": 200,
    "user": 200,
    "organization": 50,
    "end_user": 500,
    "tag": 100,
    "agent": 50,
    "task": 20,
    "tool": 100,
    "guardrail": 50,
    "policy": 50,
}
BUDGET_MAX_SERIES = {
    "key": 500,
    "team": 500,
    "user": 200,
    "organization": 100,
    "end_user": 200,
    "team_member": 200,
    "tag": 100,
    "budget_window": 500,
}


def _validate_flag(name: str, value: Any, validator: schema.Validator) -> Any:
    try:
        return schema.validate_one(name, value, validator)
    except SchemaError as exc:
        raise ConfigError(exc.problems) from None


def _section(fields: dict[str, Field]) -> Field:
    """An optional section: absent means every key takes its default."""
    return Field(schema.section(fields), {})


def _per_entity(names: tuple[str, ...], fields: Any) -> Field:
    return _section({name: _section(fields(name)) for name in names})


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
                            ENTITIES,
                            lambda name: {
                                "enabled": Field(schema.boolean(), True, "export this entity's usage families"),
                                **(
                                    {}
                                    if name in _WITHOUT_MODEL_GROUP
                                    else {
                                        "model_group": Field(
                                            schema.boolean(), name != "end_user", "add a `model_group` label"
                                        )
                                    }
                                ),
                                "max_series": Field(
                                    schema.integer(minimum=1),
                                    USAGE_MAX_SERIES[name],
                                    "entities (ids) the family shows, the top by all-time spend, each whole; the"
                                    " rest are summed into `__other__` (see [Series budget](#series-budget))",
                                ),
                            },
                        ),
                    }
                ),
                "budgets": _section(
                    {
                        "interval": Field(schema.duration(), 30.0, "how often the budget gauges are read"),
                        "entities": _per_entity(
                            BUDGET_ENTITIES,
                            lambda name: {
                                "enabled": Field(schema.boolean(), True, "export this entity's budget gauges"),
                                **(
                                    {}
                                    if name in _ALWAYS_LIMITED
                                    else {
                                        "only_with_limits": Field(
                                            schema.boolean(),
                                            True,
                                            "only rows with a budget, a limit, an expiry or a block",
                                        )
                                    }
                                ),
                                "max_series": Field(
                                    schema.integer(minimum=1),
                                    BUDGET_MAX_SERIES[name],
                                    "rows exported, the top by spend in the current period, each with all its gauges",
                                ),
                            },
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


def defaults(dsn: str) -> Config:
    """The configuration with every setting at its default."""
    return parse({"database": {"dsn": dsn}})


def parse(document: Any) -> Config:
    """Build a Config from a parsed YAML document."""
    try:
        raw = schema.validate(document, ROOT)
    except SchemaError as exc:
        raise ConfigError(exc.problems) from None
    database = raw["database"]
    try:
        conninfo_to_dict(database["dsn"])
    except psycopg.ProgrammingError:
        # psycopg's message quotes the string, and so could leak a password.
        raise ConfigError(
            [
                "database.dsn: not a valid PostgreSQL connection string "
                "(expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME or key=value pairs)"
            ]
        ) from None
    if database["min_conns"] > database["max_conns"]:
        raise ConfigError(
            [
                "database.min_conns: must not exceed database.max_conns "
                f"({database['max_conns']}), got {database['min_conns']}"
            ]
        )
    collectors = raw["collectors"]
    usage, budgets, latency = collectors["usage"], collectors["budgets"], collectors["latency"]
    host, port = raw["web"]["listen"]
    return Config(
        database=DatabaseConfig(**database),
        web=WebConfig(
            host=host,
            port=port,
            config_file=raw["web"]["config_file"],
            enable_lifecycle=raw["web"]["enable_lifecycle"],
            max_connections=raw["web"]["max_connections"],
            request_timeout=raw["web"]["request_timeout"],
        ),
        usage=UsageConfig(
            interval=usage["interval"],
            late_margin=usage["late_margin"],
            resync_interval=usage["resync_interval"],
            look_back=usage["look_back"],
            full_resync_interval=usage["full_resync_interval"],
            read_connections=usage["read_connections"],
            global_max_series=usage["global_max_series"],
            source=usage["source"],
            spend_logs_late_margin=usage["spend_logs_late_margin"],
            entities={
                name: EntityConfig(**{"model_group": False, **values}) for name, values in usage["entities"].items()
            },
        ),
        budgets=BudgetsConfig(
            interval=budgets["interval"],
            entities={
                name: BudgetEntityConfig(**{"only_with_limits": True, **values})
                for name, values in budgets["entities"].items()
            },
        ),
        database_probe=DatabaseProbeConfig(**collectors["database"]),
        latency=LatencyConfig(
            **{**latency, "buckets": tuple(latency["buckets"]), "ttft_buckets": tuple(latency["ttft_buckets"])}
        ),
        proxy=ProxyConfig(**{**collectors["proxy"], "targets": tuple(collectors["proxy"]["targets"])}),
        proxy_state=ProxyStateConfig(**collectors["proxy_state"]),
        max_gauge_age=collectors["max_gauge_age"],
        otlp=otlp_settings.from_raw(raw["otlp"]),
    )
