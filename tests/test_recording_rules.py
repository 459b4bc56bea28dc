"""The usage recording rules: what prometheus/generate.py writes, every source family one the
exporter serves, every rule a dashboard reads one that exists; their values are the promtool
unit tests' (tests/test_alert_rules.py runs promtool on every rules file)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def generator():
    spec = importlib.util.spec_from_file_location("prometheus_generate", REPO / "prometheus" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recorded() -> dict[str, str]:
    document = yaml.safe_load((REPO / "prometheus" / "rules" / "litellm-usage.rules.yml").read_text())
    return {rule["record"]: rule["expr"] for group in document["groups"] for rule in group["rules"]}


def test_the_files_are_what_the_generator_writes():
    module = generator()
    for path in (module.RULES, module.TESTS):
        assert path.read_text() == module.render(path), f"{path.name} is stale: run python prometheus/generate.py"


def test_every_rule_is_unit_tested_and_named_level_metric_operation():
    tested = {
        case["expr"]
        for test in yaml.safe_load((REPO / "prometheus" / "tests" / "litellm-usage.test.yml").read_text())["tests"]
        for case in test["promql_expr_test"]
    }
    assert tested == set(recorded())
    for name in recorded():
        assert re.fullmatch(r"[a-z_]+:litellm_[a-z_]+:(rate5m|increase1h|increase1d)", name), name


def test_every_source_family_is_one_the_exporter_serves():
    served = set(re.findall(r"^\| `(litellm_[a-z_]+)` \|", (REPO / "METRICS.md").read_text(), re.M))
    sources = {name for expr in recorded().values() for name in re.findall(r"\((litellm_[a-z_]+_total)\[", expr)}
    assert sources and sources <= served, sources - served


def test_every_recorded_series_a_dashboard_reads_exists():
    names = set(recorded())
    used = set()
    for path in (REPO / "grafana" / "dashboards").glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                used |= set(re.findall(r"\b[a-z_]+:litellm_[a-z_]+:[a-z0-9]+\b", target["expr"]))
    assert used, "no dashboard panel reads a recorded series"
    assert used <= names, used - names
