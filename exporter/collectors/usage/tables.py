"""The catalogue of LiteLLM's tables the usage counters come from: each table (a ``Source``),
its measures, and the family groups (views) it feeds. The SQL built from it is in ``queries``.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import TypeAlias

from ...entities import BY_NAME, TABLE, DailyTable, Entity

Group = tuple[str, ...]
# A series' sums, one per measure, then the rows summed: whole numbers of each measure's unit
# (``Measure.units``), so that a sum is the same however the rows were split between reads
# (floating-point sums are not: replicas and restarts would disagree in the last digit, and a
# counter that differs downwards looks like a reset). Raw 64-bit integers, not int objects,
# since the engine keeps tens of thousands of them for as long as it runs.
Sums: TypeAlias = "array[int]"
SUMS_TYPE = "q"
# Dollar amounts are summed in nano-dollars: a billion dollars per series fits, and rounding
# each row to a nano-dollar leaves sums exact to far below a cent.
MONEY_UNITS = 10**9

# Columns the overflow entity does not keep apart.
FINER = frozenset({"model", "provider"})


@dataclass(frozen=True)
class Measure:
    """A counter's column (or the sum of several columns) in a daily table, and its name."""

    column: str
    name: str
    documentation: str
    # False: only in the global families (by model group), not per key, team, ...
    per_entity: bool = True
    scale: float = 1.0  # to the metric's base unit (milliseconds to seconds)
    sum_of: tuple[str, ...] = ()  # the columns whose sum it is; empty: ``column`` itself
    money: bool = False  # a dollar amount (a float column): summed in ``MONEY_UNITS``

    @property
    def units(self) -> int:
        """What one of the measure's unit is divided into for exact sums."""
        return MONEY_UNITS if self.money else 1

    @property
    def needs(self) -> tuple[str, ...]:
        return self.sum_of or (self.column,)


MEASURES = (
    Measure("spend", "spend_usd", "Spend in US dollars", money=True),
    Measure("api_requests", "requests", "Requests"),
    Measure("successful_requests", "requests_successful", "Successful requests"),
    Measure("failed_requests", "requests_failed", "Failed requests"),
    Measure("prompt_tokens", "input_tokens", "Input (prompt) tokens"),
    Measure("completion_tokens", "output_tokens", "Output (completion) tokens"),
    Measure("cache_read_input_tokens", "cache_read_input_tokens", "Input tokens read from the provider's cache", False),
    Measure(
        "cache_creation_input_tokens",
        "cache_creation_input_tokens",
        "Input tokens written to the provider's cache",
        False,
    ),
    Measure(
        "total_response_time_ms",
        "response_time_seconds",
        "Time taken to answer the successful requests counted in litellm_timed_requests_total",
        False,
        scale=0.001,
    ),
    Measure("timed_requests", "timed_requests", "Successful requests whose response time was recorded", False),
    Measure(
        "prompt_caching_savings_spend",
        "prompt_caching_savings_usd",
        "US dollars saved by prompt caching",
        False,
        money=True,
    ),
    Measure(
        "compression_savings_spend",
        "compression_savings_usd",
        "US dollars saved by prompt compression",
        False,
        money=True,
    ),
    Measure(
        "gateway_injected_caching_savings_spend",
        "injected_caching_savings_usd",
        "US dollars saved by cache points the proxy injected",
        False,
        money=True,
    ),
    Measure(
        "autorouter_savings_spend", "autorouter_savings_usd", "US dollars saved by the auto-router", False, money=True
    ),
    Measure("compression_saved_tokens", "compression_saved_tokens", "Input tokens saved by prompt compression", False),
)
CORE_MEASURES = ("spend", "api_requests", "failed_requests", "prompt_tokens", "completion_tokens")
_BY_COLUMN = {m.column: m for m in MEASURES}
SPEND_LOG_MEASURES = tuple(_BY_COLUMN[c] for c in CORE_MEASURES)


@dataclass(frozen=True)
class ViewSpec:
    """A family group a source feeds: the logical column its entity id is, the columns grouped
    beside it, and the usage entity whose switch, cap, ``model_group`` setting and family
    prefix apply (None: the global families, prefixed ``global_family`` and capped by
    ``global_max_series``)."""

    id: str
    extras: tuple[str, ...] = ()
    entity: str | None = None
    # Unique among all views: what caps are reported under and state is kept by.
    name: str = ""
    global_family: str = "litellm"

    @property
    def family(self) -> str:
        """The metric name prefix."""
        return BY_NAME[self.entity].family if self.entity else self.global_family

    @property
    def key(self) -> str:
        return self.name or self.family


@dataclass(frozen=True)
class Source:
    """A daily rollup table, the columns its families group by (each under a logical name),
    the measures it counts, and the families it feeds. Spend tables also name the same columns
    in LiteLLM_SpendLogs, for schemas or configurations without the daily table."""

    table: str
    columns: tuple[tuple[str, str], ...]  # logical name, daily-table column
    views: tuple[ViewSpec, ...]
    # logical name, spend-log column ("tag": the request's tags); None: no spend-log fallback
    spend_log_columns: tuple[tuple[str, str], ...] | None = None
    # Rows of LiteLLM_SpendLogs whose column is empty have no row in this daily table.
    spend_log_required: str | None = None
    measures: tuple[Measure, ...] = MEASURES
    required: tuple[str, ...] = CORE_MEASURES  # columns without which the table is too old to read
    rank: str = "spend"  # the measure capped views keep their top entities by

    @property
    def logical(self) -> set[str]:
        return {name for name, _ in self.columns}


def _entity_source(entity: Entity, daily: DailyTable) -> Source:
    """The daily spend table of one entity (``Entity.daily``)."""
    id_name = entity.ids[0]
    log = daily.spend_log_column
    return Source(
        daily.table,
        ((id_name, daily.column), ("model_group", "model_group")),
        (ViewSpec(id_name, (), entity.name),),
        ((id_name, log), ("model_group", "model_group")) if log else None,
        spend_log_required=log if daily.spend_log_required else None,
    )


USER_SOURCE = Source(
    "LiteLLM_DailyUserSpend",
    (
        ("user_id", "user_id"),
        ("api_key", "api_key"),
        ("model_group", "model_group"),
        ("model", "model"),
        ("provider", "custom_llm_provider"),
    ),
    (
        ViewSpec("model_group", ("model", "provider")),
        ViewSpec("api_key", (), "key"),
        ViewSpec("user_id", (), "user"),
    ),
    (
        ("user_id", "user"),
        ("api_key", "api_key"),
        ("model_group", "model_group"),
        ("model", "model"),
        ("provider", "custom_llm_provider"),
    ),
)
# The spend tables of one entity each, by entity.
ENTITY_SOURCES = {e.name: _entity_source(e, e.daily) for e in TABLE if e.daily is not None}
SPEND_SOURCES = (USER_SOURCE, *ENTITY_SOURCES.values())

_ERRORS = Measure("failed_requests", "request_errors", "Failed requests by HTTP status code")
# LiteLLM_DailyModelUsage: the spend tables' measures, its request count named request_count.
_MODEL_USAGE = (
    _BY_COLUMN["spend"],
    Measure("request_count", "requests", "Requests"),
    *(_BY_COLUMN[c] for c in ("successful_requests", "failed_requests", "prompt_tokens", "completion_tokens")),
)


def _checks(table: str, id_name: str, entity: str) -> Source:
    """Guardrail or policy evaluations: one row per id and day."""
    return Source(
        table,
        ((id_name, id_name),),
        (ViewSpec(id_name, (), entity),),
        measures=(
            Measure("requests_evaluated", "requests_evaluated", f"Requests the {entity} evaluated"),
            Measure("passed_count", "requests_passed", f"Requests the {entity} passed"),
            Measure("blocked_count", "requests_blocked", f"Requests the {entity} blocked"),
            Measure("flagged_count", "requests_flagged", f"Requests the {entity} flagged"),
        ),
        required=("requests_evaluated",),
        rank="requests_evaluated",
    )


# Tables newer LiteLLM versions keep beside the spend tables; each is read only where it exists.
ACTIVITY_SOURCES = (
    Source(
        "LiteLLM_DailyRequestErrors",
        (
            ("model_group", "model_group"),
            ("status_code", "status_code"),
            ("api_key", "api_key"),
            ("team_id", "team_id"),
            ("user_id", "user_id"),
        ),
        (
            ViewSpec("model_group", ("status_code",), name="litellm_request_errors"),
            *(
                ViewSpec(column, ("status_code",), entity, f"{BY_NAME[entity].family}_request_errors")
                for entity, column in (("key", "api_key"), ("team", "team_id"), ("user", "user_id"))
            ),
        ),
        measures=(_ERRORS,),
        required=("failed_requests",),
        rank="failed_requests",
    ),
    Source(
        "LiteLLM_DailyGatewayRequests",
        (("route", "route"), ("category", "category")),
        (ViewSpec("route", ("category",), global_family="litellm_gateway"),),
        measures=(
            Measure(
                "requests",
                "requests",
                "Requests answered by the proxy, those refused before reaching a model included",
                sum_of=("successful_requests", "failed_requests"),
            ),
            Measure("successful_requests", "requests_successful", "Requests the proxy answered successfully"),
            Measure("failed_requests", "requests_failed", "Requests the proxy answered with an error"),
        ),
        required=("successful_requests", "failed_requests"),
        rank="requests",
    ),
    Source(
        "LiteLLM_DailyGatewayFailedRequests",
        (("route", "route"), ("category", "category"), ("status_code", "status_code")),
        (
            ViewSpec(
                "route",
                ("category", "status_code"),
                name="litellm_gateway_request_errors",
                global_family="litellm_gateway",
            ),
        ),
        measures=(
            Measure(
                "failed_requests", "request_errors", "Requests the proxy answered with an error, by HTTP status code"
            ),
        ),
        required=("failed_requests",),
        rank="failed_requests",
    ),
    Source(
        "LiteLLM_DailyModelUsage",
        (("task_type", "task_type"), ("model_group", "model_group")),
        (ViewSpec("task_type", (), "task"),),
        measures=_MODEL_USAGE,
        required=("spend", "request_count"),
    ),
    Source(
        "LiteLLM_DailyToolSpend",
        (("tool", "tool_name"),),
        (ViewSpec("tool", (), "tool"),),
        measures=(
            Measure("spend", "spend_usd", "Spend in US dollars of requests that called the tool", money=True),
            Measure("total_tokens", "tokens", "Tokens of requests that called the tool"),
            Measure("request_count", "requests", "Requests that called the tool"),
        ),
        required=("spend", "request_count"),
    ),
    _checks("LiteLLM_DailyGuardrailMetrics", "guardrail_id", "guardrail"),
    _checks("LiteLLM_DailyPolicyMetrics", "policy_id", "policy"),
    Source(
        "LiteLLM_DailyGuardrailUsageUnits",
        (("guardrail_id", "guardrail_id"), ("usage_unit", "usage_unit")),
        (ViewSpec("guardrail_id", ("usage_unit",), "guardrail", "litellm_guardrail_usage"),),
        measures=(
            Measure("units", "usage_units", "Units of guardrail usage billed by the provider"),
            Measure("untracked_units", "untracked_usage_units", "Units of guardrail usage with no known price"),
            Measure("cost", "usage_cost_usd", "Cost in US dollars of guardrail usage", money=True),
        ),
        required=("units",),
        rank="units",
    ),
)
ALL_SOURCES = (*SPEND_SOURCES, *ACTIVITY_SOURCES)
