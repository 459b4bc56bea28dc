"""Dashboards, Prometheus config and compose file, checked with the real tools; and every panel
and alert expression evaluated by a real Prometheus scraping the exporter under live writes."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
import yaml

from exporter.app import Exporter
from exporter.config import parse
from exporter.demo.traffic import random_rejections, random_requests
from exporter.demo.writer import ProxyRecords, SpendWriter, add_budgets

from .support.fake_proxy import FakeProxy
from .support.process import free_port
from .support.tools import require

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((REPO / "prometheus" / "rules").glob("*.rules.yml"))


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
        ("$__range", "1m"),
        ("$__interval", "1s"),
        ("$model", ".*"),
        ("$team", ".*"),
        ("$key_alias", ".*"),
    ):
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


class Prometheus:
    def __init__(self, tmp_path: Path, exporter_port: int) -> None:
        self.port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(path) for path in RULE_FILES],
                    "scrape_configs": [
                        {
                            "job_name": "litellm-exporter",
                            "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
                        }
                    ],
                }
            )
        )
        self.log = (tmp_path / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                require("prometheus", "prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def query(self, expr: str) -> dict:
        try:
            return self.api("query", query=expr)
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        self.log.close()


@pytest.fixture
def live_stack(tmp_path, litellm_dsn, conn, world, rng):
    """The exporter on a seeded database with budgets and live writes, a fake proxy, and a
    real Prometheus scraping it every second."""
    now = datetime.now(timezone.utc)
    add_budgets(conn, world, now)
    conn.execute("""UPDATE "LiteLLM_TeamTable" SET blocked = true WHERE team_id = 'team-0'""")
    writer = SpendWriter(conn)
    writer.record(*random_requests(rng, world, 500, now - timedelta(days=3), now))
    for route, code in random_rejections(rng, 20):
        writer.reject(now, route, code)
    writer.flush(now)
    records = ProxyRecords(conn)
    records.health_check("gpt-4o", "dep-1", healthy=True, checked_at=now - timedelta(minutes=2))
    records.health_check("gpt-4o", "dep-2", healthy=False, checked_at=now - timedelta(minutes=1))
    records.window_spend("team", "team-1", "1h", now.replace(minute=0, second=0, microsecond=0), 1.25)
    conn.execute('ANALYZE "LiteLLM_SpendLogs"')  # as autovacuum would: the row estimate needs it
    proxy = FakeProxy("old")
    port = free_port()
    config = parse(
        {"database": {"dsn": litellm_dsn}, "collectors": {"proxy": {"targets": [proxy.url], "timeout": "2s"}}}
    ).with_overrides(listen=f"127.0.0.1:{port}", poll_interval="0.5s")
    exporter = Exporter(config)
    exporter.start()
    stop = threading.Event()

    def write_live() -> None:
        with psycopg.connect(litellm_dsn, autocommit=True) as live:
            live_writer = SpendWriter(live)
            workers = ProxyRecords(live)
            while not stop.wait(0.5):
                end = datetime.now(timezone.utc)
                live_writer.record(*random_requests(rng, world, 10, end - timedelta(seconds=20), end))
                live_writer.reject(end, "/chat/completions", 401)
                live_writer.flush(end)
                workers.beat("worker-1", "litellm-0")
                workers.beat("worker-2", "litellm-1")

    thread = threading.Thread(target=write_live, daemon=True)
    thread.start()
    prometheus = Prometheus(tmp_path, port)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if prometheus.query("count(up == 1)")["data"]["result"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-2000:]
            time.sleep(0.5)
        time.sleep(15)  # enough scrapes for every rate() window
        yield prometheus
    finally:
        stop.set()
        thread.join(timeout=10)
        prometheus.stop()
        exporter.stop()
        proxy.close()


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
        assert answer.get("status") == "success", (rule["alert"], answer.get("error"))
    loaded = prometheus.api("rules")["data"]["groups"]
    assert {r["name"] for g in loaded for r in g["rules"]} == {rule["alert"] for rule in rules}
    assert all(r["health"] == "ok" for g in loaded for r in g["rules"])
