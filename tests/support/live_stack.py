"""A live stack for the tests: the exporter on a seeded database under live writes, a real
Prometheus scraping it (its rules loaded, optionally remote-writing), and a real
VictoriaMetrics receiving what Prometheus writes."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import yaml

from exporter.app import Exporter
from exporter.config import parse
from exporter.demo.entities import add_budgets
from exporter.demo.proxy_records import ProxyRecords
from exporter.demo.traffic import World, random_rejections, random_requests
from exporter.demo.writer import SpendWriter

from .fake_proxy import FakeProxy
from .process import free_port
from .tools import require

REPO = Path(__file__).resolve().parent.parent.parent
RULE_FILES = sorted((REPO / "prometheus" / "rules").glob("*.rules.yml"))


class _Server:
    """A server of the test's own, on a free loopback port, its output in a log file; asked
    through the Prometheus query API, which VictoriaMetrics answers too."""

    port: int

    def __init__(self, tmp_path: Path, name: str, *command: str) -> None:
        self.log_path = tmp_path / f"{name}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        self.log.close()

    def api(self, path: str, **params: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def query(self, expr: str, **params: str) -> dict[str, Any]:
        try:
            return self.api("query", query=expr, **params)
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())  # type: ignore[no-any-return]


def every_second(rule_file: Path, into: Path) -> Path:
    """A copy of a rules file whose groups evaluate at the global interval (a test's second),
    not at their own (the hourly increases' five minutes)."""
    document = yaml.safe_load(rule_file.read_text())
    for group in document["groups"]:
        group.pop("interval", None)
    copy = into / rule_file.name
    copy.write_text(yaml.safe_dump(document))
    return copy


class Prometheus(_Server):
    def __init__(self, tmp_path: Path, exporter_port: int, remote_write: str | None = None) -> None:
        self.port = free_port()
        config = tmp_path / "prometheus.yml"
        document: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(every_second(path, tmp_path)) for path in RULE_FILES],
            "scrape_configs": [
                {"job_name": "litellm-exporter", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}
            ],
        }
        if remote_write is not None:
            document["remote_write"] = [{"url": remote_write, "queue_config": {"batch_send_deadline": "1s"}}]
        config.write_text(yaml.safe_dump(document))
        super().__init__(
            tmp_path,
            "prometheus",
            require("prometheus", "prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        )

    def wait_for_scrapes(self, seconds: float) -> None:
        """Until the exporter is scraped, then ``seconds`` more: enough for every rate() window."""
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.query("count(up == 1)")["data"]["result"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, self.log_path.read_text()[-2000:]
            time.sleep(0.5)
        time.sleep(seconds)


class VictoriaMetrics(_Server):
    """A single-node VictoriaMetrics (Debian's package): the same write protocol and query API
    as its cluster version, Thanos Receive and Mimir."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        super().__init__(
            tmp_path,
            "victoria-metrics",
            require("victoria-metrics", "victoria-metrics"),
            f"-storageDataPath={tmp_path / 'vm-data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=1d",
            # Answer with what has arrived, not 30 s behind; never from a cache.
            "-search.latencyOffset=0s",
            "-search.disableCache",
        )
        self.write_url = f"http://127.0.0.1:{self.port}/api/v1/write"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except OSError:
                assert time.monotonic() < deadline and self.process.poll() is None, self.log_path.read_text()[-2000:]
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        self.log.close()


@contextmanager
def live_exporter(litellm_dsn: str, conn: psycopg.Connection, world: World, rng: Any) -> Iterator[int]:
    """The exporter on a seeded database with budgets and live writes every half second, and a
    fake proxy; yields its port."""
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
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=10)
        exporter.stop()
        proxy.close()
