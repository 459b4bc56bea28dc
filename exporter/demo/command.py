"""``litellm-exporter demo``: live metrics from a scratch LiteLLM database, in one command.

Creates a scratch database on the PostgreSQL it is given (or on an embedded one from the
``pgserver`` package), applies LiteLLM's schema from ``litellm-proxy-extras``, writes
LiteLLM-shaped traffic into it as the proxy would, and runs the exporter against it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from .. import listen, schema
from ..app import Exporter, stop_on_signals
from ..config import Config, ConfigError, parse
from ..config_schema import DEFAULT_PORT
from ..db import redact_dsn
from .entities import add_budgets, seed_world
from .proxy_records import ProxyRecords
from .schema import SchemaPackageMissing, apply_migrations, migration_files
from .scratch import EmbeddedUnavailable, create_database, drop_database, embedded_postgres
from .traffic import random_rejections, random_requests
from .writer import SpendWriter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litellm-exporter demo",
        description="Run the exporter against a scratch LiteLLM database filled with generated traffic.",
    )
    parser.add_argument(
        "--dsn",
        metavar="DSN",
        help="a PostgreSQL server where a scratch database may be created (default: an embedded one)",
    )
    parser.add_argument(
        "--listen",
        default=f"127.0.0.1:{DEFAULT_PORT}",
        metavar="HOST:PORT",
        help="address to serve on (default: %(default)s)",
    )
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second to generate (default: 5)")
    parser.add_argument("--poll-interval", default="5s", metavar="SECONDS", help="collectors' interval (default: 5s)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database when the demo stops")
    return parser


# PostgreSQL refuses to run as root; pgserver then runs it as a system user of its own.
AS_ROOT = (
    "running as root: PostgreSQL will not run as root, so the embedded server (the pgserver package) runs as"
    " the system user 'pgserver', which it creates with useradd if it does not exist, and it lets other users"
    " traverse the folders above its temporary data directory. To avoid both, run the demo as an ordinary"
    " user, or give it a PostgreSQL server: litellm-exporter demo --dsn postgresql://USER@HOST:5432/postgres"
)


@contextlib.contextmanager
def _server(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        _say(AS_ROOT)
    _say("no --dsn given: starting an embedded PostgreSQL from the pgserver package, in a temporary directory ...")
    try:
        with embedded_postgres() as embedded:
            with psycopg.connect(embedded, autocommit=True) as conn:
                version = conn.execute("SHOW server_version").fetchone()
            _say(f"started the embedded PostgreSQL {version[0] if version else ''} at {redact_dsn(embedded)}")
            yield embedded
    except EmbeddedUnavailable as exc:
        raise SystemExit(f"litellm-exporter demo: no --dsn given and {exc}") from None


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def next_steps(url: str, dsn: str, keep: bool) -> str:
    """What the demo prints once it serves: where to look, and how to go on from here."""
    host_port = url.split("://", 1)[1]
    return f"""
litellm-exporter demo is serving:
  metrics     {url}/metrics
  status      {url}/  (the same as JSON: {url}/status)
  database    {redact_dsn(dsn)}  (a scratch database, {"kept" if keep else "dropped"} when the demo stops)

Scrape it with your Prometheus (prometheus.yml):
  scrape_configs:
    - job_name: litellm-exporter
      static_configs:
        - targets: ["{host_port}"]

Load the dashboards into your Grafana: Dashboards > New > Import, and upload each JSON file of
this project's grafana/dashboards/ (or provision the folder as grafana/provisioning/ does). The
alert rules are prometheus/rules/*.rules.yml.

Against your own LiteLLM database (the proxy's DATABASE_URL):
  litellm-exporter --dsn postgresql://USER:PASSWORD@HOST:5432/litellm

Ctrl-C stops the demo.
"""


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        files = migration_files()
    except SchemaPackageMissing as exc:
        print(f"litellm-exporter demo: {exc}", file=sys.stderr)
        return 2
    try:
        # The database is the scratch one made below.
        settings = parse({"database": {"dsn": "postgresql://"}}).with_overrides(
            listen=args.listen, poll_interval=args.poll_interval
        )
        # Before a database is made: a port in use is said at once, not after the migrations.
        listen.close_all(listen.bind(settings.web.host, settings.web.port))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"litellm-exporter demo: {problem}", file=sys.stderr)
        return 2
    except listen.ListenError as exc:
        print(f"litellm-exporter demo: {exc}", file=sys.stderr)
        return 1
    stop = stop_on_signals()
    with _server(args.dsn) as admin:
        name = f"litellm_demo_{uuid.uuid4().hex[:8]}"
        try:
            dsn = create_database(admin, name)
        except psycopg.Error as exc:
            print(
                f"litellm-exporter demo: cannot create a database on {redact_dsn(admin)}: {_line(exc)}", file=sys.stderr
            )
            return 1
        try:
            code = _run(args, settings, dsn, files, stop)
        finally:
            if not args.keep:
                drop_database(admin, name)
            else:
                print(f"kept the scratch database: {redact_dsn(dsn)}", file=sys.stderr)
    _say("litellm-exporter demo stopped")
    return code


def _run(args: argparse.Namespace, settings: Config, dsn: str, files: list[Path], stop: threading.Event) -> int:
    print(f"applying {len(files)} LiteLLM migrations to {redact_dsn(dsn)} ...", file=sys.stderr)
    apply_migrations(dsn, files)
    rng = random.Random()
    now = datetime.now(timezone.utc)
    with psycopg.connect(dsn, autocommit=True) as conn:
        world = seed_world(conn, rng)
        add_budgets(conn, world, now)
        writer = SpendWriter(conn)
        history = random_requests(rng, world, 2000, now - timedelta(days=7), now)
        for i in range(0, len(history), 200):
            writer.record(*history[i : i + 200])
            writer.flush(now)
        config = dataclasses.replace(settings, database=dataclasses.replace(settings.database, dsn=dsn))
        exporter = Exporter(config)
        try:
            exporter.start()
        except listen.ListenError as exc:  # taken since the check at start
            print(f"litellm-exporter demo: {exc}", file=sys.stderr)
            return 1
        _say(next_steps(f"http://{schema.format_listen(config.web.host, exporter.port)}", dsn, args.keep))
        progress = _Progress()
        written, spend = len(history), sum(r.spend for r in history)
        # What the proxy writes about itself: a worker's heartbeat, a model deployment's checks.
        records = ProxyRecords(conn)
        records.beat("demo-worker-0", "litellm-demo")
        records.health_check("gpt-4o", "deployment-0", healthy=True, checked_at=now)
        try:
            # Flush every 2 seconds, as the proxy's batch writer does.
            while not stop.wait(2.0):
                count = max(1, round(rng.expovariate(1.0) * args.rate * 2))
                end = datetime.now(timezone.utc)
                batch = random_requests(rng, world, count, end - timedelta(seconds=30), end)
                writer.record(*batch)
                for route, code in random_rejections(rng, rng.randint(0, 1)):
                    writer.reject(end, route, code)  # refused at the edge: a bad key, a rate limit
                writer.flush(end)
                records.beat("demo-worker-0", "litellm-demo")
                if rng.random() < 0.05:
                    records.health_check("gpt-4o", "deployment-0", healthy=rng.random() < 0.9, checked_at=end)
                written += len(batch)
                spend += sum(r.spend for r in batch)
                progress.show(f"wrote {written} requests, {spend:.2f} USD")
        finally:
            progress.end()
            _say("stopping: the exporter, then the scratch database ...")
            exporter.stop()
    return 0


class _Progress:
    """One line rewritten in place on a terminal; anywhere else (a file, ``docker logs``), where
    carriage returns would make one endless line, the first at once and then one every half minute."""

    EVERY = 30.0

    def __init__(self) -> None:
        self._terminal = sys.stderr.isatty()
        self._last = -self.EVERY
        self._shown = False

    def show(self, text: str) -> None:
        if self._terminal:
            print(f"\r{text}", end="", file=sys.stderr, flush=True)
            self._shown = True
        elif time.monotonic() - self._last >= self.EVERY:
            self._last = time.monotonic()
            _say(text)

    def end(self) -> None:
        if self._shown:
            print(file=sys.stderr, flush=True)


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
