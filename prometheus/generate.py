"""Writes the usage recording rules (``rules/litellm-usage.rules.yml``) and their promtool unit
tests (``tests/litellm-usage.test.yml``) from one table, so that every rule has its test and a
new level or measure is one entry. Run ``python prometheus/generate.py`` after changing it; a
test fails when the files and this script disagree.

Names follow kube-prometheus: ``level:metric:operation``, the level being the labels kept.
Each rule first takes the highest of identical replicas (``max without (instance, pod)``: an HA
pair of exporters publishes the same values), then sums by the level's labels, so that a pair
is not counted twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "rules" / "litellm-usage.rules.yml"
TESTS = HERE / "tests" / "litellm-usage.test.yml"

# level: (the families' prefix, the labels kept, the measures it has)
MEASURES = ("spend_usd", "requests", "requests_failed", "input_tokens", "output_tokens", "request_errors")
LEVELS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "model_group": ("litellm_", ("model_group",), MEASURES),
    "team": ("litellm_team_", ("team_id", "team_alias"), MEASURES),
    "organization": ("litellm_organization_", ("organization_id", "organization_alias"), MEASURES[:-1]),
    "key": ("litellm_key_", ("key_hash", "key_alias", "team_id"), MEASURES),
}
REPLICA_LABELS = "instance, pod"
# Errors keep their status code at every level, as the dashboards split them by it.
BY_STATUS = {"request_errors": "status_code"}


def record(level: str, prefix: str, measure: str, operation: str) -> str:
    extra = f"_{BY_STATUS[measure]}" if measure in BY_STATUS else ""
    return f"{level}{extra}:{prefix}{measure}:{operation}"


def rules() -> dict[str, Any]:
    rates, increases = [], []
    for level, (prefix, labels, measures) in LEVELS.items():
        for measure in measures:
            keep = ", ".join((*labels, *([BY_STATUS[measure]] if measure in BY_STATUS else [])))
            source = f"{prefix}{measure}_total"

            def of(window: str, function: str, source: str = source, keep: str = keep) -> str:
                return f"sum by ({keep}) (max without ({REPLICA_LABELS}) ({function}({source}[{window}])))"

            rates.append({"record": record(level, prefix, measure, "rate5m"), "expr": of("5m", "rate")})
            hourly = record(level, prefix, measure, "increase1h")
            increases.append({"record": hourly, "expr": of("1h", "increase")})
            # A day from the hourly increases, stepped on the hour: the 24 whole hours before the
            # last one began (a subquery's range holds both its ends: 1d would hold 25), read
            # from 24 recorded samples a series instead of a day of raw ones.
            increases.append(
                {"record": record(level, prefix, measure, "increase1d"), "expr": f"sum_over_time({hourly}[23h59m:1h])"}
            )
    return {
        "groups": [
            {"name": "litellm-usage-rates", "rules": rates},
            # An hour of raw samples per evaluation: every 5 minutes is enough for an hourly figure.
            {"name": "litellm-usage-increases", "interval": "5m", "rules": increases},
        ]
    }


# The unit tests: per level, two entities (the second of them the overflow entity) on two
# replicas, counting up at known slopes per minute; a rule's value is then arithmetic.
SLOPES = (60.0, 180.0)  # per minute, per entity: rates that are exact in binary
# What a rule's value is, in the slope per minute, by operation.
PER_MINUTE = {"rate5m": 1 / 60, "increase1h": 60.0, "increase1d": 1440.0}


def _entity(labels: tuple[str, ...], index: int) -> dict[str, str]:
    return {name: "__other__" if index and name.endswith(("_id", "_hash")) else f"{name}-{index}" for name in labels}


def _series(level: str, prefix: str, labels: tuple[str, ...], measure: str) -> list[dict[str, str]]:
    found = []
    for index, slope in enumerate(SLOPES):
        extra = {"model_group": "gpt-4o"} if level != "model_group" else {}
        if measure == "request_errors":
            extra["status_code"] = "429"
        for instance in ("exporter-a:8748", "exporter-b:8748"):
            text = ",".join(f'{k}="{v}"' for k, v in {**_entity(labels, index), **extra, "instance": instance}.items())
            found.append({"series": f"{prefix}{measure}_total{{{text}}}", "values": f"0+{slope:g}x1560"})
    return found


def tests() -> dict[str, Any]:
    input_series, samples = [], []
    for level, (prefix, labels, measures) in LEVELS.items():
        for measure in measures:
            input_series += _series(level, prefix, labels, measure)
            status = {BY_STATUS[measure]: "429"} if measure in BY_STATUS else {}
            for operation, factor in PER_MINUTE.items():
                name = record(level, prefix, measure, operation)
                expected = [
                    {"labels": _labels(name, {**_entity(labels, index), **status}), "value": slope * factor}
                    for index, slope in enumerate(SLOPES)
                ]
                samples.append({"expr": name, "eval_time": "25h", "exp_samples": expected})
    return {
        "rule_files": [f"../rules/{RULES.name}"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": input_series, "promql_expr_test": samples}],
    }


def _labels(name: str, values: dict[str, str]) -> str:
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in values.items()) + "}"


HEADERS = {
    RULES: "# Generated by prometheus/generate.py: do not edit. Usage recording rules for long-range and\n"
    "# fleet-wide views (level:metric:operation); top-N rows stay on the raw series.\n",
    TESTS: "# Generated by prometheus/generate.py: do not edit.\n"
    "# promtool test rules prometheus/tests/litellm-usage.test.yml\n",
}


def render(path: Path) -> str:
    document = rules() if path == RULES else tests()
    return HEADERS[path] + yaml.safe_dump(document, sort_keys=False, width=120)


if __name__ == "__main__":
    for path in (RULES, TESTS):
        path.write_text(render(path), encoding="utf-8")
