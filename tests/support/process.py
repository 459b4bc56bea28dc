"""The exporter as a process, run as a user runs it; the exporter started in the test's own
process; and a free local port."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.app import Exporter
from exporter.config import parse

from .exporters import Samples, parse_samples


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP request, an error status included."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@contextmanager
def serving(
    dsn: str, poll_interval: str = "0.5s", *, otlp: dict[str, object] | None = None, **web: object
) -> Iterator[tuple[Exporter, int]]:
    """An exporter started in this process on a free local port, with ``web`` (and ``otlp``)
    settings; stopped afterwards."""
    port = free_port()
    document = {"database": {"dsn": dsn}, "web": {"listen": f"127.0.0.1:{port}", **web}, "otlp": otlp or {}}
    config = parse(document)
    exporter = Exporter(config.with_overrides(poll_interval=poll_interval))
    exporter.start()
    try:
        yield exporter, port
    finally:
        exporter.stop()


def with_password(dsn: str, password: str) -> str:
    params = conninfo_to_dict(dsn)
    params["password"] = password
    return make_conninfo(**params)


class Running:
    """The exporter as a process; ``config`` is a file of the test's, or one written here."""

    def __init__(self, tmp_path, dsn: str, *extra: str, is_required: bool = False, config=None, environ=None) -> None:
        """``config=False`` runs with no file at all; ``environ`` adds to the environment."""
        self.port = free_port()
        if config is None:
            config = tmp_path / "config.yaml"
            config.write_text(
                "database:\n"
                "  dsn: ${TEST_LITELLM_DSN}\n"
                "  connect_timeout: 2s\n"
                f"  is_required: {'true' if is_required else 'false'}\n"
            )
        self.stderr_path = tmp_path / "stderr.log"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter.cli",
                *(["--config", str(config)] if config is not False else []),
                "--listen",
                f"127.0.0.1:{self.port}",
                "--poll-interval",
                "0.3",
                *extra,
            ],
            env={"TEST_LITELLM_DSN": dsn, "PATH": "/usr/bin:/bin", **(environ or {})},
            stdout=subprocess.DEVNULL,
            stderr=self.stderr_path.open("w"),
        )

    def get(self, path: str, method: str = "GET") -> tuple[int, str]:
        status, _, body = fetch(f"http://127.0.0.1:{self.port}{path}", method=method)
        return status, body.decode()

    def wait_until(self, condition, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"exporter exited: {self.stderr()}"
            try:
                if condition():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out; log: {self.stderr()[-2000:]}")

    def wait_for(self, path: str, status: int, timeout: float = 20.0) -> None:
        self.wait_until(lambda: self.get(path)[0] == status, timeout)

    def samples(self) -> Samples:
        return parse_samples(self.get("/metrics")[1])

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=10)

    def stderr(self) -> str:
        return self.stderr_path.read_text()
