"""Soak: the busy deployment for half an hour, with the database restarted every five minutes.

    python bench/soak.py                 # 30 minutes
    python bench/soak.py --minutes 5     # a shorter run

The exporter runs as a process with the shipped config.yaml, every collector polling each second
and a resync every minute, while a proxy flush lands every 10 s, two scrapers (an HA pair of
Prometheus, scraping every half second) read /metrics, and PostgreSQL is restarted every five
minutes. Every ten seconds the exporter's RSS, threads and open files are sampled. At the end
every counter is checked against the database: each series of the global family and each shown
entity's series exactly, and every family's total (``__other__`` included) against the table's.
Results go to stdout and to bench/results/soak.md.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psycopg
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from run import Cluster, create, describe_machine, free_port  # noqa: E402
from traffic import BUSY, write_requests  # noqa: E402

from tests.support.exporters import parse_samples  # noqa: E402
from tests.support.ground_truth import QUERIES, expected, families  # noqa: E402


def start(dsn: str, config: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "exporter.cli", "--config", str(config), "--listen", f"127.0.0.1:{port}"),
            *("--poll-interval", "1s", "--log-level", "warning"),
        ],
        env={**os.environ, "LITELLM_DATABASE_URL": dsn},
        cwd=REPO,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:
                if response.status == 200:
                    return process, port
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit("soak: the exporter never became ready")


def sample(pid: int) -> tuple[float, int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return rss, threads, len(os.listdir(f"/proc/{pid}/fd"))


def check(admin_dsn: str, text: str) -> tuple[int, list[str]]:
    """Series checked, and every difference from the database."""
    samples = parse_samples(text)
    problems = []
    checked = 0
    with psycopg.connect(admin_dsn) as conn:
        for prefix in QUERIES:
            for name, expression in families(prefix).items():
                want = expected(conn, prefix, expression)
                got = samples.get(name, {})
                for labels, value in got.items():
                    if dict(labels).get("overflow_set") is not None:
                        continue  # __other__: checked in the total below
                    checked += 1
                    if not math.isclose(value, want.get(labels, math.nan), rel_tol=1e-9, abs_tol=1e-9):
                        problems.append(f"{name}{dict(labels)}: {value!r} != database {want.get(labels)!r}")
                total, served = sum(want.values()), sum(got.values())
                if not math.isclose(total, served, rel_tol=1e-9, abs_tol=1e-6):
                    problems.append(f"{name}: all series sum to {served!r}, the table to {total!r}")
    return checked, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--restart-every", type=float, default=300.0, help="seconds between database restarts")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds before 'after warm-up' figures")
    parser.add_argument("--pg-bin", help="directory of the PostgreSQL server binaries")
    args = parser.parse_args()

    cluster = Cluster(Path(args.pg_bin) if args.pg_bin else None)
    config = Path(tempfile.mkdtemp(prefix="litellm-exporter-soak-")) / "config.yaml"
    document = yaml.safe_load((REPO / "config.yaml").read_text())
    document.setdefault("collectors", {}).setdefault("usage", {})["resync_interval"] = "1m"
    config.write_text(yaml.safe_dump(document))
    try:
        admin_dsn, dsn, rows = create(cluster, "bench_soak", BUSY, 3)
        process, port = start(dsn, config)
        stop = threading.Event()
        lock = threading.Lock()
        scrapes: list[tuple[float, float]] = []  # (seconds since start, milliseconds)
        failed_scrapes: list[str] = []
        samples: list[tuple[float, float, int, int]] = []
        restarts: list[float] = []
        flushes = [0]
        began = time.monotonic()

        def flush_every_ten_seconds() -> None:
            per_flush = max(1, round(BUSY.requests_per_day / 86400 * 10))
            n = 0
            while not stop.wait(10.0):
                n += 1
                for _ in range(30):  # the database may be restarting: retry as the proxy does
                    try:
                        with psycopg.connect(admin_dsn, autocommit=True) as writer:
                            write_requests(writer, BUSY, per_day=per_flush, spread_seconds=0, seed=n / 1000)
                        flushes[0] += 1
                        break
                    except psycopg.OperationalError:
                        time.sleep(1.0)

        def scrape() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                        response.read()
                    with lock:
                        scrapes.append((time.monotonic() - began, (time.perf_counter() - t0) * 1000))
                except OSError as exc:
                    with lock:
                        failed_scrapes.append(f"{time.monotonic() - began:.0f}s: {exc}")
                stop.wait(0.5)

        def restart_database() -> None:
            while not stop.wait(args.restart_every):
                cluster.restart()
                restarts.append(time.monotonic() - began)

        def watch() -> None:
            while not stop.is_set():
                samples.append((time.monotonic() - began, *sample(process.pid)))
                stop.wait(10.0)

        threads = [threading.Thread(target=f, daemon=True) for f in (flush_every_ten_seconds, watch, restart_database)]
        threads += [threading.Thread(target=scrape, daemon=True) for _ in range(2)]
        for thread in threads:
            thread.start()
        cpu0 = sum(map(int, Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))
        time.sleep(args.minutes * 60)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        wall = time.monotonic() - began
        cpu = sum(map(int, Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))
        cpu_share = (cpu - cpu0) / os.sysconf("SC_CLK_TCK") / wall

        # The last flush read: a poll after it, then every counter against the database.
        deadline = time.monotonic() + 60
        while True:
            time.sleep(3)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                text = response.read().decode()
            checked, problems = check(admin_dsn, text)
            if not problems or time.monotonic() > deadline:
                break
        alive = process.poll() is None
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    finally:
        cluster.stop()

    warm = [s for s in samples if s[0] >= args.warmup]
    times = sorted(ms for _, ms in scrapes)

    def spread(index: int) -> str:
        values = [s[index] for s in warm]
        return f"{min(values):.0f} to {max(values):.0f}" if values else "-"

    lines = [
        f"Machine: {describe_machine()}.",
        "",
        f"Soak: the busy deployment ({rows['LiteLLM_SpendLogs']:,} spend-log rows at start) for"
        f" {wall / 60:.0f} minutes; every collector each second, a resync every minute, {flushes[0]} flushes"
        f" (one every 10 s), PostgreSQL restarted {len(restarts)} times (every {args.restart_every / 60:g} minutes),"
        f" two scrapers every half second.",
        "",
        f"- after warm-up ({args.warmup:.0f} s): RSS {spread(1)} MB, threads {spread(2)}, open files {spread(3)}"
        f" ({len(warm)} samples, one every 10 s); at the end RSS {samples[-1][1]:.0f} MB",
        f"- CPU {100 * cpu_share:.0f}% of one core",
        f"- {len(times)} scrapes answered, {len(failed_scrapes)} failed; /metrics p50"
        f" {statistics.median(times):.1f} ms, p99 {times[int(len(times) * 0.99)]:.1f} ms, worst {times[-1]:.1f} ms",
        f"- at the end: {checked:,} series checked against the database, {len(problems)} differences;"
        f" the exporter {'still running' if alive else 'had exited'}, exit code {code} on SIGTERM",
        "",
        "| minute | RSS (MB) | threads | open files |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for at, rss, thread_count, files in samples:
        if int(at) % 60 < 10:
            lines.append(f"| {at / 60:.0f} | {rss:.0f} | {thread_count} | {files} |")
    lines += [f"- failed scrape: {f}" for f in failed_scrapes[:10]]
    lines += [f"- difference: {p}" for p in problems[:20]]
    report = "\n".join(lines)
    print(report)
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "soak.md").write_text(report + "\n")
    return 0 if not problems and not failed_scrapes and alive and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
