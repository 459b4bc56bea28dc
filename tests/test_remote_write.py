"""Past one Prometheus: a real Prometheus scrapes the live exporter and remote-writes into a real
VictoriaMetrics; every dashboard query, and every rule's result, reads the same there."""

from __future__ import annotations

import json
import math
import re
import time

import pytest
import yaml

from .support.live_stack import REPO, RULE_FILES, Prometheus, VictoriaMetrics, live_exporter
from .test_dashboards import panels, substitute

# Functions over a range of raw samples, which MetricsQL computes its own way (rate() and
# increase() without Prometheus' extrapolation to the window's edges): their answers are
# held to the same series and to within this share of Prometheus' value.
# A selector of raw samples over a window, as a range function reads it.
RANGE_SELECTOR = re.compile(r"([a-zA-Z_][\w:]*(?:\{[^}]*\})?\[\w+\])")
SCRAPED = 25
WINDOWS = {"$__rate_interval": "10s", "$__range_s": "15", "$__range": "15s"}
STORED = 1e-11


@pytest.fixture
def pair(tmp_path, litellm_dsn, conn, world, rng):
    victoria = VictoriaMetrics(tmp_path)
    try:
        with live_exporter(litellm_dsn, conn, world, rng) as port:
            prometheus = Prometheus(tmp_path, port, remote_write=victoria.write_url)
            try:
                prometheus.wait_for_scrapes(SCRAPED)
                yield prometheus, victoria
            finally:
                prometheus.stop()
    finally:
        victoria.stop()


def same(a: float, b: float) -> bool:
    """Equal as VictoriaMetrics stores a float: as a decimal of twelve significant digits or so
    (2824.1369999999997 is kept as 2824.137)."""
    return math.isclose(a, b, rel_tol=STORED, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))


def assert_close(got: dict, expected: dict, what: str) -> None:
    wrong = {labels: (got[labels], value) for labels, value in expected.items() if not same(got[labels], value)}
    assert not wrong, (what, list(wrong.items())[:5])


def samples(api, selector: str, at: str) -> dict[frozenset, list[float]]:
    answer = api.query(selector, time=at)
    assert answer.get("status") == "success", (selector, answer)
    return {frozenset(r["metric"].items()): [float(v) for _, v in r["values"]] for r in answer["data"]["result"]}


def by_labels(answer: dict) -> dict[frozenset, float]:
    assert answer.get("status") == "success", answer
    result = answer["data"]["result"]
    if answer["data"]["resultType"] == "scalar":
        return {frozenset(): float(result[1])}
    return {frozenset(r["metric"].items()): float(r["value"][1]) for r in result}


def test_what_prometheus_writes_reads_the_same_in_victoriametrics(pair):
    prometheus, victoria = pair
    # A moment both have (remote write sends a batch every second), in whole seconds, as both
    # engines then read time() alike.
    at = str(int(time.time()) - 5)
    time.sleep(6)

    # Every series the exporter serves, sample for sample.
    raw = '{__name__=~"litellm_.+", __name__!~".*:.*"}'
    stored, written = by_labels(prometheus.query(raw, time=at)), by_labels(victoria.query(raw, time=at))
    assert len(stored) > 100
    assert written.keys() == stored.keys()
    assert_close(written, stored, "the exporter's series")

    # Every rule's result arrives: the recording rules' series and the alerts' state.
    rules = [r for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    loaded = {r["name"]: r for g in prometheus.api("rules")["data"]["groups"] for r in g["rules"]}
    assert {r.get("record") or r["alert"] for r in rules} == set(loaded)
    assert all(r["health"] == "ok" for r in loaded.values())
    for name in sorted(recorded):
        there = by_labels(prometheus.query(name, time=at))
        # A day's increase is summed from whole hours: none has passed yet in a test.
        assert there or name.endswith(":increase1d"), name
        got = by_labels(victoria.query(name, time=at))
        assert got.keys() == there.keys(), name
        assert_close(got, there, name)
    alerts = by_labels(prometheus.query("ALERTS", time=at))
    assert alerts, "no alert is pending or firing: the live stack's blocked team should be"
    assert by_labels(victoria.query("ALERTS", time=at)) == alerts

    # Every dashboard query: those over recorded series, gauges and instant values answer the
    # same; a function over a range of raw samples is MetricsQL's own (no extrapolation to the
    # window's edges, a series that starts inside the window counted from zero), so there the
    # samples it reads are held equal, and its answer holds every series Prometheus' does.
    differences = []
    for board, panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in WINDOWS.items():
                expr = expr.replace(name, value)
            expr = substitute(expr)
            expected = by_labels(prometheus.query(expr, time=at))
            got = by_labels(victoria.query(expr, time=at))
            where = f"{board} / {panel['title']}: {expr}"
            ranges = RANGE_SELECTOR.findall(expr)
            if not ranges:
                if got.keys() != expected.keys() or any(not same(got[k], v) for k, v in expected.items()):
                    differences.append(f"{where}: {got} vs {expected}")
                continue
            # Which entities make a top-N depends on those values: only its reads are compared.
            if not expr.startswith("topk(") and not expected.keys() <= got.keys():
                differences.append(f"{where}: series {sorted(expected.keys() - got.keys())} missing")
            for selector in ranges:
                read, wrote = samples(prometheus, selector, at), samples(victoria, selector, at)
                if read.keys() != wrote.keys() or any(
                    len(wrote[k]) != len(v) or not all(same(a, b) for a, b in zip(wrote[k], v, strict=False))
                    for k, v in read.items()
                ):
                    differences.append(f"{where}: the samples of {selector} differ")
    assert differences == [], "\n".join(differences)


def test_the_scale_profile_remote_writes_what_the_stack_scrapes():
    base = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    scale = yaml.safe_load((REPO / "prometheus" / "prometheus-remote-write.yml").read_text())
    assert scale["rule_files"] == base["rule_files"] and scale["alerting"] == base["alerting"]
    assert scale["remote_write"][0]["url"] == "http://victoriametrics:8428/api/v1/write"
    targets = scale["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["exporter:8748", "exporter-b:8748"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert {s for s, v in compose.items() if "scale" in v.get("profiles", ())} == {
        "exporter-b",
        "victoriametrics",
        "prometheus-scale",
    }
    assert compose["exporter-b"]["command"] == compose["exporter"]["command"]
    json.dumps(compose)  # plain data, as docker-compose config -q checks in test_dashboards
