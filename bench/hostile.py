"""Hostile HTTP load on loopback, as a hurried network would send it, against the exporter as a process.

    python bench/hostile.py                       # 90 s, on the local PostgreSQL
    python bench/hostile.py --seconds 30 --dsn postgresql://postgres@127.0.0.1:5432/postgres

300 idle sockets held open, 20 clients sending a request head one byte a second, and 12 clients
opening a new connection per request to /healthz, /ready and /status, for the given time. Then:
does /metrics answer, and are the exporter's threads and open files back to their count before?
The scratch database (LiteLLM's schema, a little traffic) is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from run import free_port  # noqa: E402

from exporter.demo.entities import seed_world  # noqa: E402
from exporter.demo.schema import apply_migrations  # noqa: E402
from exporter.demo.scratch import create_database, drop_database  # noqa: E402
from exporter.demo.traffic import random_requests  # noqa: E402
from exporter.demo.writer import SpendWriter  # noqa: E402


def counts(pid: int) -> tuple[int, int]:
    threads = int(
        next(
            line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Threads:")
        ).split()[1]
    )
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


def get(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument(
        "--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres", help="a server to make a scratch database on"
    )
    args = parser.parse_args()

    name = f"litellm_hostile_{uuid.uuid4().hex[:8]}"
    dsn = create_database(args.dsn, name)
    try:
        apply_migrations(dsn)
        now = datetime.now(timezone.utc)
        with psycopg.connect(dsn, autocommit=True) as conn:
            rng = random.Random(1)
            world = seed_world(conn, rng)
            writer = SpendWriter(conn)
            writer.record(*random_requests(rng, world, 500, now - timedelta(days=2), now))
            writer.flush(now)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter.cli",
                "--dsn",
                dsn,
                "--listen",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
            ],
            cwd=REPO,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if get(f"{base}/ready") == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("hostile: the exporter never became ready")
                time.sleep(0.1)
            # Every worker thread of the server started, so that the counts compare like with like.
            warm = [threading.Thread(target=get, args=(f"{base}/status",)) for _ in range(16)]
            for thread in warm:
                thread.start()
            for thread in warm:
                thread.join()
            before = counts(process.pid)
            stop = threading.Event()
            statuses: Counter[str] = Counter()
            lock = threading.Lock()

            def slow_head() -> None:
                while not stop.is_set():
                    try:
                        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                            for byte in b"GET /metrics HTTP/1.1\r\nHost: slow\r\n\r\n":
                                if stop.wait(1.0):
                                    return
                                sock.sendall(bytes([byte]))
                    except OSError:
                        pass  # closed at the request deadline: the client starts again

            def short(paths: list[str]) -> None:
                rng = random.Random(threading.get_ident())
                while not stop.is_set():
                    try:
                        status = str(get(f"{base}{rng.choice(paths)}"))
                    except OSError as exc:
                        status = type(exc).__name__
                    with lock:
                        statuses[status] += 1

            idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(300)]
            workers = [threading.Thread(target=slow_head) for _ in range(20)]
            workers += [threading.Thread(target=short, args=(["/healthz", "/ready", "/status"],)) for _ in range(12)]
            started = time.monotonic()
            for worker in workers:
                worker.start()
            time.sleep(args.seconds)
            stop.set()
            for worker in workers:
                worker.join(timeout=30)
            for sock in idle:
                sock.close()
            elapsed = time.monotonic() - started
            tries = []
            for _ in range(3):
                t0 = time.perf_counter()
                try:
                    tries.append(f"{get(f'{base}/metrics')} in {1000 * (time.perf_counter() - t0):.0f} ms")
                except OSError as exc:
                    tries.append(f"no answer ({exc})")
            deadline = time.monotonic() + 15
            while counts(process.pid) != before and time.monotonic() < deadline:
                time.sleep(0.2)
            after = counts(process.pid)
            alive = process.poll() is None
        finally:
            process.terminate()
            process.wait(timeout=20)
    finally:
        drop_database(args.dsn, name)
    answered = sum(v for k, v in statuses.items() if k.isdigit())
    print(
        f"{elapsed:.0f} s of hostile load: {answered:,} requests answered ({dict(statuses)});"
        f" afterwards /metrics: {', '.join(tries)}; threads and open files {before} before, {after} after;"
        f" the exporter {'still running' if alive else 'had exited'}"
    )
    ok = alive and after == before and all(t.startswith("200") for t in tries) and "500" not in statuses
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
