"""What the usage counters must equal: sums computed by PostgreSQL over the daily tables.

Written independently of the exporter's queries on purpose: these are whole-table
aggregates, the slow and obviously right way.
"""

from __future__ import annotations

import math

import psycopg

from .exporters import Samples

# The exporter sums dollars in nano-dollars, each row rounded: a sum of n rows is within
# n / 2 nano-dollars of PostgreSQL's floating-point one. A micro-dollar is far below a cent and
# far above what the tests' few thousand rows can add up to.
TOLERANCE = 1e-6

MEASURES = {
    "spend_usd": "d.spend",
    "requests": "d.api_requests",
    "requests_successful": "d.successful_requests",
    "requests_failed": "d.failed_requests",
    "input_tokens": "d.prompt_tokens",
    "output_tokens": "d.completion_tokens",
}
GLOBAL_ONLY = {
    "cache_read_input_tokens": "d.cache_read_input_tokens",
    "cache_creation_input_tokens": "d.cache_creation_input_tokens",
    "response_time_seconds": "d.total_response_time_ms / 1000.0",
    "timed_requests": "d.timed_requests",
    "prompt_caching_savings_usd": "d.prompt_caching_savings_spend",
    "compression_savings_usd": "d.compression_savings_spend",
    "injected_caching_savings_usd": "d.gateway_injected_caching_savings_spend",
    "autorouter_savings_usd": "d.autorouter_savings_spend",
    "compression_saved_tokens": "d.compression_saved_tokens",
}

# family prefix -> (SELECT list of "expression AS label", FROM clause)
_MG = "coalesce(d.model_group, '') AS model_group"
_KEY_LABELS = (
    "left(d.api_key, 12) AS key_hash,"
    " coalesce(CASE WHEN v.token IS NULL THEN dv.key_alias ELSE v.key_alias END, '') AS key_alias,"
    " coalesce(CASE WHEN v.token IS NULL THEN dv.team_id ELSE v.team_id END, '') AS team_id"
)


def _with_key(table: str) -> str:
    return (
        f'"{table}" d LEFT JOIN "LiteLLM_VerificationToken" v ON v.token = d.api_key'
        ' LEFT JOIN (SELECT DISTINCT ON (token) token, key_alias, team_id FROM "LiteLLM_DeletedVerificationToken"'
        " ORDER BY token, deleted_at DESC) dv ON dv.token = d.api_key"
    )


_TEAM_LABELS = (
    "coalesce(d.team_id, '') AS team_id,"
    " coalesce(CASE WHEN t.team_id IS NULL THEN dt.team_alias ELSE t.team_alias END, '') AS team_alias"
)


def _with_team(table: str) -> str:
    return (
        f'"{table}" d LEFT JOIN "LiteLLM_TeamTable" t ON t.team_id = d.team_id'
        ' LEFT JOIN (SELECT DISTINCT ON (team_id) team_id, team_alias FROM "LiteLLM_DeletedTeamTable"'
        " ORDER BY team_id, deleted_at DESC) dt ON dt.team_id = d.team_id"
    )


QUERIES = {
    "litellm": (
        f"{_MG}, coalesce(d.model, '') AS model, coalesce(d.custom_llm_provider, '') AS provider",
        '"LiteLLM_DailyUserSpend" d',
    ),
    "litellm_key": (f"{_KEY_LABELS}, {_MG}", _with_key("LiteLLM_DailyUserSpend")),
    "litellm_user": (f"coalesce(d.user_id, '') AS user_id, {_MG}", '"LiteLLM_DailyUserSpend" d'),
    "litellm_team": (f"{_TEAM_LABELS}, {_MG}", _with_team("LiteLLM_DailyTeamSpend")),
    "litellm_organization": (
        "coalesce(d.organization_id, '') AS organization_id,"
        f" coalesce(o.organization_alias, '') AS organization_alias, {_MG}",
        '"LiteLLM_DailyOrganizationSpend" d'
        ' LEFT JOIN "LiteLLM_OrganizationTable" o ON o.organization_id = d.organization_id',
    ),
    "litellm_end_user": ("coalesce(d.end_user_id, '') AS end_user", '"LiteLLM_DailyEndUserSpend" d'),
    "litellm_tag": (f"coalesce(d.tag, '') AS tag, {_MG}", '"LiteLLM_DailyTagSpend" d'),
    "litellm_agent": (f"coalesce(d.agent_id, '') AS agent_id, {_MG}", '"LiteLLM_DailyAgentSpend" d'),
}

_STATUS = "d.status_code::text AS status_code"
_CHECKS = {
    "requests_evaluated": "d.requests_evaluated",
    "requests_passed": "d.passed_count",
    "requests_blocked": "d.blocked_count",
    "requests_flagged": "d.flagged_count",
}
# The families of the tables newer LiteLLM versions keep beside the spend tables, each as
# (labels, FROM clause, {measure: expression}).
ACTIVITY = {
    "litellm_request_errors": (f"{_MG}, {_STATUS}", '"LiteLLM_DailyRequestErrors" d', {"": "d.failed_requests"}),
    "litellm_key_request_errors": (
        f"{_KEY_LABELS}, {_STATUS}, {_MG}",
        _with_key("LiteLLM_DailyRequestErrors"),
        {"": "d.failed_requests"},
    ),
    "litellm_team_request_errors": (
        f"{_TEAM_LABELS}, {_STATUS}, {_MG}",
        _with_team("LiteLLM_DailyRequestErrors"),
        {"": "d.failed_requests"},
    ),
    "litellm_user_request_errors": (
        f"d.user_id AS user_id, {_STATUS}, {_MG}",
        '"LiteLLM_DailyRequestErrors" d',
        {"": "d.failed_requests"},
    ),
    "litellm_gateway": (
        "d.route AS route, d.category AS category",
        '"LiteLLM_DailyGatewayRequests" d',
        {
            "_requests": "d.successful_requests + d.failed_requests",
            "_requests_successful": "d.successful_requests",
            "_requests_failed": "d.failed_requests",
        },
    ),
    "litellm_gateway_request_errors": (
        f"d.route AS route, d.category AS category, {_STATUS}",
        '"LiteLLM_DailyGatewayFailedRequests" d',
        {"": "d.failed_requests"},
    ),
    "litellm_task": (
        f"d.task_type AS task_type, {_MG}",
        '"LiteLLM_DailyModelUsage" d',
        {
            "_spend_usd": "d.spend",
            "_requests": "d.request_count",
            "_requests_successful": "d.successful_requests",
            "_requests_failed": "d.failed_requests",
            "_input_tokens": "d.prompt_tokens",
            "_output_tokens": "d.completion_tokens",
        },
    ),
    "litellm_tool": (
        "d.tool_name AS tool",
        '"LiteLLM_DailyToolSpend" d',
        {"_spend_usd": "d.spend", "_tokens": "d.total_tokens", "_requests": "d.request_count"},
    ),
    "litellm_guardrail": (
        "d.guardrail_id AS guardrail_id",
        '"LiteLLM_DailyGuardrailMetrics" d',
        {f"_{name}": expression for name, expression in _CHECKS.items()},
    ),
    "litellm_policy": (
        "d.policy_id AS policy_id",
        '"LiteLLM_DailyPolicyMetrics" d',
        {f"_{name}": expression for name, expression in _CHECKS.items()},
    ),
    "litellm_guardrail_usage": (
        "d.guardrail_id AS guardrail_id, d.usage_unit AS usage_unit",
        '"LiteLLM_DailyGuardrailUsageUnits" d',
        {
            "_usage_units": "d.units",
            "_untracked_usage_units": "d.untracked_units",
            "_usage_cost_usd": "coalesce(d.cost, 0)",
        },
    ),
}


def _sums(
    conn: psycopg.Connection, select: str, source: str, expression: str
) -> dict[frozenset[tuple[str, str]], float]:
    positions = ", ".join(str(i + 1) for i in range(select.count(" AS ")))
    cur = conn.execute(f"SELECT {select}, sum({expression}) FROM {source} GROUP BY {positions}")
    names = [c.name for c in cur.description][:-1]
    return {frozenset(zip(names, row[:-1], strict=True)): float(row[-1]) for row in cur.fetchall()}


def expected(conn: psycopg.Connection, prefix: str, expression: str) -> dict[frozenset[tuple[str, str]], float]:
    select, source = QUERIES[prefix]
    return _sums(conn, select, source, expression)


def families(prefix: str) -> dict[str, str]:
    """Sample name -> expression over the daily row, for every counter of one family prefix."""
    measures = dict(MEASURES)
    if prefix == "litellm":
        measures.update(GLOBAL_ONLY)
    return {f"{prefix}_{name}_total": column for name, column in measures.items()}


def activity_expected(conn: psycopg.Connection) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    """Sample name -> what every series of it must equal, for the newer tables' families."""
    result = {}
    for group, (select, source, measures) in ACTIVITY.items():
        prefix = group.removesuffix("_usage") if group.endswith("_usage") else group
        for suffix, expression in measures.items():
            result[f"{prefix}{suffix}_total"] = _sums(conn, select, source, expression)
    return result


def mismatches(conn: psycopg.Connection, samples: Samples, prefixes: tuple[str, ...] = tuple(QUERIES)) -> list[str]:
    """Every difference between the exposition and the database, as readable lines."""
    wanted = {
        sample_name: expected(conn, prefix, expression)
        for prefix in prefixes
        for sample_name, expression in families(prefix).items()
    }
    return differences(wanted, samples)


def differences(wanted: dict[str, dict[frozenset[tuple[str, str]], float]], samples: Samples) -> list[str]:
    problems = []
    for sample_name, want in wanted.items():
        got = samples.get(sample_name, {})
        for labels in want.keys() | got.keys():
            if labels not in got:
                problems.append(f"{sample_name}{dict(labels)}: missing, database says {want[labels]!r}")
            elif labels not in want:
                problems.append(f"{sample_name}{dict(labels)}: {got[labels]!r} is not in the database")
            elif not math.isclose(got[labels], want[labels], rel_tol=1e-9, abs_tol=TOLERANCE):
                problems.append(f"{sample_name}{dict(labels)}: {got[labels]!r} != database {want[labels]!r}")
    return problems
