"""Writes the Grafana dashboards in grafana/dashboards/ from the panel lists below.

Run ``python grafana/generate.py`` after editing; a test fails when the JSON files and this
script disagree, and another evaluates every panel's queries against a real Prometheus.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _rules() -> Any:
    """prometheus/generate.py, which names the recording rules the panels read."""
    spec = importlib.util.spec_from_file_location("prometheus_rules", HERE.parent / "prometheus" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RULES = _rules()
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

MODEL = 'model_group=~"$model"'
TEAM = 'team_alias=~"$team"'
KEY = 'key_alias=~"$key_alias"'
# Top-N panels read the entities a family shows; everything its cap leaves out is one
# "__other__" entity, whose share has a panel of its own.
SHOWN_KEY = 'key_hash!="__other__"'
SHOWN_TEAM = 'team_id!="__other__"'
RATE = "[$__rate_interval]"
RANGE = "[$__range]"


def recorded(measure: str) -> str:
    """A usage recording rule's 5-minute rate per model group (prometheus/generate.py): the
    fleet-wide and long-range panels read these, one series per model group, not the raw ones."""
    return str(RULES.record("model_group", RULES.LEVELS["model_group"][0], measure, "rate5m"))


def in_range(measure: str, selector: str, by: str = "") -> str:
    """A measure's increase over the dashboard's range, from its recorded rate: the mean rate
    times the range's seconds (the raw increase would read every raw sample of the range)."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (avg_over_time({recorded(measure)}{{{selector}}}{RANGE})) * $__range_s"


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
        "instant": instant,
        "range": not instant,
    }


def panel(
    kind: str,
    title: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    description: str = "",
    thresholds: list[tuple[float | None, str]] | None = None,
    max_value: float | None = None,
) -> dict[str, Any]:
    steps = [{"color": color, "value": value} for value, color in (thresholds or [(None, "green")])]
    defaults: dict[str, Any] = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}
    if max_value is not None:
        defaults["max"] = max_value
        defaults["min"] = 0
    result: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": {"w": width, "h": height},
        "options": {},
    }
    if kind == "bargauge":
        result["options"] = {"displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True}
    if kind == "table":
        result["options"] = {"showHeader": True}
        result["transformations"] = [{"id": "labelsToFields", "options": {}}] if len(targets) == 1 else []
    return result


def variable(name: str, label: str, metric: str, label_name: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": f"label_values({metric}, {label_name})", "refId": name},
        "definition": f"label_values({metric}, {label_name})",
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2,
        "sort": 1,
    }


TEMPLATING = [
    {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "refresh": 1,
    },
    variable("team", "Team", "litellm_team_spend_usd_total", "team_alias"),
    variable("key_alias", "Key alias", "litellm_key_spend_usd_total", "key_alias"),
    variable("model", "Model group", "litellm_spend_usd_total", "model_group"),
]

USD_THRESHOLDS = [(None, "green")]
BUDGET_THRESHOLDS = [(None, "green"), (0.8, "orange"), (1.0, "red")]

OVERVIEW = [
    panel(
        "stat",
        "Spend in range",
        [target(in_range("spend_usd", MODEL), instant=True)],
        unit="currencyUSD",
        width=6,
        height=4,
    ),
    panel(
        "stat",
        "Requests in range",
        [target(in_range("requests", MODEL), instant=True)],
        width=6,
        height=4,
    ),
    panel(
        "stat",
        "Failure ratio",
        [
            target(
                f"{in_range('requests_failed', MODEL)} / {in_range('requests', MODEL)}",
                instant=True,
            )
        ],
        unit="percentunit",
        width=6,
        height=4,
        thresholds=[(None, "green"), (0.05, "orange"), (0.2, "red")],
    ),
    panel(
        "stat",
        "Tokens in range",
        [
            target(
                f"{in_range('input_tokens', MODEL)} + {in_range('output_tokens', MODEL)}",
                instant=True,
            )
        ],
        width=6,
        height=4,
    ),
    panel(
        "timeseries",
        "Spend rate by model group (USD per hour)",
        [target(f"sum by (model_group) ({recorded('spend_usd')}{{{MODEL}}}) * 3600", "{{model_group}}")],
        unit="currencyUSD",
    ),
    panel(
        "timeseries",
        "Spend rate by team (USD per hour)",
        [
            target(
                # team_id too: the entities beyond the cap are one "__other__" team, with no alias.
                f"sum by (team_id, team_alias) (rate(litellm_team_spend_usd_total{{{TEAM},{MODEL}}}{RATE})) * 3600",
                "{{team_alias}} ({{team_id}})",
            )
        ],
        unit="currencyUSD",
    ),
    panel(
        "bargauge",
        "Spend in range by model group",
        [
            target(
                f"sort_desc({in_range('spend_usd', MODEL, 'model_group')})",
                "{{model_group}}",
                instant=True,
            )
        ],
        unit="currencyUSD",
    ),
    panel(
        "bargauge",
        "Spend in range by team",
        [
            target(
                "sort_desc(sum by (team_id, team_alias)"
                f" (increase(litellm_team_spend_usd_total{{{TEAM},{MODEL}}}{RANGE})))",
                "{{team_alias}} ({{team_id}})",
                instant=True,
            )
        ],
        unit="currencyUSD",
    ),
    panel(
        "timeseries",
        "Requests and failures per second",
        [
            target(f"sum({recorded('requests')}{{{MODEL}}})", "requests"),
            target(f"sum({recorded('requests_failed')}{{{MODEL}}})", "failed", ref="B"),
        ],
        unit="reqps",
    ),
    panel(
        "timeseries",
        "Tokens per second",
        [
            target(f"sum({recorded('input_tokens')}{{{MODEL}}})", "input"),
            target(f"sum({recorded('output_tokens')}{{{MODEL}}})", "output", ref="B"),
        ],
    ),
    panel(
        "bargauge",
        "Top 10 keys by spend in range",
        [
            target(
                "topk(10, sum by (key_alias, key_hash)"
                f" (increase(litellm_key_spend_usd_total{{{KEY},{MODEL},{SHOWN_KEY}}}{RANGE})))",
                "{{key_alias}} ({{key_hash}})",
                instant=True,
            )
        ],
        unit="currencyUSD",
    ),
    panel(
        "bargauge",
        "Top 10 teams by spend in range",
        [
            target(
                "topk(10, sum by (team_alias)"
                f" (increase(litellm_team_spend_usd_total{{{TEAM},{MODEL},{SHOWN_TEAM}}}{RANGE})))",
                "{{team_alias}}",
                instant=True,
            )
        ],
        unit="currencyUSD",
    ),
    panel(
        "timeseries",
        "Share of spend in __other__ (entities beyond each family's max_series cap)",
        [
            target(
                f'(sum(rate(litellm_{family}_spend_usd_total{{{label}="__other__"}}{RATE})) or vector(0))'
                f" / sum(rate(litellm_spend_usd_total{RATE}))",
                name,
                ref=ref,
            )
            for ref, family, label, name in (
                ("A", "key", "key_hash", "keys"),
                ("B", "user", "user_id", "users"),
                ("C", "team", "team_id", "teams"),
            )
        ],
        unit="percentunit",
    ),
    panel(
        "table",
        "Cost per 1k tokens by model group",
        [
            target(
                f"sum by (model_group) (increase(litellm_spend_usd_total{{{MODEL}}}{RANGE}))"
                f" / ((sum by (model_group) (increase(litellm_input_tokens_total{{{MODEL}}}{RANGE}))"
                f" + sum by (model_group) (increase(litellm_output_tokens_total{{{MODEL}}}{RANGE}))) / 1000)",
                "{{model_group}}",
                instant=True,
            )
        ],
        unit="currencyUSD",
        width=24,
    ),
]

BUDGETS = [
    panel(
        "bargauge",
        "Team spend vs max budget",
        [
            target(
                f"sort_desc(litellm_team_budget_spend_usd{{{TEAM}}} / litellm_team_max_budget_usd{{{TEAM}}})",
                "{{team_alias}}",
                instant=True,
            )
        ],
        unit="percentunit",
        thresholds=BUDGET_THRESHOLDS,
        max_value=1.2,
    ),
    panel(
        "bargauge",
        "Key spend vs max budget",
        [
            target(
                f"sort_desc(litellm_key_budget_spend_usd{{{KEY}}} / litellm_key_max_budget_usd{{{KEY}}})",
                "{{key_alias}} ({{key_hash}})",
                instant=True,
            )
        ],
        unit="percentunit",
        thresholds=BUDGET_THRESHOLDS,
        max_value=1.2,
    ),
    panel(
        "table",
        "Remaining team budget",
        [target(f"sort(litellm_team_budget_remaining_usd{{{TEAM}}})", instant=True)],
        unit="currencyUSD",
        thresholds=[(None, "red"), (0, "green")],
    ),
    panel(
        "table",
        "Remaining key budget",
        [target(f"sort(litellm_key_budget_remaining_usd{{{KEY}}})", instant=True)],
        unit="currencyUSD",
        thresholds=[(None, "red"), (0, "green")],
    ),
    panel(
        "table",
        "Time until team budgets reset",
        [target(f"sort(litellm_team_budget_reset_timestamp_seconds{{{TEAM}}} - time())", instant=True)],
        unit="s",
    ),
    panel(
        "table",
        "Projected time to team budget exhaustion (last hour's spend rate)",
        [
            target(
                f"sort((litellm_team_budget_remaining_usd{{{TEAM}}} > 0) / on (team_id) group_left ()"
                " sum by (team_id) (rate(litellm_team_spend_usd_total[1h])))",
                instant=True,
            )
        ],
        unit="s",
        description="Remaining budget divided by the spend rate of the last hour, from the usage counter.",
        thresholds=[(None, "red"), (86400, "orange"), (604800, "green")],
    ),
    panel(
        "table",
        "Keys expiring within 30 days",
        [target("sort((litellm_key_expires_timestamp_seconds - time()) < 30 * 86400)", instant=True)],
        unit="s",
        thresholds=[(None, "red"), (86400, "orange"), (604800, "green")],
    ),
    panel(
        "table",
        "Blocked keys and teams",
        [
            target("litellm_key_blocked == 1", "key {{key_alias}} ({{key_hash}})", instant=True),
            target("litellm_team_blocked == 1", "team {{team_alias}}", ref="B", instant=True),
        ],
    ),
    panel(
        "table",
        "Budget windows: spend in the current window",
        [target("sort_desc(litellm_budget_window_spend_usd)", instant=True)],
        unit="currencyUSD",
        width=24,
        description="Budgets with several windows (LiteLLM_BudgetWindowSpend): spend so far in each window.",
    ),
]

HEALTH = [
    panel(
        "stat",
        "Proxy up",
        [target("litellm_proxy_up", "{{target}}")],
        width=6,
        height=4,
        thresholds=[(None, "red"), (1, "green")],
    ),
    panel(
        "stat",
        "Proxy ready",
        [target("litellm_proxy_ready", "{{target}}")],
        width=6,
        height=4,
        thresholds=[(None, "red"), (1, "green")],
    ),
    panel(
        "stat", "Database up", [target("litellm_db_up")], width=6, height=4, thresholds=[(None, "red"), (1, "green")]
    ),
    panel(
        "stat",
        "Newest spend log",
        [target("time() - litellm_spend_logs_latest_timestamp_seconds")],
        unit="s",
        width=6,
        height=4,
        description="Seconds since the newest request in LiteLLM_SpendLogs started: grows when the proxy stops "
        "writing.",
        thresholds=[(None, "green"), (300, "orange"), (1800, "red")],
    ),
    panel("table", "Proxy versions", [target("litellm_proxy_info", instant=True)]),
    panel(
        "timeseries",
        "Daily spend tables: seconds since last update",
        [target("time() - litellm_daily_spend_latest_update_timestamp_seconds", "{{table}}")],
        unit="s",
    ),
    panel(
        "timeseries",
        "Request duration by model group (p50, p95)",
        [
            target(
                "histogram_quantile(0.5, sum by (le, model_group)"
                f" (rate(litellm_request_duration_seconds_bucket{{{MODEL}}}{RATE})))",
                "p50 {{model_group}}",
            ),
            target(
                "histogram_quantile(0.95, sum by (le, model_group)"
                f" (rate(litellm_request_duration_seconds_bucket{{{MODEL}}}{RATE})))",
                "p95 {{model_group}}",
                ref="B",
            ),
        ],
        unit="s",
    ),
    panel(
        "timeseries",
        "Time to first token by model group (p50, p95)",
        [
            target(
                "histogram_quantile(0.5, sum by (le, model_group)"
                f" (rate(litellm_time_to_first_token_seconds_bucket{{{MODEL}}}{RATE})))",
                "p50 {{model_group}}",
            ),
            target(
                "histogram_quantile(0.95, sum by (le, model_group)"
                f" (rate(litellm_time_to_first_token_seconds_bucket{{{MODEL}}}{RATE})))",
                "p95 {{model_group}}",
                ref="B",
            ),
        ],
        unit="s",
    ),
    panel(
        "timeseries",
        "Database probe latency",
        [
            target("litellm_db_probe_duration_seconds", "probe"),
            target("max by (target) (litellm_proxy_probe_duration_seconds)", "{{target}}", ref="B"),
        ],
        unit="s",
    ),
    panel(
        "timeseries",
        "Spend-log table",
        [
            target("litellm_spend_logs_estimated_rows", "estimated rows"),
            target("litellm_spend_logs_size_bytes", "bytes", ref="B"),
        ],
    ),
    panel(
        "stat",
        "Exporter collectors succeeding",
        [target("litellm_exporter_collector_success", "{{collector}}")],
        thresholds=[(None, "red"), (1, "green")],
    ),
    panel(
        "timeseries",
        "Exporter collector poll duration",
        [target("litellm_exporter_collector_duration_seconds", "{{collector}}")],
        unit="s",
    ),
    panel(
        "stat",
        "Proxy workers alive",
        [target("sum(litellm_proxy_workers_alive)", instant=True)],
        width=6,
        height=4,
        description="Worker processes whose heartbeat in LiteLLM_ProxyWorkerHeartbeat is within LiteLLM's liveness"
        " window.",
        thresholds=[(None, "red"), (1, "green")],
    ),
    panel(
        "timeseries",
        "Proxy workers by host",
        [
            target("litellm_proxy_workers_alive", "alive {{hostname}}"),
            target("litellm_proxy_workers_stale", "stale {{hostname}}", ref="B"),
        ],
        width=18,
        height=4,
    ),
    panel(
        "table",
        "Model deployments: latest health check",
        [target("litellm_deployment_healthy", instant=True)],
        description="1 healthy, 0 unhealthy, from each deployment's newest row in LiteLLM_HealthCheckTable.",
    ),
    panel(
        "timeseries",
        "Model deployments: seconds since last health check",
        [target("time() - litellm_deployment_last_health_check_timestamp_seconds", "{{model_name}} {{model_id}}")],
        unit="s",
    ),
    panel(
        "timeseries",
        "Model deployments: health-check response time",
        [target("litellm_deployment_health_check_response_time_seconds", "{{model_name}} {{model_id}}")],
        unit="s",
    ),
]


STATUS_5XX = 'status_code=~"5.."'
STATUS_429 = 'status_code="429"'

ACTIVITY = [
    panel(
        "timeseries",
        "429s per second by model group",
        [
            target(
                f"sum by (model_group) ({recorded('request_errors')}{{{STATUS_429}, {MODEL}}})",
                "{{model_group}}",
            )
        ],
        description="Failed requests by status code come from LiteLLM_DailyRequestErrors.",
    ),
    panel(
        "timeseries",
        "5xx per second by model group",
        [
            target(
                f"sum by (model_group) ({recorded('request_errors')}{{{STATUS_5XX}, {MODEL}}})",
                "{{model_group}}",
            )
        ],
    ),
    panel(
        "bargauge",
        "Errors by status code in range",
        [
            target(
                f"sort_desc({in_range('request_errors', MODEL, 'status_code')})",
                "{{status_code}}",
                instant=True,
            )
        ],
        width=8,
    ),
    panel(
        "bargauge",
        "Top keys by errors in range",
        [
            target(
                f"topk(10, sum by (key_alias, key_hash, status_code)"
                f" (increase(litellm_key_request_errors_total{{{SHOWN_KEY}, {KEY}, {MODEL}}}{RANGE})))",
                "{{key_alias}} ({{key_hash}}) {{status_code}}",
                instant=True,
            )
        ],
        width=8,
    ),
    panel(
        "bargauge",
        "Top teams by errors in range",
        [
            target(
                f"topk(10, sum by (team_alias, status_code)"
                f" (increase(litellm_team_request_errors_total{{{SHOWN_TEAM}, {TEAM}, {MODEL}}}{RANGE})))",
                "{{team_alias}} {{status_code}}",
                instant=True,
            )
        ],
        width=8,
    ),
    panel(
        "timeseries",
        "Gateway: requests and failures per second",
        [
            target(f"sum(rate(litellm_gateway_requests_total{RATE}))", "requests"),
            target(f"sum(rate(litellm_gateway_requests_failed_total{RATE}))", "failed", ref="B"),
        ],
        description="Every request the proxy answered (LiteLLM_DailyGatewayRequests), those it refused before"
        " calling a model (bad keys, its own rate limits) included: they never become spend logs.",
    ),
    panel(
        "timeseries",
        "Gateway failures by route and status code",
        [
            target(
                f"sum by (route, status_code) (rate(litellm_gateway_request_errors_total{RATE}))",
                "{{route}} {{status_code}}",
            )
        ],
    ),
    panel(
        "timeseries",
        "Mean response time by model group",
        [
            target(
                f"sum by (model_group) (rate(litellm_response_time_seconds_total{{{MODEL}}}{RATE}))"
                f" / sum by (model_group) (rate(litellm_timed_requests_total{{{MODEL}}}{RATE}))",
                "{{model_group}}",
            )
        ],
        unit="s",
        description="Successful requests only, exact, from the daily tables (no spend logs needed).",
    ),
    panel(
        "stat",
        "Savings in range",
        [
            target(f"sum(increase(litellm_prompt_caching_savings_usd_total{RANGE}))", "prompt caching", instant=True),
            target(f"sum(increase(litellm_compression_savings_usd_total{RANGE}))", "compression", "B", True),
            target(
                f"sum(increase(litellm_injected_caching_savings_usd_total{RANGE}))",
                "injected cache points",
                "C",
                True,
            ),
            target(f"sum(increase(litellm_autorouter_savings_usd_total{RANGE}))", "auto-router", "D", True),
        ],
        unit="currencyUSD",
    ),
    panel(
        "bargauge",
        "Spend by task type in range",
        [
            target(
                f"sort_desc(sum by (task_type) (increase(litellm_task_spend_usd_total{{{MODEL}}}{RANGE})))",
                "{{task_type}}",
                instant=True,
            )
        ],
        unit="currencyUSD",
    ),
    panel(
        "bargauge",
        "Top tools by spend in range",
        [
            target(
                f'topk(10, sum by (tool) (increase(litellm_tool_spend_usd_total{{tool!="__other__"}}{RANGE})))',
                "{{tool}}",
                instant=True,
            )
        ],
        unit="currencyUSD",
        width=8,
    ),
    panel(
        "bargauge",
        "Top agents by spend in range",
        [
            target(
                "topk(10, sum by (agent_id)"
                f' (increase(litellm_agent_spend_usd_total{{agent_id!="__other__"}}{RANGE})))',
                "{{agent_id}}",
                instant=True,
            )
        ],
        unit="currencyUSD",
        width=8,
    ),
    panel(
        "bargauge",
        "Guardrails: blocked in range",
        [
            target(
                f"topk(10, sum by (guardrail_id) (increase(litellm_guardrail_requests_blocked_total{RANGE})))",
                "{{guardrail_id}}",
                instant=True,
            )
        ],
        width=8,
    ),
    panel(
        "timeseries",
        "Guardrail and policy outcomes per second",
        [
            target(f"sum(rate(litellm_guardrail_requests_evaluated_total{RATE}))", "guardrails: evaluated"),
            target(f"sum(rate(litellm_guardrail_requests_blocked_total{RATE}))", "guardrails: blocked", ref="B"),
            target(f"sum(rate(litellm_guardrail_requests_flagged_total{RATE}))", "guardrails: flagged", ref="C"),
            target(f"sum(rate(litellm_policy_requests_blocked_total{RATE}))", "policies: blocked", ref="D"),
        ],
    ),
    panel(
        "timeseries",
        "Guardrail usage cost per hour",
        [
            target(
                f"sum by (guardrail_id) (rate(litellm_guardrail_usage_cost_usd_total{RATE})) * 3600",
                "{{guardrail_id}}",
            )
        ],
        unit="currencyUSD",
    ),
]


def dashboard(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    x = y = row_height = 0
    for index, item in enumerate(panels, start=1):
        width, height = item["gridPos"]["w"], item["gridPos"]["h"]
        if x + width > 24:
            x, y = 0, y + row_height
            row_height = 0
        item["gridPos"] = {"x": x, "y": y, "w": width, "h": height}
        item["id"] = index
        x += width
        row_height = max(row_height, height)
    return {
        "uid": uid,
        "title": title,
        "tags": ["litellm", "litellm-exporter"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": TEMPLATING},
        "annotations": {"list": []},
        "panels": panels,
    }


DASHBOARDS = {
    "litellm-overview.json": dashboard("litellm-overview", "LiteLLM: spend and usage", OVERVIEW),
    "litellm-budgets.json": dashboard("litellm-budgets", "LiteLLM: budgets", BUDGETS),
    "litellm-health.json": dashboard("litellm-health", "LiteLLM: health", HEALTH),
    "litellm-activity.json": dashboard("litellm-activity", "LiteLLM: errors, gateway, savings, tools", ACTIVITY),
}


def render(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    for name, content in DASHBOARDS.items():
        (HERE / "dashboards" / name).write_text(render(content), encoding="utf-8")
