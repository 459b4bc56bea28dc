"""Benchmark: the exporter's database time, CPU, memory and scrape latency on LiteLLM-shaped data.

    python bench/run.py                  # both parts below
    python bench/run.py --part sizes     # realistic traffic over 3 and 90 days (33k and 1M spend logs)
    python bench/run.py --part busy      # a busy deployment, every collector polling each second
    python bench/run.py --part huge      # the largest shape: 50k keys, 30 days, 14M daily rows

It starts a throwaway PostgreSQL cluster of its own (the local server's binaries, with
pg_stat_statements and auto_explain preloaded), builds LiteLLM's schema from
litellm-proxy-extras, and fills it with the traffic of ``bench/traffic.py``. The exporter
connects as a role of its own, so pg_stat_statements can tell its queries from the benchmark's
writes. Results go to stdout and to bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import http.server
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from traffic import BUSY, HUGE, HUGE_DAYS, REALISTIC, Shape, create_entities, daily_rows, write_requests  # noqa: E402

from exporter.app import Exporter  # noqa: E402
from exporter.config import parse  # noqa: E402
from exporter.demo.schema import apply_migrations  # noqa: E402
from exporter.demo.scratch import LocalCluster  # noqa: E402

ROLE = "litellm_exporter_bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster(LocalCluster):
    """The benchmark's own cluster: pg_stat_statements and auto_explain preloaded, fsync off."""

    def __init__(self, bindir: Path | None) -> None:
        super().__init__(
            "shared_preload_libraries = 'pg_stat_statements,auto_explain'\n"
            "pg_stat_statements.track = all\npg_stat_statements.track_planning = on\n"
            "auto_explain.log_min_duration = -1\nshared_buffers = 512MB\nmax_wal_size = 4GB\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off",
            bindir=bindir,
        )
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def exporter_config(dsn: str, **collectors: object):
    return parse({"database": {"dsn": dsn, "statement_timeout": "60s"}, "collectors": collectors})


def poll_all(exporter: Exporter) -> None:
    for collector in exporter.runner.collectors:
        if not exporter.runner.poll_once(collector):
            raise SystemExit(f"bench: collector {collector.name} failed")


def db_time_ms(admin: str, database: str) -> tuple[float, int]:
    with psycopg.connect(admin) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(total_exec_time + total_plan_time), 0), coalesce(sum(calls), 0)"
            " FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid"
            " JOIN pg_database d ON d.oid = s.dbid WHERE r.rolname = %s AND d.datname = %s",
            (ROLE, database),
        ).fetchone()
    return float(row[0]), int(row[1])


def top_statements(admin: str, database: str, per: int, limit: int = 8) -> list[tuple[float, float, str]]:
    """The exporter's costliest statements: ms per poll cycle, calls per cycle, the query's start."""
    with psycopg.connect(admin) as conn:
        rows = conn.execute(
            "SELECT total_exec_time + total_plan_time, calls, query FROM pg_stat_statements s"
            " JOIN pg_roles r ON r.oid = s.userid JOIN pg_database d ON d.oid = s.dbid"
            " WHERE r.rolname = %s AND d.datname = %s ORDER BY 1 DESC LIMIT %s",
            (ROLE, database, limit),
        ).fetchall()
    return [(ms / per, calls / per, " ".join(query.split())[:150]) for ms, calls, query in rows]


def reset_statements(admin: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def naive_scan_ms(dsn: str) -> float:
    """One naive aggregate of the whole spend-log table, warm: the best of three after one run."""
    best = float("inf")
    with psycopg.connect(dsn) as conn:
        conn.execute('SELECT team_id, model, sum(spend), count(*) FROM "LiteLLM_SpendLogs" GROUP BY 1, 2').fetchall()
        for _ in range(3):
            started = time.perf_counter()
            conn.execute(
                'SELECT team_id, model, sum(spend), count(*) FROM "LiteLLM_SpendLogs" GROUP BY 1, 2'
            ).fetchall()
            best = min(best, (time.perf_counter() - started) * 1000)
    return best


PLAN_ENTRY = re.compile(r"LOG:\s+duration: [\d.]+ ms\s+plan:\n(.*?)(?=\n\S|\Z)", re.S)


def explain(cluster: Cluster, dsn: str, admin_dsn: str, database: str) -> tuple[list[str], list[str]]:
    """The plans of every query the exporter runs: at start-up (with the resync), then steady."""
    with psycopg.connect(cluster.admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET auto_explain.log_min_duration = 0").format(
                sql.Identifier(ROLE), sql.Identifier(database)
            )
        )
    exporter = Exporter(exporter_config(dsn))
    exporter.db.open(wait=True)
    try:
        start = len(cluster.log_text())
        poll_all(exporter)
        middle = len(cluster.log_text())
        with psycopg.connect(admin_dsn, autocommit=True) as writer:
            write_requests(writer, REALISTIC, per_day=5, spread_seconds=0, seed=0.9)
        poll_all(exporter)
        text = cluster.log_text()
    finally:
        exporter.db.close()
        with psycopg.connect(cluster.admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} IN DATABASE {} RESET auto_explain.log_min_duration").format(
                    sql.Identifier(ROLE), sql.Identifier(database)
                )
            )
    return [m.group(1) for m in PLAN_ENTRY.finditer(text[start:middle])], [
        m.group(1) for m in PLAN_ENTRY.finditer(text[middle:])
    ]


def seq_scans(plan_texts: list[str], pattern: str) -> list[str]:
    return [p for p in plan_texts if re.search(r"Seq Scan on \"?" + pattern, p)]


def describe_machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) // (1024 * 1024)
    return f"{os.cpu_count()} cores ({cpu}), {memory} GiB RAM, Python {sys.version.split()[0]}"


def create(cluster: Cluster, database: str, shape: Shape, days: int) -> tuple[str, str, dict[str, int]]:
    with psycopg.connect(cluster.admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    admin_dsn = make_conninfo(cluster.admin, dbname=database)
    apply_migrations(admin_dsn)
    started = time.perf_counter()
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        create_entities(conn, shape)
        # A day at a time, so that the generator's temporary table stays small.
        for day in range(days):
            write_requests(conn, shape, days=1, seed=(day + 1) / (days + 2), day_offset=day)
        # Newer proxies build this index after their migrations (litellm-proxy-extras does it).
        conn.execute('CREATE INDEX IF NOT EXISTS bench_api_key_start ON "LiteLLM_SpendLogs" (api_key, "startTime")')
        conn.execute("VACUUM ANALYZE")
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ROLE)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(ROLE)))
        rows = daily_rows(conn)
        rows[SPEND_LOGS] = conn.execute('SELECT count(*) FROM "LiteLLM_SpendLogs"').fetchone()[0]
    print(f"  filled {database} in {time.perf_counter() - started:.0f}s: {rows}", file=sys.stderr)
    return admin_dsn, make_conninfo(admin_dsn, user=ROLE), rows


SPEND_LOGS = "LiteLLM_SpendLogs"


def run_size(cluster: Cluster, days: int, cycles: int) -> dict[str, object]:
    """Every collector polled once a second for ``cycles`` cycles, a proxy flush every ten."""
    database = f"bench_realistic_{days}d"
    admin_dsn, dsn, rows = create(cluster, database, REALISTIC, days)
    exporter = Exporter(exporter_config(dsn))
    exporter.db.open(wait=True)
    per_flush = max(1, round(REALISTIC.requests_per_day / 86400 * 10))
    try:
        reset_statements(cluster.admin)
        t0 = time.perf_counter()
        poll_all(exporter)  # the first complete snapshot, with the full resync
        startup_s = time.perf_counter() - t0
        startup_db_ms, _ = db_time_ms(cluster.admin, database)
        with psycopg.connect(admin_dsn, autocommit=True) as writer:
            reset_statements(cluster.admin)
            for cycle in range(cycles):
                if cycle % 10 == 0:
                    write_requests(writer, REALISTIC, per_day=per_flush, spread_seconds=0, seed=cycle / cycles)
                started = time.monotonic()
                poll_all(exporter)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        steady_ms, calls = db_time_ms(cluster.admin, database)
        top = top_statements(cluster.admin, database, cycles)
        # A cycle right after a flush reads every window; the others find nothing committed.
        reset_statements(cluster.admin)
        with psycopg.connect(admin_dsn, autocommit=True) as writer:
            for cycle in range(5):
                write_requests(writer, REALISTIC, per_day=per_flush, spread_seconds=0, seed=0.5 + cycle / 100)
                poll_all(exporter)
        flushed_ms, _ = db_time_ms(cluster.admin, database)
    finally:
        exporter.db.close()
    startup_plans, steady_plans = explain(cluster, dsn, admin_dsn, database)
    return {
        "days": days,
        "rows": rows,
        "startup_s": startup_s,
        "startup_db_ms": startup_db_ms,
        "poll_db_ms": steady_ms / cycles,
        "flushed_db_ms": flushed_ms / 5,
        "top": top,
        "queries_per_poll": calls / cycles,
        "naive_ms": naive_scan_ms(admin_dsn),
        "spend_log_seq_scans": seq_scans(startup_plans + steady_plans, "LiteLLM_SpendLogs"),
        "daily_seq_scans_steady": seq_scans(steady_plans, "LiteLLM_Daily"),
        "steady_plans": steady_plans,
    }


def start_exporter(
    dsn: str, *extra: str, config: Path = REPO / "config.yaml", environ: dict[str, str] | None = None
) -> tuple[subprocess.Popen, int, float]:
    """The exporter as a process with the shipped config.yaml (or ``config``) and ``environ``
    added to its environment; returns it, its port, and the seconds to its first complete
    snapshot (/ready)."""
    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter.cli",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            *extra,
        ],
        env={**os.environ, "LITELLM_DATABASE_URL": dsn, **(environ or {})},
        cwd=REPO,
    )
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:
                if response.status == 200:
                    return process, port, time.monotonic() - started
        except OSError:
            pass
        if time.monotonic() - started > 300 or process.poll() is not None:
            process.kill()
            raise SystemExit("bench: the exporter never became ready")
        time.sleep(0.02)


def proc_status(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
    return rss, peak


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OtlpSink:
    """An OTLP/HTTP receiver that answers 200 to every push and counts them, for the exporter's
    cost with the push on (the receiver's own cost is the benchmark's, not the exporter's)."""

    def __init__(self) -> None:
        self.pushes = 0
        self.bytes = 0
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                sink.pushes += 1
                sink.bytes += length
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.environ = {
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"http://127.0.0.1:{self.server.server_address[1]}/v1/metrics",
            "OTEL_METRIC_EXPORT_INTERVAL": "10000",  # every 10 s: six times the default
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_busy(
    cluster: Cluster,
    seconds: float,
    warmup: float,
    shape: Shape = BUSY,
    days: int = 3,
    resync: str | None = None,
    sink: OtlpSink | None = None,
) -> dict[str, object]:
    """A deployment: shipped config for start-up, then every collector each second (and, with
    ``resync``, a resync that often) under live flushes and continuous scrapes; with ``sink``,
    the OTLP push on, to it, throughout."""
    environ = sink.environ if sink is not None else None
    database = f"bench_{shape.name}"
    admin_dsn, dsn, rows = create(cluster, database, shape, days)
    result: dict[str, object] = {"rows": rows, "days": days}
    if shape is HUGE:
        result["costs"] = run_costs(cluster, database, admin_dsn, dsn, shape)

    process, port, ready = start_exporter(dsn, environ=environ)
    try:
        time.sleep(30)
        result["shipped_ready_s"] = ready
        result["shipped_rss_mb"], result["shipped_peak_mb"] = proc_status(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)

    config = REPO / "config.yaml"
    if resync:
        document = yaml.safe_load(config.read_text())
        document["collectors"]["usage"]["resync_interval"] = resync
        config = Path(tempfile.mkdtemp()) / "config.yaml"
        config.write_text(yaml.safe_dump(document))
    process, port, ready = start_exporter(dsn, "--poll-interval", "1s", config=config, environ=environ)
    pushes0, bytes0 = (sink.pushes, sink.bytes) if sink is not None else (0, 0)
    stop = threading.Event()
    per_flush = max(1, round(shape.requests_per_day / 86400 * 10))

    def flush_every_ten_seconds() -> None:
        with psycopg.connect(admin_dsn, autocommit=True) as writer:
            n = 0
            while not stop.wait(10.0):
                n += 1
                write_requests(writer, shape, per_day=per_flush, spread_seconds=0, seed=n / 1000)

    writer = threading.Thread(target=flush_every_ten_seconds, daemon=True)
    writer.start()
    try:
        time.sleep(warmup)
        reset_statements(cluster.admin)
        cpu0, wall0 = cpu_seconds(process.pid), time.monotonic()
        times: list[float] = []
        body = b""
        while time.monotonic() - wall0 < seconds:
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                body = response.read()
            times.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.25)
        wall = time.monotonic() - wall0
        cpu = cpu_seconds(process.pid) - cpu0
        db_ms, _ = db_time_ms(cluster.admin, database)
        rss, peak = proc_status(process.pid)
    finally:
        stop.set()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        writer.join(timeout=30)
    times.sort()
    result.update(
        {
            "seconds": wall,
            "rss_mb": rss,
            "peak_mb": peak,
            "cpu_share": cpu / wall,
            "db_ms_per_s": db_ms / wall,
            "series": sum(1 for line in body.decode().splitlines() if line and not line.startswith("#")),
            "scrapes": len(times),
            "p50_ms": statistics.median(times),
            "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
            "max_ms": times[-1],
            "ready_1s": ready,
        }
    )
    if sink is not None:
        result["otlp_pushes"] = sink.pushes - pushes0
        result["otlp_kb_per_push"] = (sink.bytes - bytes0) / max(1, sink.pushes - pushes0) / 1024
    return result


def run_costs(cluster: Cluster, database: str, admin_dsn: str, dsn: str, shape: Shape) -> dict[str, object]:
    """What each kind of usage read costs the database (pg_stat_statements) on this deployment:
    a full read, a resync (the look-back), a poll after a flush, a poll with nothing committed."""
    exporter = Exporter(exporter_config(dsn))
    exporter.db.open(wait=True)
    usage = next(c for c in exporter.runner.collectors if c.name == "usage")
    per_flush = max(1, round(shape.requests_per_day / 86400 * 10))
    costs: dict[str, object] = {}

    def measure(name: str, before: Callable[[], None] = lambda: None, runs: int = 3) -> None:
        total_ms = wall = 0.0
        for _ in range(runs):
            before()
            reset_statements(cluster.admin)
            started = time.perf_counter()
            if not exporter.runner.poll_once(usage):
                raise SystemExit(f"bench: the {name} failed")
            wall += time.perf_counter() - started
            total_ms += db_time_ms(cluster.admin, database)[0]
        costs[name] = (total_ms / runs, 1000 * wall / runs)

    def flush() -> None:
        with psycopg.connect(admin_dsn, autocommit=True) as writer:
            write_requests(writer, shape, per_day=per_flush, spread_seconds=0, seed=random.random())

    try:
        measure("full read", usage.request_resync, runs=2)
        measure("resync (look-back)", lambda: usage.request_resync(full=False))
        measure("poll after a flush", flush, runs=5)
        measure("poll, nothing committed", runs=5)
        with psycopg.connect(admin_dsn) as conn:
            (look_back_rows,) = conn.execute(  # type: ignore[misc]
                'SELECT count(*) FROM "LiteLLM_DailyUserSpend" WHERE date >= %s',
                (usage.state("LiteLLM_DailyUserSpend").cuts.old_end,),
            ).fetchone()
        costs["look_back_user_rows"] = look_back_rows
    finally:
        exporter.db.close()
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "sizes", "busy", "huge"), default="all")
    parser.add_argument("--days", default="3,90", help="days of realistic history per size, comma-separated")
    parser.add_argument("--cycles", type=int, default=30, help="steady-state poll cycles (one a second) per size")
    parser.add_argument("--seconds", type=float, default=60.0, help="steady state measured for the busy deployment")
    parser.add_argument("--pg-bin", help="directory of the PostgreSQL server binaries")
    parser.add_argument("--otlp", action="store_true", help="busy and huge parts with the OTLP push on, every 10 s")
    args = parser.parse_args()
    cluster = Cluster(Path(args.pg_bin) if args.pg_bin else None)
    with psycopg.connect(cluster.admin) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    sizes, busy, huge = [], None, None
    sink = OtlpSink() if args.otlp else None
    try:
        if args.part in ("all", "sizes"):
            for days in (int(d) for d in args.days.split(",")):
                print(f"realistic, {days} days ...", file=sys.stderr)
                sizes.append(run_size(cluster, days, args.cycles))
        if args.part in ("all", "busy"):
            print("busy ...", file=sys.stderr)
            busy = run_busy(cluster, args.seconds, warmup=10.0, sink=sink)
        if args.part in ("all", "huge"):
            print("huge (about 15 minutes to fill) ...", file=sys.stderr)
            huge = run_busy(cluster, max(args.seconds, 180.0), 10.0, HUGE, HUGE_DAYS, resync="1m", sink=sink)
    finally:
        cluster.stop()
        if sink is not None:
            sink.close()
    lines = [f"Machine: {describe_machine()}; PostgreSQL {server} (a cluster of the benchmark's own, fsync off).", ""]
    if sizes:
        base = sizes[0]["poll_db_ms"]
        lines += [
            "Realistic traffic (500 keys, 200 users, 20 teams, 3 organisations, 300 end users, 6 model groups,"
            " 0-2 of 8 tags, 11,111 requests a day), every collector polled once a second:",
            "",
            "| days | spend-log rows | daily rows | DB time per poll cycle (ms) | vs 3 days"
            " | DB time of a cycle right after a flush (ms) | queries per cycle "
            "| naive full-scan aggregate, warm (ms) | naive / per-cycle | first snapshot (s) "
            "| DB time at start-up (ms) "
            "| seq scans of SpendLogs | seq scans of daily tables after start-up |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in sizes:
            rows = r["rows"]
            daily = sum(v for k, v in rows.items() if k != SPEND_LOGS)
            lines.append(
                f"| {r['days']} | {rows[SPEND_LOGS]:,} | {daily:,} | {r['poll_db_ms']:.1f}"
                f" | {r['poll_db_ms'] / base:.2f}x | {r['flushed_db_ms']:.1f}"
                f" | {r['queries_per_poll']:.0f} | {r['naive_ms']:.0f} | {r['naive_ms'] / r['poll_db_ms']:.0f}x"
                f" | {r['startup_s']:.2f} | {r['startup_db_ms']:.0f} | {len(r['spend_log_seq_scans'])}"
                f" | {len(r['daily_seq_scans_steady'])} |"
            )
        lines.append("")
    if busy:
        rows = busy["rows"]
        lines += [
            "Busy deployment (5,000 keys, 2,000 users, 200 teams, 3,000 end users, 200,000 requests a day, 3 days:"
            f" {rows[SPEND_LOGS]:,} spend-log rows,"
            f" {sum(v for k, v in rows.items() if k != SPEND_LOGS):,} daily rows):",
            "",
            f"- shipped config: first complete snapshot {busy['shipped_ready_s']:.2f} s after start; RSS"
            f" {busy['shipped_rss_mb']:.0f} MB after 30 s, peak {busy['shipped_peak_mb']:.0f} MB",
            f"- every collector each second, {busy['seconds']:.0f} s of steady state with a flush every 10 s:"
            f" RSS {busy['rss_mb']:.0f} MB (peak {busy['peak_mb']:.0f} MB), CPU {100 * busy['cpu_share']:.0f}% of one"
            f" core, database {busy['db_ms_per_s']:.0f} ms per second, {busy['series']:,} series;"
            f" /metrics p50 {busy['p50_ms']:.1f} ms, p99 {busy['p99_ms']:.1f} ms, worst {busy['max_ms']:.1f} ms"
            f" over {busy['scrapes']} scrapes",
            *(
                [
                    f"- OTLP push on, every 10 s, throughout: {busy['otlp_pushes']} pushes in the steady state,"
                    f" {busy['otlp_kb_per_push']:.0f} kB each (gzip)"
                ]
                if "otlp_pushes" in busy
                else []
            ),
            "",
        ]
    if huge:
        rows = huge["rows"]
        lines += [
            f"Largest deployment ({HUGE.keys:,} keys, {HUGE.users:,} users, {HUGE.teams:,} teams,"
            f" {HUGE.end_users:,} end users, {HUGE.organizations} organisations, {HUGE.requests_per_day:,} requests a"
            f" day, {huge['days']} days: {rows[SPEND_LOGS]:,} spend-log rows,"
            f" {sum(v for k, v in rows.items() if k != SPEND_LOGS):,} daily rows):",
            "",
            f"- shipped config: first complete snapshot {huge['shipped_ready_s']:.2f} s after start; RSS"
            f" {huge['shipped_rss_mb']:.0f} MB after 30 s, peak {huge['shipped_peak_mb']:.0f} MB",
            f"- every collector each second, a resync each minute, {huge['seconds']:.0f} s with a flush every 10 s:"
            f" RSS {huge['rss_mb']:.0f} MB (peak {huge['peak_mb']:.0f} MB), CPU {100 * huge['cpu_share']:.0f}% of one"
            f" core, database {huge['db_ms_per_s']:.0f} ms per second, {huge['series']:,} series;"
            f" /metrics p50 {huge['p50_ms']:.1f} ms, p99 {huge['p99_ms']:.1f} ms, worst {huge['max_ms']:.1f} ms"
            f" over {huge['scrapes']} scrapes",
            "",
            "| usage read | database time (ms) | wall time (ms) |",
            "| --- | ---: | ---: |",
        ]
        costs = huge["costs"]
        for name in ("full read", "resync (look-back)", "poll after a flush", "poll, nothing committed"):
            db_ms, wall_ms = costs[name]  # type: ignore[index]
            lines.append(f"| {name} | {db_ms:.1f} | {wall_ms:.1f} |")
        lines += [
            "",
            f"Rows of LiteLLM_DailyUserSpend in the look-back and window: {costs['look_back_user_rows']:,}",
            "",
        ]
    if sizes:
        lines += [f"The exporter's costliest statements at {sizes[-1]['days']} days, per poll cycle:", ""]
        lines += [f"- {ms:.2f} ms, {calls:.1f} calls: `{query}`" for ms, calls, query in sizes[-1]["top"]]
        lines += [""]
        lines += [f"Plans of one steady-state poll cycle at {sizes[-1]['days']} days (auto_explain):", "", "```"]
        for plan in sizes[-1]["steady_plans"]:
            lines += [plan.rstrip(), ""]
        lines.append("```")
    report = "\n".join(lines)
    print(report)
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
