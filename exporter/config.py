"""Immutable runtime configuration, built from the validated YAML document.

Every default is stated once, in the schema (``config_schema.ROOT``): the runtime classes have
none, the shipped ``config.yaml`` is checked against it key by key, and the README's
configuration table is generated from it (``python -m exporter.config_docs``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from . import schema
from .config_schema import ROOT
from .entities import BY_NAME
from .otlp.settings import OtlpConfig
from .schema import SchemaError

_T = TypeVar("_T")


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
                **{name: dataclasses.replace(getattr(config, name), interval=seconds) for name in polled_sections()},
            )
        return config


def _validate_flag(name: str, value: Any, validator: schema.Validator) -> Any:
    try:
        return schema.validate_one(name, value, validator)
    except SchemaError as exc:
        raise ConfigError(exc.problems) from None


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
    host, port = raw["web"]["listen"]
    usage, budgets = collectors["usage"], collectors["budgets"]
    return Config(
        database=_build(DatabaseConfig, database),
        web=_build(WebConfig, raw["web"], host=host, port=port),
        usage=_build(
            UsageConfig,
            usage,
            entities={
                # A model_group label only where the entity's tables have a model group.
                name: _build(
                    EntityConfig, values, model_group=BY_NAME[name].model_group is not None and values["model_group"]
                )
                for name, values in usage["entities"].items()
            },
        ),
        budgets=_build(
            BudgetsConfig,
            budgets,
            entities={
                # Only rows with limits, unless every row of the entity has a budget.
                name: _build(
                    BudgetEntityConfig,
                    values,
                    only_with_limits=BY_NAME[name].always_limited or values["only_with_limits"],
                )
                for name, values in budgets["entities"].items()
            },
        ),
        database_probe=_build(DatabaseProbeConfig, collectors[_RENAMED["database_probe"]]),
        latency=_build(LatencyConfig, collectors["latency"]),
        proxy=_build(ProxyConfig, collectors["proxy"]),
        proxy_state=_build(ProxyStateConfig, collectors["proxy_state"]),
        max_gauge_age=collectors["max_gauge_age"],
        otlp=_build(OtlpConfig, raw["otlp"]),
    )


# The runtime configuration is the document's shape, but for these: the collectors' sections
# (and max_gauge_age) sit at its top, the database probe's section is ``database_probe``, and
# ``web.listen`` is ``web.host`` and ``web.port``.
_RENAMED = {"database_probe": "database"}
_RUNTIME_NAMES = {document: runtime for runtime, document in _RENAMED.items()}


def _build(cls: type[_T], raw: dict[str, Any], **given: Any) -> _T:
    """A runtime section from its validated keys, by name (lists as tuples: it is immutable)."""
    values = {f.name: given[f.name] if f.name in given else raw[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()})


def value_at(config: Config, path: tuple[str, ...]) -> Any:
    """The runtime value of the document's key at ``path`` (``collectors.usage.interval``), as
    the schema validated it: what ``--print-config`` writes back."""
    if path == ("web", "listen"):
        return (config.web.host, config.web.port)
    if path[0] == "collectors":
        path = (_RUNTIME_NAMES.get(path[1], path[1]), *path[2:])
    node: Any = config
    for key in path:
        node = node[key] if isinstance(node, dict) else getattr(node, key)
    return node


def polled_sections() -> tuple[str, ...]:
    """The runtime sections of the collectors: those of the schema's ``collectors`` with an interval."""
    collectors = schema.subsection(ROOT, "collectors")
    return tuple(
        _RUNTIME_NAMES.get(name, name)
        for name, field in collectors.fields.items()
        if isinstance(field.validate, schema.Section) and "interval" in field.validate.fields
    )
