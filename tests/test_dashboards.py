"""Dashboards, Prometheus config and compose file, checked with the real tools; and every panel
and alert expression evaluated by a real Prometheus scraping the exporter under live writes."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from .support.live_stack import RULE_FILES, Prometheus, live_exporter
from .support.tools import require

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))


def load_generator():
    spec = importlib.util.spec_from_file_location("grafana_generate", REPO / "grafana" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def panels():
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            yield path.name, panel


def test_dashboard_files_are_what_the_generator_writes():
    generator = load_generator()
    assert sorted(generator.DASHBOARDS) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text() == generator.render(generator.DASHBOARDS[path.name]), (
            f"{path.name} is stale: run python grafana/generate.py"
        )


def test_dashboard_structure():
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert {"team", "key_alias", "model"} <= variables.keys()
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]
            position = panel["gridPos"]
            assert position["x"] + position["w"] <= 24
            unit = panel["fieldConfig"]["defaults"]["unit"]
            exprs = [t["expr"] for t in panel["targets"]]
            if all("_usd" in e and " / " not in e for e in exprs):
                assert unit == "currencyUSD", panel["title"]
            if any("histogram_quantile" in e or "time()" in e for e in exprs):
                assert unit == "s", panel["title"]
    titles = [p["title"] for _, p in panels()]
    assert len(titles) == len(set(titles))


def test_provisioning_points_at_the_dashboards():
    datasource = yaml.safe_load((REPO / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus"
    provider = yaml.safe_load((REPO / "grafana/provisioning/dashboards/litellm.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{path}:ro" in mounts
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), source


def test_compose_file_is_valid():
    result = subprocess.run(
        [require("docker-compose", "docker-compose"), "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_prometheus_config_is_valid():
    result = subprocess.run(
        [require("promtool", "prometheus"), "check", "config", str(REPO / "prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def substitute(expr: str) -> str:
    """Grafana's variables as the dashboards would send them with everything selected."""
    for name, value in (
        ("$__rate_interval", "10s"),
        ("$__range_s", "60"),
        ("$__range", "1m"),
        ("$__interval", "1s"),
        ("$model", ".*"),
        ("$team", ".*"),
        ("$key_alias", ".*"),
    ):
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


@pytest.fixture
def live_stack(tmp_path, litellm_dsn, conn, world, rng):
    """The live exporter (support.live_stack) and a real Prometheus scraping it every second."""
    with live_exporter(litellm_dsn, conn, world, rng) as port:
        prometheus = Prometheus(tmp_path, port)
        try:
            prometheus.wait_for_scrapes(15)
            yield prometheus
        finally:
            prometheus.stop()


def test_every_panel_and_alert_expression_evaluates_against_the_live_exporter(live_stack):
    prometheus = live_stack
    empty, failed = [], []
    for board, panel in panels():
        for target in panel["targets"]:
            expr = substitute(target["expr"])
            answer = prometheus.query(expr)
            if answer.get("status") != "success":
                failed.append(f"{board} / {panel['title']}: {answer.get('error')}")
            elif not answer["data"]["result"]:
                empty.append(f"{board} / {panel['title']}: {expr}")
    assert failed == []
    assert empty == []

    for path in DASHBOARDS:
        for variable in json.loads(path.read_text())["templating"]["list"]:
            match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable.get("definition", ""))
            if match:
                values = prometheus.api(f"label/{match.group(2)}/values", **{"match[]": match.group(1)})
                assert values["data"], variable["name"]

    rules = [
        rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    ]
    for rule in rules:
        answer = prometheus.query(rule["expr"])
        assert answer.get("status") == "success", (rule.get("alert") or rule["record"], answer.get("error"))
    loaded = prometheus.api("rules")["data"]["groups"]
    assert {r["name"] for g in loaded for r in g["rules"]} == {rule.get("alert") or rule["record"] for rule in rules}
    assert all(r["health"] == "ok" for g in loaded for r in g["rules"])
