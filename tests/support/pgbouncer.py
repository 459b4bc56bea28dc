"""A real PgBouncer in front of the test server, in transaction or session pooling mode."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .process import free_port
from .tools import require


class PgBouncer:
    """PgBouncer for every database of the server at ``server_dsn``, on a port of its own that
    stays the same across ``stop`` and ``start`` (a restart, as an operator makes one). Started
    as the server's own user would be: as ``postgres`` when root."""

    def __init__(self, server_dsn: str, mode: str, pool_size: int = 4) -> None:
        self._binary = require("pgbouncer", "pgbouncer")
        params = conninfo_to_dict(server_dsn)
        user = str(params.get("user") or "postgres")
        self.port = free_port()
        self.dsn = make_conninfo(server_dsn, host="127.0.0.1", port=self.port)
        self._dir = directory = Path(tempfile.mkdtemp(prefix="litellm-exporter-pgbouncer-"))
        (directory / "users.txt").write_text(f'"{user}" ""\n')
        (directory / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={params.get('host') or '127.0.0.1'} port={params.get('port') or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {directory / 'users.txt'}\n"
            f"pool_mode = {mode}\ndefault_pool_size = {pool_size}\nmax_client_conn = 100\n"
            f"logfile = {directory / 'pgbouncer.log'}\npidfile = {directory / 'pgbouncer.pid'}\n"
        )
        self._command = [self._binary, str(directory / "pgbouncer.ini")]
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres")
            for child in directory.iterdir():
                shutil.chown(child, "postgres")
            self._command = [self._binary, "-u", "postgres", str(directory / "pgbouncer.ini")]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = self._dir / "pgbouncer.log"
                    text = log.read_text() if log.exists() else ""
                    assert process.stderr is not None
                    raise RuntimeError(f"pgbouncer did not start: {process.stderr.read()!r} {text}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@contextmanager
def pgbouncer(server_dsn: str, mode: str, pool_size: int = 4) -> Iterator[str]:
    """A running PgBouncer (see ``PgBouncer``); yields the same DSN pointed at it."""
    bouncer = PgBouncer(server_dsn, mode, pool_size)
    try:
        bouncer.start()
        yield bouncer.dsn
    finally:
        bouncer.close()
