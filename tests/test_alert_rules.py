"""The alert rules and the Alertmanager example, checked and unit-tested by the real tools."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from exporter.config import parse
from exporter.demo.proxy_records import ProxyRecords
from exporter.demo.traffic import Request

from .support.exporters import poll, scrape
from .support.fake_proxy import FakeProxy
from .support.otlp_receiver import OtlpReceiver
from .support.tools import require

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "prometheus" / "rules" / "litellm-budgets.rules.yml"
RULE_TESTS = REPO / "prometheus" / "tests" / "litellm-budgets.test.yml"
ALERTMANAGER = REPO / "alertmanager" / "alertmanager.yml"


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


# Each rules file, its promtool unit tests, and how many rules it holds.
RULE_FILES = [
    (RULES, RULE_TESTS, 8),
    (
        REPO / "prometheus" / "rules" / "litellm-database.rules.yml",
        REPO / "prometheus" / "tests" / "litellm-database.test.yml",
        1,
    ),
    (
        REPO / "prometheus" / "rules" / "litellm-health.rules.yml",
        REPO / "prometheus" / "tests" / "litellm-health.test.yml",
        13,
    ),
    # Recording rules, written with their tests by prometheus/generate.py (test_recording_rules.py).
    (
        REPO / "prometheus" / "rules" / "litellm-usage.rules.yml",
        REPO / "prometheus" / "tests" / "litellm-usage.test.yml",
        69,
    ),
]
ALERT_FILES = [entry for entry in RULE_FILES if "usage" not in entry[0].name]
BY_NAME = pytest.mark.parametrize(("rules", "tests", "count"), RULE_FILES, ids=[r.name for r, _, _ in RULE_FILES])


def test_every_rules_file_has_its_unit_tests():
    assert {r.name for r, _, _ in RULE_FILES} == {p.name for p in (REPO / "prometheus" / "rules").glob("*.yml")}


@BY_NAME
def test_promtool_checks_the_rules(rules, tests, count):
    result = run(require("promtool", "prometheus"), "check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {count} rules found" in result.stdout


@BY_NAME
def test_promtool_unit_tests_pass(rules, tests, count):
    result = run(require("promtool", "prometheus"), "test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(("rules", "tests", "count"), ALERT_FILES, ids=[r.name for r, _, _ in ALERT_FILES])
def test_every_alert_has_a_firing_and_a_quiet_case(rules, tests, count):
    alerts = {rule["alert"] for group in yaml.safe_load(rules.read_text())["groups"] for rule in group["rules"]}
    cases = [case for test in yaml.safe_load(tests.read_text())["tests"] for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert firing == alerts
    assert quiet == alerts
    # Beyond these explicit quiet cases, promtool checks that exp_alerts lists exactly what
    # fires, so each group's neighbour series (under budget, not blocked, idle) must stay quiet.


def test_alertmanager_example_is_valid_and_routes_by_severity():
    amtool = require("amtool", "prometheus-alertmanager")
    result = run(amtool, "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    for severity, receiver in (("critical", "budget-pager"), ("warning", "budget-warnings")):
        routed = run(
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER}",
            f"severity={severity}",
            "alertname=LiteLLMBudgetExhausted",
        )
        assert routed.stdout.strip() == receiver, routed.stdout + routed.stderr


def test_rules_only_use_metrics_the_exporter_serves(make_exporter, entities, writer, conn, litellm_dsn):
    entities.team("t1", "Search", max_budget=10.0, soft_budget=5.0, blocked=True, budget_reset_at=datetime(2026, 12, 1))
    token = entities.key(
        "sk-1",
        "k",
        team_id="t1",
        max_budget=5.0,
        blocked=True,
        budget_reset_at=datetime(2026, 12, 1),
        expires=datetime(2026, 12, 1),
        budget_id=entities.budget("b1", soft_budget=1.0),
    )
    now = datetime.now(timezone.utc)
    writer.record(Request(token, "gpt-4o", "gpt-4o", "openai", 1.0, 1, 1, now, team_id="t1"))
    writer.record(Request(token, "gpt-4o", "gpt-4o", "openai", 0.0, 1, 0, now, success=False, status_code=429))
    writer.flush()
    records = ProxyRecords(conn)
    records.beat("w1", "pod-a")
    records.health_check("gpt-4o", "dep-1", healthy=False, checked_at=now)
    proxy = FakeProxy("new")
    receiver = OtlpReceiver()  # the OTLP push's own metrics, after a push
    try:
        config = parse(
            {
                "database": {"dsn": litellm_dsn},
                "collectors": {"proxy": {"targets": [proxy.url]}},
                "otlp": {"endpoint": receiver.url},
            }
        )
        exporter = make_exporter(config)
        poll(exporter)
        assert exporter.pusher.push(threading.Event(), time.monotonic() + 30)
        served = set(scrape(exporter))
    finally:
        proxy.close()
        receiver.close()
    expressions = " ".join(
        rule["expr"]
        for rules, _, _ in ALERT_FILES
        for group in yaml.safe_load(rules.read_text())["groups"]
        for rule in group["rules"]
    )
    named = set(re.findall(r"\blitellm_[a-z_]+\b(?![\[\w])", expressions))
    # Served by a standby only; tests/test_replica.py reads it from a real one.
    named.discard("litellm_db_replication_lag_seconds")
    assert named and named <= served, named - served
    for pattern in re.findall(r'__name__=~"(litellm_[^"]+)"', expressions):
        assert any(re.fullmatch(pattern, name) for name in served), pattern
