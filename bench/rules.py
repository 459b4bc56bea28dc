"""What the usage recording rules cost and save, on the busy deployment (by hand, a few minutes):

    python bench/rules.py

The busy deployment of bench/run.py, the exporter with the shipped config polling every second,
and a real Prometheus (Debian's) scraping it and evaluating every rule each second. Then: the
series the rules add, and the samples each of the overview's fleet panels reads, through the
raw series and through the recorded ones, as Grafana asks for a graph (a range query whose rate
window is its step), counted by Prometheus' own query statistics. For a 30-day graph of 1,000
points at a 15-second scrape, a raw rate reads every raw sample of the 30 days and a recorded
rate one sample a point: the measured counts are scaled by those (the raw ones by 30 days of
15-second samples over the seconds measured, each one-second apart; the recorded by 1,000 points
over the points measured). Results go to stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from run import REPO, Cluster, create, free_port, start_exporter
from traffic import BUSY

MEASURED = 120  # seconds of scrapes and rule evaluations before the panels are asked
STEP = 10  # seconds between the points of the graphs asked for
# Each panel as the dashboards had it on raw series ($__rate_interval: the step), and as they
# read it now (recorded); and a team panel, to show what a level with more entities saves.
PANELS = {
    "spend rate by model group": (
        "sum by (model_group) (rate(litellm_spend_usd_total[10s]))",
        "sum by (model_group) (model_group:litellm_spend_usd:rate5m)",
    ),
    "requests per second": ("sum(rate(litellm_requests_total[10s]))", "sum(model_group:litellm_requests:rate5m)"),
    "429s per second by model group": (
        'sum by (model_group) (rate(litellm_request_errors_total{status_code="429"}[10s]))',
        'sum by (model_group) (model_group_status_code:litellm_request_errors:rate5m{status_code="429"})',
    ),
    "spend rate by team": (
        "sum by (team_id) (rate(litellm_team_spend_usd_total[10s]))",
        "sum by (team_id) (team:litellm_team_spend_usd:rate5m)",
    ),
}


def query(port: int, path: str, **params: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def main() -> int:
    cluster = Cluster(None)
    work = Path(tempfile.mkdtemp(prefix="litellm-exporter-rules-"))
    try:
        _, dsn, _ = create(cluster, "bench_rules", BUSY, 3)
        exporter, port, _ = start_exporter(dsn, "--poll-interval", "1s")
        rules = []
        for path in sorted((REPO / "prometheus" / "rules").glob("*.rules.yml")):
            document = yaml.safe_load(path.read_text())
            for group in document["groups"]:
                group.pop("interval", None)  # every rule each second, as the scrapes
            (work / path.name).write_text(yaml.safe_dump(document))
            rules.append(str(work / path.name))
        config = work / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": rules,
                    "scrape_configs": [{"job_name": "x", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
                }
            )
        )
        prom_port = free_port()
        prometheus = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(MEASURED)
            raw = query(prom_port, "query", query='count({__name__=~"litellm_.+", __name__!~".*:.*"})')
            recorded = query(prom_port, "query", query='count({__name__=~".+:litellm_.+"})')
            raw_n = int(float(raw["data"]["result"][0]["value"][1]))
            rec_n = int(float(recorded["data"]["result"][0]["value"][1]))
            print(f"series: {raw_n:,} served by the exporter; {rec_n:,} added by the recording rules")
            end = time.time()
            start = end - (MEASURED - 20)
            points = int((end - start) // STEP) + 1
            raw_scale = 30 * 86400 / 15 / (end - start)
            recorded_scale = 1000 / points
            print(f"{points} points, {STEP} s apart, over the last {end - start:.0f} s:")
            print("| panel | samples read, raw | recorded | a 30-day graph, raw | recorded |")
            print("| --- | ---: | ---: | ---: | ---: |")
            for name, (before, after) in PANELS.items():
                counts = []
                for expr in (before, after):
                    answer = query(
                        prom_port,
                        "query_range",
                        query=expr,
                        start=str(start),
                        end=str(end),
                        step=str(STEP),
                        stats="all",
                    )
                    counts.append(answer["data"]["stats"]["samples"]["totalQueryableSamples"])
                print(
                    f"| {name} | {counts[0]:,} | {counts[1]:,} | {counts[0] * raw_scale:,.0f}"
                    f" | {counts[1] * recorded_scale:,.0f} |"
                )
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=30)
            exporter.terminate()
            exporter.wait(timeout=30)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
